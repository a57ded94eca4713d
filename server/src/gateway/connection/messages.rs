//! The answers to the client's frames: one parse, then one arm per client message
//! (ping, rooms, presence, token refresh, acks, app messages).

use super::*;

impl Connection {
    /// Answers one text frame; `Err` ends the connection.
    pub(super) async fn handle_text(&mut self, text: &str) -> Result<Vec<String>, End> {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(FrameError::NotJson) => {
                counter!("tether_frames_invalid_total", "reason" => "not_json").increment(1);
                return Err(End::Close(close::INVALID_PAYLOAD, "frame is not JSON"));
            }
            Err(FrameError::Rejected {
                code,
                message,
                reference,
            }) => {
                counter!("tether_frames_invalid_total", "reason" => code.as_str()).increment(1);
                self.violation()?;
                return Ok(vec![error_frame(code, &message, reference)]);
            }
        };
        let app_id = match &message {
            ClientMessage::App(app) => Some(app.id.clone()),
            _ => None,
        };
        let connection_over = self
            .shared
            .conn_limiter
            .as_ref()
            .is_some_and(|l| l.check_key(&self.id).is_err());
        let user_over = !connection_over
            && self.shared.user_limiter.as_ref().is_some_and(|l| {
                l.check_key(&(self.info().app.clone(), self.info().user.clone()))
                    .is_err()
            });
        if connection_over || user_over {
            self.rate_refusal()?;
            let text = if connection_over {
                "slow down: too many frames on this connection"
            } else {
                "slow down: too many frames from this user"
            };
            if let Some(id) = &app_id {
                self.hold_order(id, ErrorCode::RateLimited);
            }
            // A refused refresh_token is named, so the client can tell and try again.
            let reference = match &message {
                ClientMessage::RefreshToken { .. } => Some("refresh_token".to_owned()),
                _ => app_id,
            };
            return Ok(vec![error_frame(ErrorCode::RateLimited, text, reference)]);
        }
        // Order of app messages: once one was refused with a retryable code, later ones on
        // this connection wait until it comes again, so none is stored before it.
        let held_for = self.strikes.as_ref().and_then(|s| s.held_for.as_ref());
        if let (Some(id), Some((first, code))) = (&app_id, held_for) {
            if id == first {
                if let Some(strikes) = &mut self.strikes {
                    strikes.held_for = None;
                }
            } else {
                let refusal = error_frame(
                    *code,
                    &format!("send {first} again first: app messages are stored in order"),
                    Some(id.clone()),
                );
                return Ok(vec![refusal]);
            }
        }
        let reply = match message {
            ClientMessage::Ping { ts } => Some(ServerMessage::Pong {
                ts,
                server_ts: now_ms(),
            }),
            ClientMessage::JoinRoom { room, id, since } => {
                // An error names the request by its id, else by its type (§5).
                let reference = id.unwrap_or_else(|| "join_room".to_owned());
                let (answer, replay) = self.join_room(room, reference, since).await;
                let mut replies = vec![answer.encode(now_ms())];
                replies.extend(replay.into_iter().map(|(_, f)| f.as_str().to_owned()));
                return Ok(replies);
            }
            ClientMessage::LeaveRoom { room, .. } => {
                let was_in = self
                    .shared
                    .hub
                    .rooms_of(self.id)
                    .iter()
                    .any(|r| **r == *room);
                if let Some(positions) = &mut self.streams {
                    positions.forget(&room);
                }
                if let Some(topic) = self.shared.hub.leave_room(self.id, &room) {
                    if let Err(e) = self.shared.broker.unsubscribe(&topic).await {
                        debug!(error = %e, "unsubscribe failed");
                    }
                }
                if was_in {
                    let conn = self.shared.hub.conn_ref(self.id);
                    let info = self.info();
                    if let Err(e) = self
                        .shared
                        .broker
                        .presence_leave(&info.app, &room, &conn)
                        .await
                    {
                        debug!(error = %e, "presence leave not recorded; retried");
                    }
                    presence_events::announce(&self.shared, Change::Left, &room, info, &conn).await;
                }
                Some(ServerMessage::RoomLeft { room })
            }
            ClientMessage::RoomPresence { room, id } => {
                let reference = id.unwrap_or_else(|| "room_presence".to_owned());
                Some(self.room_presence(room, reference).await)
            }
            ClientMessage::RefreshToken { token } => Some(self.refresh_token(&token.0)),
            ClientMessage::Ack { seq } => {
                let device = self.info().device.as_deref();
                match self
                    .shared
                    .broker
                    .ack_inbox(&self.info().app, &self.info().user, device, seq)
                    .await
                {
                    Ok(AckOutcome::Recorded) => None,
                    Ok(AckOutcome::BeyondNewest { newest }) => {
                        counter!("tether_frames_invalid_total", "reason" => ErrorCode::InvalidAck.as_str())
                            .increment(1);
                        Some(ServerMessage::error(
                            ErrorCode::InvalidAck,
                            format!("seq {seq} is above the newest inbox message ({newest})"),
                            Some("ack".into()),
                        ))
                    }
                    Err(e) => Some(ServerMessage::error(
                        ErrorCode::Unavailable,
                        e.to_string(),
                        Some("ack".into()),
                    )),
                }
            }
            ClientMessage::App(message) => {
                let id = message.id.clone();
                let stored = self
                    .shared
                    .broker
                    .store_inbound(InboundMessage {
                        app: self.info().app.clone(),
                        user: self.info().user.clone(),
                        device: self.info().device.clone(),
                        kind: message.kind,
                        id: message.id,
                        data: message.data,
                        ts: now_ms(),
                    })
                    .await;
                Some(match stored {
                    Ok(outcome) => {
                        let name = match outcome {
                            StoreOutcome::Stored => "tether_inbound_stored_total",
                            StoreOutcome::Duplicate => "tether_inbound_duplicates_total",
                        };
                        counter!(name).increment(1);
                        ServerMessage::Ack { id }
                    }
                    Err(e) => {
                        self.hold_order(&id, ErrorCode::Unavailable);
                        ServerMessage::error(
                            ErrorCode::Unavailable,
                            format!("not stored, keep it and send it again later: {e}"),
                            Some(id),
                        )
                    }
                })
            }
        };
        Ok(reply.map(|r| r.encode(now_ms())).into_iter().collect())
    }

    /// `join_room`: the answer, and for a room with history the messages to replay after it.
    pub(super) async fn join_room(
        &mut self,
        room: String,
        reference: String,
        since: Option<StreamPosition>,
    ) -> (ServerMessage, Vec<(u64, Utf8Bytes)>) {
        let answer = self.join_live(room.clone(), reference.clone()).await;
        let ServerMessage::RoomJoined { .. } = answer else {
            return (answer, Vec::new());
        };
        let name = StreamName::Room(Arc::from(room.as_str()));
        let Some(limits) = self.shared.config.history_of(&name) else {
            return (answer, Vec::new());
        };
        // Now a member and subscribed: everything published from here on arrives live, and
        // the read below holds everything before.
        let shared = self.shared.clone();
        let app = self.info().app.clone();
        match streams::join(&*shared.broker, &app, &name, since.as_ref(), limits).await {
            Ok(joined) => {
                counter!("tether_stream_replayed_total").increment(joined.frames.len() as u64);
                if since.is_some() {
                    let outcome = if joined.answer.recovered {
                        "recovered"
                    } else {
                        "lost"
                    };
                    counter!("tether_stream_recoveries_total", "outcome" => outcome).increment(1);
                }
                self.positions()
                    .set(Some(&room), &joined.answer.epoch, joined.answer.offset);
                (
                    ServerMessage::RoomJoined {
                        room,
                        stream: Some(joined.answer),
                    },
                    joined.frames,
                )
            }
            Err(e) => {
                if let Some(topic) = self.shared.hub.leave_room(self.id, &room) {
                    if let Err(e) = self.shared.broker.unsubscribe(&topic).await {
                        debug!(error = %e, "unsubscribe failed");
                    }
                }
                (
                    ServerMessage::error(
                        ErrorCode::Unavailable,
                        format!("could not read the room's history: {e}"),
                        Some(reference),
                    ),
                    Vec::new(),
                )
            }
        }
    }

    /// Joins the room live: membership, subscription, presence.
    pub(super) async fn join_live(&mut self, room: String, reference: String) -> ServerMessage {
        if let Some(patterns) = &self.grant.rooms {
            if !room_allowed(patterns, &room) {
                return ServerMessage::error(
                    ErrorCode::Forbidden,
                    format!("the token does not allow room {room:?}"),
                    Some(reference),
                );
            }
        }
        let max = self.shared.config.max_rooms_per_connection;
        let again = self
            .shared
            .hub
            .rooms_of(self.id)
            .iter()
            .any(|r| **r == *room);
        match self.shared.hub.join_room(self.id, &room, max) {
            Ok(None) if again => self.joined(room, again).await,
            // Not the first member here, but the first one's subscribe may still be on its
            // way: waiting for it (a no-op once done) keeps §4's promise that every
            // message from `room_joined` on arrives.
            Ok(topic) => match self
                .shared
                .broker
                .subscribe(&topic.unwrap_or_else(|| Topic::Room {
                    app: self.info().app.clone(),
                    room: Arc::from(room.as_str()),
                }))
                .await
            {
                Ok(()) => self.joined(room, again).await,
                Err(e) => {
                    self.shared.hub.leave_room(self.id, &room);
                    ServerMessage::error(
                        ErrorCode::Unavailable,
                        format!("could not join: {e}"),
                        Some(reference),
                    )
                }
            },
            Err(crate::hub::JoinRefused::TooManyRooms) => ServerMessage::error(
                ErrorCode::TooManyRooms,
                format!("a connection may be in at most {max} rooms"),
                Some(reference),
            ),
            Err(crate::hub::JoinRefused::NotConnected) => ServerMessage::error(
                ErrorCode::Unavailable,
                "connection is closing",
                Some(reference),
            ),
        }
    }

    /// Records the connection in the room's presence (and tells the members, the first
    /// time) and answers the join. Presence is not worth refusing a join for: a failed
    /// write is retried by the broker.
    pub(super) async fn joined(&self, room: String, again: bool) -> ServerMessage {
        let conn = self.shared.hub.conn_ref(self.id);
        let info = self.info();
        if let Err(e) = self
            .shared
            .broker
            .presence_enter(&info.app, &room, &conn, info)
            .await
        {
            debug!(error = %e, "presence join not recorded; retried");
        }
        if !again {
            presence_events::announce(&self.shared, Change::Joined, &room, info, &conn).await;
        }
        ServerMessage::RoomJoined { room, stream: None }
    }

    /// `room_presence`: who is in a room this connection is in, on every node.
    pub(super) async fn room_presence(&self, room: String, reference: String) -> ServerMessage {
        if !self
            .shared
            .hub
            .rooms_of(self.id)
            .iter()
            .any(|r| **r == *room)
        {
            return ServerMessage::error(
                ErrorCode::Forbidden,
                format!("join room {room:?} before asking who is in it"),
                Some(reference),
            );
        }
        match self
            .shared
            .broker
            .room_presence(&self.info().app, &room)
            .await
        {
            Ok(presence) => ServerMessage::RoomPresence(presence),
            Err(e) => ServerMessage::error(
                ErrorCode::Unavailable,
                format!("presence unavailable: {e}"),
                Some(reference),
            ),
        }
    }

    /// `refresh_token`: the connection lives by the new token from now on, when it is
    /// valid and grants what the connection holds (the same user and user type, its app,
    /// every room it is in). A refused token changes nothing: the first token's `exp`
    /// still ends the connection (4001).
    pub(super) fn refresh_token(&mut self, token: &str) -> ServerMessage {
        let refused = |code, message: String| {
            counter!("tether_token_refreshes_total", "outcome" => "refused").increment(1);
            ServerMessage::error(code, message, Some("refresh_token".into()))
        };
        if self.cell.close_requested().is_some() {
            return refused(
                ErrorCode::TokenExpired,
                "the connection is closing already".into(),
            );
        }
        let claims = match self.shared.verifier.verify(token) {
            Ok(claims) => claims,
            Err(TokenError::Expired) => {
                return refused(ErrorCode::TokenExpired, "the new token expired".into())
            }
            Err(TokenError::Invalid(reason)) => {
                return refused(ErrorCode::InvalidToken, format!("the new token: {reason}"))
            }
        };
        let info = self.info();
        if claims.sub != *info.user {
            return refused(
                ErrorCode::Forbidden,
                "the new token is for another user".into(),
            );
        }
        if claims.user_type() != &*info.user_type {
            return refused(
                ErrorCode::Forbidden,
                format!(
                    "the new token's user type {:?} is not the connection's {:?}",
                    claims.user_type(),
                    &*info.user_type
                ),
            );
        }
        if !claims.apps.iter().any(|app| *app == *info.app) {
            return refused(
                ErrorCode::Forbidden,
                format!("the new token does not grant app {:?}", &*info.app),
            );
        }
        if let Some(patterns) = &claims.rooms {
            let rooms = self.shared.hub.rooms_of(self.id);
            if let Some(room) = rooms.iter().find(|room| !room_allowed(patterns, room)) {
                return refused(
                    ErrorCode::Forbidden,
                    format!("the new token does not allow room {room:?}, which this connection is in; reconnect"),
                );
            }
        }
        let deadline = token_deadline_ms(&claims, self.shared.config.jwt.leeway_s);
        if deadline <= self.cell.expires_at() {
            // Taking it would only shorten the connection (an older or the same token).
            return refused(
                ErrorCode::InvalidToken,
                "the new token expires no later than the current one".into(),
            );
        }
        self.cell.expire_at(deadline);
        self.grant.rooms = claims.rooms.map(Vec::into_boxed_slice);
        counter!("tether_token_refreshes_total", "outcome" => "accepted").increment(1);
        let expires_in = deadline.saturating_sub(now_ms());
        let info = self.info();
        info!(
            conn = %self.shared.hub.conn_ref(self.id), user = %info.user, app = %info.app,
            node = %self.shared.node, expires_in_s = expires_in / 1000,
            "token refreshed"
        );
        ServerMessage::TokenRefreshed(TokenRefreshed { expires_in })
    }
}
