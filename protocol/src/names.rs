//! Rules for the names that travel in URLs, tokens and envelopes (docs/protocol.md §2-§4).
//!
//! Each rule is a pure check returning a [`NameError`] that says which name broke which
//! rule, so the gateway can answer `invalid_params` / `invalid_room` with a useful message
//! and the SDK can refuse bad input before it ever reaches the network.

use thiserror::Error;

/// A name that does not follow its rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} must be {rule} (got {shown})")]
pub struct NameError {
    /// Which name: `app`, `device`, `room`, `type`, `id`, `sub`.
    pub what: &'static str,
    /// The rule in words.
    pub rule: &'static str,
    /// The offending value, shortened and with control characters escaped (safe to log).
    pub shown: String,
}

fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(40)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    format!("\"{out}\"")
}

fn check(
    what: &'static str,
    rule: &'static str,
    value: &str,
    max_chars: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    let count = value.chars().count();
    if count == 0 || count > max_chars || !value.chars().all(allowed) {
        return Err(NameError {
            what,
            rule,
            shown: shown(value),
        });
    }
    Ok(())
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `app`: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_app(value: &str) -> Result<(), NameError> {
    check(
        "app",
        "1-64 characters of A-Z a-z 0-9 . _ -",
        value,
        64,
        name_char,
    )
}

/// `device`: 1-128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_device(value: &str) -> Result<(), NameError> {
    check(
        "device",
        "1-128 characters of A-Z a-z 0-9 . _ : -",
        value,
        128,
        |c| name_char(c) || c == ':',
    )
}

/// Room names: 1-128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_room(value: &str) -> Result<(), NameError> {
    check(
        "room",
        "1-128 characters of A-Z a-z 0-9 . _ : -",
        value,
        128,
        |c| name_char(c) || c == ':',
    )
}

/// Message `type`: 1-64 characters of `[a-z0-9_.:-]`.
pub fn validate_type(value: &str) -> Result<(), NameError> {
    check(
        "type",
        "1-64 characters of a-z 0-9 _ . : -",
        value,
        64,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-'),
    )
}

/// Message `id`: 1-64 characters, none of them a control character or whitespace.
///
/// The protocol only bounds the length; refusing control characters and spaces keeps ids
/// printable in logs and harmless wherever they are stored.
pub fn validate_id(value: &str) -> Result<(), NameError> {
    check(
        "id",
        "1-64 printable characters without spaces",
        value,
        64,
        |c| !c.is_control() && !c.is_whitespace(),
    )
}

/// The token's `sub` (user id): 1-128 characters, no control characters.
pub fn validate_user_id(value: &str) -> Result<(), NameError> {
    check(
        "sub",
        "1-128 characters without control characters",
        value,
        128,
        |c| !c.is_control(),
    )
}

/// Whether `room` matches one of the token's `rooms` patterns.
///
/// A pattern is an exact room name, or a prefix followed by a single trailing `*`
/// (`orders:*` matches `orders:42`; `*` matches every room).
pub fn room_allowed<S: AsRef<str>>(patterns: &[S], room: &str) -> bool {
    patterns.iter().any(|p| {
        let p = p.as_ref();
        match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => p == room,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_the_rule() {
        assert!(validate_app("shoofi-app").is_ok());
        assert!(validate_app("a.b_c-D9").is_ok());
        assert!(validate_app(&"a".repeat(64)).is_ok());
        assert!(validate_app(&"a".repeat(65)).is_err());
        assert!(validate_app("").is_err());
        assert!(validate_app("has:colon").is_err());
        assert!(validate_app("spa ce").is_err());
        assert!(validate_app("ünïcode").is_err());
    }

    #[test]
    fn device_and_room_names_allow_colons() {
        assert!(validate_device("ios:ABCD-1234").is_ok());
        assert!(validate_room("orders:42").is_ok());
        assert!(validate_room(&"r".repeat(128)).is_ok());
        assert!(validate_room(&"r".repeat(129)).is_err());
        assert!(validate_room("a*").is_err());
        assert!(validate_room("a{b}").is_err());
        assert!(validate_device("new\nline").is_err());
        assert!(validate_device("").is_err());
    }

    #[test]
    fn types_are_lowercase() {
        assert!(validate_type("order_update").is_ok());
        assert!(validate_type("chat.message:v2-x").is_ok());
        assert!(validate_type("Order").is_err());
        assert!(validate_type("").is_err());
        assert!(validate_type(&"t".repeat(65)).is_err());
    }

    #[test]
    fn ids_are_printable_and_short() {
        assert!(validate_id("01J9ZX3K8Q").is_ok());
        assert!(validate_id("a:b*{c}").is_ok());
        assert!(validate_id(&"i".repeat(64)).is_ok());
        assert!(validate_id(&"i".repeat(65)).is_err());
        assert!(validate_id("with space").is_err());
        assert!(validate_id("new\nline").is_err());
        assert!(validate_id("").is_err());
    }

    #[test]
    fn user_ids_refuse_control_characters() {
        assert!(validate_user_id("user 42").is_ok());
        assert!(validate_user_id("a\u{0}b").is_err());
        assert!(validate_user_id(&"u".repeat(129)).is_err());
    }

    #[test]
    fn errors_name_the_rule_and_escape_the_value() {
        let e = validate_room("bad\nroom").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("room must be 1-128 characters"), "{text}");
        assert!(text.contains("bad\\nroom"), "{text}");
        let long = validate_app(&"x".repeat(100)).unwrap_err();
        assert!(long.shown.ends_with("…\""));
    }

    #[test]
    fn room_patterns_allow_exact_names_and_trailing_wildcards() {
        let patterns = ["orders:*", "lobby"];
        assert!(room_allowed(&patterns, "orders:1"));
        assert!(room_allowed(&patterns, "orders:"));
        assert!(room_allowed(&patterns, "lobby"));
        assert!(!room_allowed(&patterns, "lobby2"));
        assert!(!room_allowed(&patterns, "order"));
        assert!(room_allowed(&["*"], "anything"));
        assert!(!room_allowed::<&str>(&[], "anything"));
    }
}
