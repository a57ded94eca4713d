//! Handshake and room inputs: the name validators, room patterns from a token, the Origin
//! allow-list matcher and the Redis key escaping of client-supplied text. Properties:
//! nothing panics; an accepted name holds only its allowed characters; an escaped id holds
//! only `[A-Za-z0-9._%-]` (no `:`, `*`, `{`, `}`, space or newline can reach a key name or
//! a pattern) and unescapes to itself; an Origin entry without `*` matches only itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_protocol::names;
use tether_server::broker::redis::keys;
use tether_server::gateway::origin::origin_allowed;

fn fields(text: &str) -> (&str, &str, &str) {
    let mut parts = text.splitn(3, '\u{1f}');
    (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b, c) = fields(text);

    let name_char = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-');
    if names::validate_app(a).is_ok() {
        assert!(!a.is_empty() && a.chars().count() <= 64 && a.chars().all(name_char));
    }
    for value in [a, b] {
        if names::validate_device(value).is_ok() {
            assert!(value.chars().all(|ch| name_char(ch) || ch == ':'));
        }
        if names::validate_room(value).is_ok() {
            assert!(value.chars().all(|ch| name_char(ch) || ch == ':'));
            assert!(value.chars().count() <= 128);
        }
        if names::validate_id(value).is_ok() {
            assert!(!value
                .chars()
                .any(|ch| ch.is_control() || ch.is_whitespace()));
        }
        let _ = names::validate_type(value);
        let _ = names::validate_user_id(value);
    }

    // Room patterns (the token's `rooms`): `b` split on commas is the list, `a` the room.
    let patterns: Vec<&str> = b.split(',').collect();
    let allowed = names::room_allowed(&patterns, a);
    if allowed {
        assert!(patterns.iter().any(|p| *p == a
            || p.strip_suffix('*')
                .is_some_and(|prefix| a.starts_with(prefix))));
    }

    // The Origin matcher: `c` lists entries, `a` is the Origin header.
    let entries: Vec<String> = c.split(',').map(str::to_owned).collect();
    if origin_allowed(a, &entries) {
        let lower = a.to_ascii_lowercase();
        assert!(entries.iter().any(|e| {
            let e = e.to_ascii_lowercase();
            match e.split_once('*') {
                None => e == lower,
                Some((prefix, suffix)) => lower.starts_with(prefix) && lower.ends_with(suffix),
            }
        }));
    }
    let exact = vec![c.to_owned()];
    if !c.contains('*') {
        assert_eq!(origin_allowed(a, &exact), a.eq_ignore_ascii_case(c));
    }

    // Key escaping: safe characters only, and reversible (so injective).
    for value in [a, b, c] {
        let escaped = keys::escape(value);
        assert!(escaped
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-' | b'%')));
        assert_eq!(keys::unescape(&escaped).as_deref(), Some(value));
        let user = keys::user("app", value);
        for key in [
            &user.seq,
            &user.inbox,
            &user.cursors,
            &user.conns,
            &user.channel,
        ] {
            assert_eq!(key.matches('{').count(), 1, "{key}");
            assert_eq!(key.matches('}').count(), 1, "{key}");
            assert!(!key.contains('*') && !key.contains('\n') && !key.contains(' '));
        }
    }
});
