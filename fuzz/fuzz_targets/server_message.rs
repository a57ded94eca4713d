//! Gateway frames as the SDK decodes them (`ServerMessage::parse`, docs/protocol.md §5). Never
//! a panic on anything a (possibly hostile or broken) server sends; accepted frames
//! survive an encode / decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_protocol::server::ServerMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = ServerMessage::parse(text) else {
        return;
    };
    let encoded = message.encode(1_700_000_000_000);
    let again = ServerMessage::parse(&encoded).expect("an encoded frame decodes");
    assert_eq!(again, message, "round trip through {encoded}");
});
