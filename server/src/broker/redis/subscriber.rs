//! The node's pub/sub side: turns each message Redis pushes into a delivery through the
//! hub. Payloads: `m<seq> <frame>` (user message), `m <frame>` (room or app message),
//! `k` (kick the user), `r<n>` (close local connection n: replaced by another node).

use super::keys::unescape;
use super::Inner;
use crate::hub::QueuedFrame;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tether_protocol::close;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

/// What a channel name stands for.
#[derive(Debug, PartialEq, Eq)]
enum Channel {
    User(String, String),
    Room(String, String),
    App(String),
    Node,
}

fn parse_channel(name: &str) -> Option<Channel> {
    let inside = name.strip_prefix("tether:{")?.strip_suffix("}:ch")?;
    let (kind, rest) = inside.split_once(':')?;
    match kind {
        "u" => {
            let (app, user) = rest.split_once(':')?;
            Some(Channel::User(unescape(app)?, unescape(user)?))
        }
        "r" => {
            let (app, room) = rest.split_once(':')?;
            Some(Channel::Room(unescape(app)?, unescape(room)?))
        }
        "a" => Some(Channel::App(unescape(rest)?)),
        "n" => Some(Channel::Node),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(text) => Some(Bytes::from(text)),
        _ => None,
    }
}

/// Reads pushes until the broker stops.
pub(super) async fn dispatch(inner: Arc<Inner>, mut pushes: UnboundedReceiver<PushInfo>) {
    loop {
        let push = tokio::select! {
            push = pushes.recv() => push,
            () = inner.stop.cancelled() => return,
        };
        let Some(push) = push else { return };
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) =
                    (data.next().and_then(bytes), data.next().and_then(bytes))
                else {
                    continue;
                };
                deliver(&inner, &channel, payload);
            }
            PushKind::Disconnection => {
                warn!(node = %inner.node, "Redis subscriber disconnected; reconnecting and resubscribing");
                inner.subscriber_link.set(false);
                inner.missed_live.store(true, Ordering::Release);
            }
            _ => {}
        }
    }
}

fn deliver(inner: &Inner, channel: &[u8], payload: Bytes) {
    let Some(channel) = std::str::from_utf8(channel).ok().and_then(parse_channel) else {
        debug!("message on an unknown channel");
        return;
    };
    match (channel, payload.first()) {
        (Channel::User(app, user), Some(b'k')) => {
            inner
                .hub
                .close_user(&app, &user, close::KICKED, "kicked by the backend");
        }
        (Channel::Node, Some(b'r')) => {
            if let Some(local) = std::str::from_utf8(&payload[1..])
                .ok()
                .and_then(|n| n.parse().ok())
            {
                inner.hub.close_connection(
                    local,
                    close::REPLACED,
                    "replaced by a newer connection of this device",
                );
            }
        }
        (channel @ (Channel::Room(..) | Channel::App(_)), Some(b's')) => {
            // A stream message: `s<offset>:<epoch> <frame>`.
            let Some(space) = payload.iter().position(|b| *b == b' ') else {
                return;
            };
            let Some((offset, epoch)) = std::str::from_utf8(&payload[1..space])
                .ok()
                .and_then(|head| head.split_once(':'))
                .and_then(|(o, e)| Some((o.parse::<u64>().ok()?, Arc::<str>::from(e))))
            else {
                return;
            };
            let Ok(text) = Utf8Bytes::try_from(payload.slice(space + 1..)) else {
                return;
            };
            match channel {
                Channel::Room(app, room) => {
                    let frame = QueuedFrame::streamed(text, Some(&room), offset, epoch);
                    inner.hub.deliver_to_room(&app, &room, &frame)
                }
                Channel::App(app) => {
                    let frame = QueuedFrame::streamed(text, None, offset, epoch);
                    inner.hub.deliver_to_app(&app, &frame)
                }
                _ => 0,
            };
        }
        (channel, Some(b'm')) => {
            let Some(space) = payload.iter().position(|b| *b == b' ') else {
                return;
            };
            let seq = std::str::from_utf8(&payload[1..space])
                .ok()
                .and_then(|s| s.parse().ok());
            let Ok(text) = Utf8Bytes::try_from(payload.slice(space + 1..)) else {
                return;
            };
            let frame = QueuedFrame {
                text,
                seq,
                stream: None,
            };
            match channel {
                Channel::User(app, user) => inner.hub.deliver_to_user(&app, &user, &frame),
                Channel::Room(app, room) => inner.hub.deliver_to_room(&app, &room, &frame),
                Channel::App(app) => inner.hub.deliver_to_app(&app, &frame),
                Channel::Node => 0,
            };
        }
        _ => debug!("unknown payload"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::redis::keys;
    use crate::hub::Topic;

    #[test]
    fn channel_names_parse_back_to_their_topics() {
        let user = keys::channel(&Topic::User {
            app: Arc::from("shop"),
            user: Arc::from("we:ird}{ id"),
        });
        assert_eq!(
            parse_channel(&user),
            Some(Channel::User("shop".into(), "we:ird}{ id".into()))
        );
        let room = keys::channel(&Topic::Room {
            app: Arc::from("shop"),
            room: Arc::from("orders:1"),
        });
        assert_eq!(
            parse_channel(&room),
            Some(Channel::Room("shop".into(), "orders:1".into()))
        );
        let app = keys::channel(&Topic::App {
            app: Arc::from("shop"),
        });
        assert_eq!(parse_channel(&app), Some(Channel::App("shop".into())));
        assert_eq!(
            parse_channel(&keys::node_channel("server_1_abc")),
            Some(Channel::Node)
        );
        assert_eq!(parse_channel("other"), None);
    }
}
