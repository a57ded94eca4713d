//! Security: cross-site WebSocket hijacking (docs/reliability.md). A browser page on
//! another site can open a WebSocket to the gateway, but it always sends its `Origin`;
//! the gateway refuses any Origin not on `WS_ALLOWED_ORIGINS` before looking at the
//! token, so a token the page got hold of (in the query, where browsers put it) does not
//! help. Native apps send no Origin and are unaffected. `handshake.rs` covers one foreign
//! origin and one wildcard; these are the look-alikes.

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod support;

use support::*;

async fn origin_answer(gw: &TestGateway, origin: &str) -> u16 {
    let token = gw.token("u1");
    match gw
        .open(
            None,
            &format!("app={APP}&device=d&token={token}"),
            &[("origin", origin)],
        )
        .await
    {
        Ok(_) => 101,
        Err((status, body)) => {
            if status == 403 {
                assert_eq!(body["error"]["code"], "origin_forbidden", "{origin}");
            }
            status
        }
    }
}

/// Setup: exact origin `https://app.shop.example` allowed.
/// Attack: look-alike origins carrying a valid token in the query.
/// Expected: only the exact origin (any ASCII case) upgrades; every look-alike is 403
/// `origin_forbidden` before the token is read.
#[tokio::test]
async fn only_the_exact_allowed_origin_upgrades() {
    let gw =
        TestGateway::with(|c| c.allowed_origins = vec!["https://app.shop.example".into()]).await;
    assert_eq!(origin_answer(&gw, "https://app.shop.example").await, 101);
    assert_eq!(origin_answer(&gw, "HTTPS://APP.SHOP.EXAMPLE").await, 101);
    for origin in [
        "https://app.shop.example.evil.net",
        "https://evil-app.shop.example",
        "http://app.shop.example",
        "https://app.shop.example:8443",
        "https://app.shop.example.",
        "https://evil.net/https://app.shop.example",
        "null",
        "https://app.shop.exampl",
        "wss://app.shop.example",
    ] {
        assert_eq!(origin_answer(&gw, origin).await, 403, "{origin}");
    }
}

/// Setup: wildcard `https://*.shop.example` allowed.
/// Attack: the bare domain, a path that ends like the domain, a suffix domain, another
/// scheme.
/// Expected: subdomains upgrade; the rest is 403.
#[tokio::test]
async fn a_wildcard_covers_subdomains_only() {
    let gw = TestGateway::with(|c| c.allowed_origins = vec!["https://*.shop.example".into()]).await;
    for origin in ["https://a.shop.example", "https://a.b.shop.example"] {
        assert_eq!(origin_answer(&gw, origin).await, 101, "{origin}");
    }
    for origin in [
        "https://shop.example",
        "https://evil.net/x.shop.example",
        "https://a.shop.example.evil.net",
        "http://a.shop.example",
        "https://evilshop.example",
        "null",
    ] {
        assert_eq!(origin_answer(&gw, origin).await, 403, "{origin}");
    }
}

/// Setup: no allowed origins (the default: native apps only).
/// Attack: any page's Origin with a valid token, and a forbidden Origin with no token.
/// Expected: 403 `origin_forbidden` in both cases (the origin is checked first); without
/// an Origin header the same token connects.
#[tokio::test]
async fn with_no_allowed_origins_every_browser_is_refused_first() {
    let gw = TestGateway::start().await;
    for origin in [
        "https://shop.example",
        "http://localhost",
        "null",
        "file://",
    ] {
        assert_eq!(origin_answer(&gw, origin).await, 403, "{origin}");
    }
    let (status, code) = gw
        .refused(
            None,
            &format!("app={APP}"),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!((status, code.as_str()), (403, "origin_forbidden"));
    let token = gw.token("u1");
    assert!(gw
        .open(None, &format!("app={APP}&device=d&token={token}"), &[])
        .await
        .is_ok());
}
