//! Client tokens (`TokenVerifier::verify`, HS256). Two shapes of input: raw text (any
//! header, any garbage), and a token built from fuzzed header and claims JSON and signed
//! with the gateway's own secret, so the claim checks are reached too. Properties: never a
//! panic; a token is accepted only with alg HS256, a valid `sub`, and an `exp` not past.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::sign;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tether_server::auth::TokenVerifier;
use tether_server::config::{JwtConfig, JwtKey};

const SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef-0123";

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        TokenVerifier::new(&JwtConfig {
            key: JwtKey::Secret(SECRET.to_vec()),
            issuer: None,
            audience: None,
            leeway_s: 5,
        })
        .expect("verifier")
    })
}

fn check(token: &str) {
    if let Ok(claims) = verifier().verify(token) {
        let header = token.split('.').next().unwrap_or("");
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .expect("accepted header is base64");
        let header: serde_json::Value = serde_json::from_slice(&header).expect("header JSON");
        assert_eq!(header["alg"], "HS256", "accepted {header}");
        assert!(tether_protocol::names::validate_user_id(&claims.sub).is_ok());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        assert!(claims.exp + 5 >= now, "accepted an expired token");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    // header \x1f claims: sign it properly so validation goes past the signature.
    if let Some((header, claims)) = text.split_once('\u{1f}') {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        if let Ok(signature) = sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        ) {
            check(&format!("{signing_input}.{signature}"));
        }
    }
});
