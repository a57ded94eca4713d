//! The HTTP side of opening a WebSocket (RFC 6455 §4.2): checking the client's upgrade
//! request and computing `Sec-WebSocket-Accept`.

use axum::http::{header, HeaderMap, HeaderValue, Method, Version};
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Checks a WebSocket upgrade request; returns the `Sec-WebSocket-Accept` value.
pub fn accept_key(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<HeaderValue, &'static str> {
    if method != Method::GET {
        return Err("a WebSocket upgrade is a GET");
    }
    if version != Version::HTTP_11 {
        return Err("a WebSocket upgrade needs HTTP/1.1");
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err("missing Connection: Upgrade / Upgrade: websocket");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| "Sec-WebSocket-Key is not base64")?;
    if decoded.len() != 16 {
        return Err("Sec-WebSocket-Key must encode 16 bytes");
    }
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    HeaderValue::from_str(&accept).map_err(|_| "accept key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_rfc_example_gives_the_rfc_answer() {
        let accept = accept_key(&Method::GET, Version::HTTP_11, &headers(&GOOD)).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn incomplete_upgrades_are_refused() {
        assert!(accept_key(&Method::POST, Version::HTTP_11, &headers(&GOOD)).is_err());
        assert!(accept_key(&Method::GET, Version::HTTP_10, &headers(&GOOD)).is_err());
        for skip in 0..GOOD.len() {
            let partial: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert!(
                accept_key(&Method::GET, Version::HTTP_11, &headers(&partial)).is_err(),
                "{skip}"
            );
        }
        let mut bad_key = GOOD;
        bad_key[3] = ("sec-websocket-key", "c2hvcnQ=");
        assert!(accept_key(&Method::GET, Version::HTTP_11, &headers(&bad_key)).is_err());
    }
}
