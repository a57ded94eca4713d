//! Join and leave events (docs/protocol.md §4): in rooms whose names match
//! `WS_PRESENCE_EVENTS`, every member hears `presence_joined` when a connection joins and
//! `presence_left` when one leaves or closes, on every node, as room messages from the
//! gateway (the types are reserved, so neither clients nor backends can forge them).

use crate::hub::ConnInfo;
use crate::ids::{new_message_id, ConnRef};
use crate::state::Shared;
use axum::extract::ws::Utf8Bytes;
use metrics::counter;
use serde::Serialize;
use tether_protocol::envelope::to_raw;
use tether_protocol::{names, Envelope};
use tracing::debug;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A connection joined the room.
    Joined,
    /// A connection left the room or closed.
    Left,
}

impl Change {
    fn kind(self) -> &'static str {
        match self {
            Change::Joined => "presence_joined",
            Change::Left => "presence_left",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Who<'a> {
    user_id: &'a str,
    user_type: &'a str,
    connection_id: String,
}

/// The event frame, as a room message.
pub fn frame(change: Change, room: &str, member: &ConnInfo, conn: &ConnRef) -> String {
    let mut envelope = Envelope::new(change.kind());
    envelope.id = Some(new_message_id());
    envelope.room = Some(room.to_owned());
    envelope.ts = Some(crate::clock::now_ms());
    envelope.data = Some(to_raw(&Who {
        user_id: &member.user,
        user_type: &member.user_type,
        connection_id: conn.to_string(),
    }));
    envelope.to_json()
}

/// Tells the room's members, when the room has events; a failure is logged (the members
/// can still ask with `room_presence`).
pub async fn announce(
    shared: &Shared,
    change: Change,
    room: &str,
    member: &ConnInfo,
    conn: &ConnRef,
) {
    if !names::room_allowed(&shared.config.presence_events, room) {
        return;
    }
    // One node shutting down closes every member: nobody is left to hear (and telling
    // each of N closing members about the other N would cost N^2 deliveries).
    if shared.draining() && shared.broker.name() == "memory" {
        return;
    }
    let body = Utf8Bytes::from(frame(change, room, member, conn));
    match shared
        .broker
        .send_to_room(&member.app, room, body, None)
        .await
    {
        Ok(_) => counter!("tether_presence_events_total", "kind" => change.kind()).increment(1),
        Err(e) => debug!(error = %e, room, "presence event not sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tether_protocol::server::ServerMessage;

    #[test]
    fn events_are_room_messages_naming_the_connection() {
        let member = ConnInfo {
            app: Arc::from("shop"),
            user: Arc::from("u1"),
            device: None,
            user_type: Arc::from("driver"),
        };
        let conn = ConnRef {
            node: Arc::from("server_1_abcdef"),
            local: 7,
        };
        let text = frame(Change::Left, "orders:1", &member, &conn);
        let Ok(ServerMessage::Published(envelope)) = ServerMessage::parse(&text) else {
            panic!("{text}");
        };
        assert_eq!(envelope.kind, "presence_left");
        assert_eq!(envelope.room.as_deref(), Some("orders:1"));
        assert!(envelope.id.is_some() && envelope.ts.is_some() && envelope.seq.is_none());
        assert_eq!(
            envelope.data_json(),
            r#"{"userId":"u1","userType":"driver","connectionId":"server_1_abcdef-7"}"#
        );
    }
}
