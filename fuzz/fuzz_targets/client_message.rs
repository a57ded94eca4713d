//! Client frames as the gateway decodes them (`ClientMessage::parse`, docs/protocol.md §4).
//! Never a panic; whatever is accepted follows the name rules and survives an encode /
//! decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_protocol::client::ClientMessage;
use tether_protocol::names;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = ClientMessage::parse(text) else {
        return;
    };
    match &message {
        ClientMessage::JoinRoom { room, id, .. }
        | ClientMessage::LeaveRoom { room, id }
        | ClientMessage::RoomPresence { room, id } => {
            assert!(names::validate_room(room).is_ok(), "accepted room {room:?}");
            if let Some(id) = id {
                assert!(names::validate_id(id).is_ok(), "accepted id {id:?}");
            }
        }
        ClientMessage::App(app) => {
            assert!(names::validate_type(&app.kind).is_ok(), "{:?}", app.kind);
            assert!(names::validate_id(&app.id).is_ok(), "{:?}", app.id);
            assert!(!tether_protocol::client::is_reserved(&app.kind));
            assert!(!tether_protocol::client::CONTROL_TYPES.contains(&app.kind.as_str()));
        }
        ClientMessage::Ping { .. }
        | ClientMessage::Ack { .. }
        | ClientMessage::RefreshToken { .. } => {}
    }
    let again = ClientMessage::parse(&message.to_json()).expect("an encoded message decodes");
    assert_eq!(again, message);
});
