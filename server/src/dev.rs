//! `--dev`: a gateway a newcomer can use at once. Missing secrets are made up at random and
//! a ready client token, the admin key and example commands are printed on standard output
//! (not through the logs: the log pipeline never carries tokens).

use crate::auth::{mint_token, Claims};
use std::net::SocketAddr;

/// App name the dev token grants.
pub const DEV_APP: &str = "demo";
/// User id of the dev token.
pub const DEV_USER: &str = "dev-user";

/// A random secret of 32 bytes, hex-encoded.
pub fn random_secret() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The banner `--dev` prints once the gateway listens.
pub fn banner(addr: SocketAddr, jwt_secret: Option<&[u8]>, admin_key: Option<&str>) -> String {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let mut out = format!("\nTether gateway (dev mode) on http://{host}\n");
    if let Some(secret) = jwt_secret {
        let claims = Claims::new(DEV_USER, &[DEV_APP], 24 * 3600);
        let token = mint_token(secret, &claims);
        out.push_str(&format!(
            "\nClient token for user {DEV_USER:?}, app {DEV_APP:?} (valid 24 h):\n  {token}\n\
             \nConnect a WebSocket client:\n  npx -y wscat -c \"ws://{host}/ws?app={DEV_APP}&device=dev-1\" -H \"Authorization: Bearer {token}\"\n"
        ));
    }
    if let Some(key) = admin_key {
        out.push_str(&format!(
            "\nAdmin API key:\n  {key}\n\
             \nSend the user a message:\n  curl -s -X POST http://{host}/v1/send/user -H \"Authorization: Bearer {key}\" -H 'Content-Type: application/json' \\\n    -d '{{\"userId\":\"{DEV_USER}\",\"app\":\"{DEV_APP}\",\"message\":{{\"type\":\"notification\",\"data\":{{\"text\":\"hello\"}}}}}}'\n\
             \nRead what clients sent:\n  curl -s \"http://{host}/v1/inbound?app={DEV_APP}\" -H \"Authorization: Bearer {key}\"\n"
        ));
    }
    out.push_str("\nWatch it:\n");
    if let Some(key) = admin_key {
        out.push_str(&format!(
            "  dashboard  http://{host}/admin  (sign in with the admin API key)\n  \
             stats      curl -s http://{host}/v1/stats -H \"Authorization: Bearer {key}\"\n"
        ));
    }
    out.push_str(&format!(
        "  metrics    http://{host}/metrics  (Prometheus text)\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_carries_a_working_token_and_commands() {
        let secret = random_secret();
        assert_eq!(secret.len(), 64);
        let text = banner(
            "0.0.0.0:8080".parse().unwrap(),
            Some(secret.as_bytes()),
            Some("admin-key-0123456789"),
        );
        assert!(
            text.contains("ws://127.0.0.1:8080/ws?app=demo&device=dev-1"),
            "{text}"
        );
        assert!(text.contains("Bearer admin-key-0123456789"));
        for place in ["/admin ", "/v1/stats ", "/metrics "] {
            assert!(
                text.contains(&format!("http://127.0.0.1:8080{place}")),
                "{place}: {text}"
            );
        }
        let token = text
            .lines()
            .find(|l| l.trim_start().starts_with("eyJ"))
            .unwrap()
            .trim();
        let verifier = crate::auth::TokenVerifier::new(&crate::config::JwtConfig {
            key: crate::config::JwtKey::Secret(secret.into_bytes()),
            issuer: None,
            audience: None,
            leeway_s: 5,
        })
        .unwrap();
        let claims = verifier.verify(token).unwrap();
        assert_eq!(claims.sub, DEV_USER);
        assert_eq!(claims.apps, [DEV_APP]);
    }
}
