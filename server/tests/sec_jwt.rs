//! Security: the JWT matrix at the handshake (docs/protocol.md §2; docs/reliability.md). Every
//! bad token is refused with 401 before any upgrade; the unit tests in `src/auth.rs` cover
//! the verifier alone, these go through the real handshake, including an RS256-configured
//! gateway and tokens too large for the request head.

#![allow(clippy::unwrap_used)] // test helpers panic on purpose

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::io::{Read, Write};
use std::process::Command;
use support::*;
use tether_server::auth::Claims;
use tether_server::config::{JwtAlgorithm, JwtKey};

fn now_s() -> u64 {
    tether_server::clock::now_s()
}

fn b64(bytes: &[u8]) -> String {
    use base64_engine::encode;
    encode(bytes)
}

/// Base64url without padding, enough for hand-made tokens.
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    pub fn encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

fn hs256(secret: &[u8], header: Header, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "u1", "exp": now_s() + 600, "apps": [APP]})
}

/// The handshake's answer for `token` (status, error code).
async fn answer(gw: &TestGateway, token: &str) -> (u16, String) {
    match gw
        .open(Some(token), &format!("app={APP}&device=d"), &[])
        .await
    {
        Ok(_) => (101, String::new()),
        Err((status, body)) => (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        ),
    }
}

#[tokio::test]
async fn every_malformed_or_misdirected_hs256_token_is_401() {
    let gw = TestGateway::with(|c| {
        c.jwt.issuer = Some("https://auth.shop".into());
        c.jwt.audience = Some("tether".into());
    })
    .await;
    let base = json!({"sub": "u1", "exp": now_s() + 600, "apps": [APP], "iss": "https://auth.shop", "aud": "tether"});
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = base.clone();
        change(&mut claims);
        hs256(SECRET.as_bytes(), Header::default(), &claims)
    };
    // The control: a good token connects.
    assert_eq!(answer(&gw, &with(&|_| {})).await.0, 101);

    let payload = b64(base.to_string().as_bytes());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none, no signature",
            format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
            "invalid_token",
        ),
        (
            "alg None (case)",
            format!("{}.{payload}.", b64(br#"{"alg":"None","typ":"JWT"}"#)),
            "invalid_token",
        ),
        (
            "HS512 with the right secret",
            {
                let claims = base.clone();
                hs256(SECRET.as_bytes(), Header::new(Algorithm::HS512), &claims)
            },
            "invalid_token",
        ),
        (
            "expired beyond the leeway",
            with(&|c| c["exp"] = json!(now_s() - 60)),
            "token_expired",
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(now_s() + 600)),
            "invalid_token",
        ),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.example")),
            "invalid_token",
        ),
        (
            "wrong aud",
            with(&|c| c["aud"] = json!("someone-else")),
            "invalid_token",
        ),
        (
            "aud as a list without ours",
            with(&|c| c["aud"] = json!(["a", "b"])),
            "invalid_token",
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "invalid_token",
        ),
        (
            "exp as a string",
            with(&|c| c["exp"] = json!("never")),
            "invalid_token",
        ),
        (
            "missing sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "invalid_token",
        ),
        (
            "sub with a newline",
            with(&|c| c["sub"] = json!("u1\nadmin")),
            "invalid_token",
        ),
        (
            "bad signature (other secret)",
            hs256(
                b"another-secret-another-secret-another",
                Header::default(),
                &base,
            ),
            "invalid_token",
        ),
        (
            "claims swapped under a valid signature",
            {
                let good = with(&|_| {});
                let mut parts: Vec<&str> = good.split('.').collect();
                let forged = b64(json!({"sub": "admin", "exp": now_s() + 600, "apps": [APP], "iss": "https://auth.shop", "aud": "tether"}).to_string().as_bytes());
                parts[1] = &forged;
                parts.join(".")
            },
            "invalid_token",
        ),
        (
            "signature stripped",
            {
                let good = with(&|_| {});
                let cut = good.rsplit_once('.').unwrap().0.to_owned();
                format!("{cut}.")
            },
            "invalid_token",
        ),
        (
            "two parts only",
            format!("{}.{payload}", b64(br#"{"alg":"HS256"}"#)),
            "invalid_token",
        ),
        ("not base64", "!!!.@@@.###".to_owned(), "invalid_token"),
        ("empty", String::new(), "invalid_token"),
    ];
    for (what, token, code) in cases {
        let (status, got) = answer(&gw, &token).await;
        assert_eq!((status, got.as_str()), (401, code), "{what}");
    }
}

#[tokio::test]
async fn a_kid_header_selects_nothing_so_unknown_or_path_like_kids_change_nothing() {
    // The gateway has one key; `kid` is never used to find another one (kid injection:
    // a path, a URL or SQL in kid must not load a key an attacker controls).
    let dir = tempfile_dir("kid");
    let attacker_secret = "attacker-controlled-secret-0123456789ab";
    let key_file = dir.join("attacker.key");
    std::fs::write(&key_file, attacker_secret).unwrap();
    let gw = TestGateway::start().await;
    for kid in [
        key_file.to_str().unwrap().to_owned(),
        "../../../../etc/passwd".to_owned(),
        "/dev/null".to_owned(),
        "http://evil.example/jwks.json".to_owned(),
        "' OR 1=1 --".to_owned(),
        "unknown-key-7".to_owned(),
    ] {
        let header = Header {
            kid: Some(kid.clone()),
            ..Header::default()
        };
        // Signed with what the kid points at: refused.
        let forged = hs256(attacker_secret.as_bytes(), header.clone(), &good_claims());
        assert_eq!(
            answer(&gw, &forged).await,
            (401, "invalid_token".into()),
            "{kid}"
        );
        let empty = hs256(b"", header.clone(), &good_claims());
        assert_eq!(
            answer(&gw, &empty).await,
            (401, "invalid_token".into()),
            "{kid}"
        );
        // Signed with the gateway's key: the kid is ignored, the signature decides.
        let genuine = hs256(SECRET.as_bytes(), header, &good_claims());
        assert_eq!(answer(&gw, &genuine).await.0, 101, "{kid}");
    }
    std::fs::remove_dir_all(dir).ok();
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-sec-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An RSA key pair made with the openssl command (PKCS#1 private, SPKI public).
fn rsa_pair(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join("rsa.pem");
    let public = dir.join("rsa.pub.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&private)
        .arg("2048")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
        || Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&private)
            .arg("2048")
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl genrsa failed (the openssl command is needed)");
    assert!(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap()
        .status
        .success());
    (
        std::fs::read(private).unwrap(),
        std::fs::read(public).unwrap(),
    )
}

#[tokio::test]
async fn an_rs256_gateway_refuses_hs256_signed_with_its_public_key() {
    let dir = tempfile_dir("rsa");
    let (private, public) = rsa_pair(&dir);
    let public_for_gateway = public.clone();
    let gw = TestGateway::with(move |c| {
        c.jwt.key = JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Rs256,
            pem: public_for_gateway,
        }
    })
    .await;
    let claims = good_claims();
    // The control: RS256 signed with the private key connects.
    let rs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(answer(&gw, &rs256).await.0, 101);
    // Key confusion: HS256 with the public key (PEM text, and its DER body) as the secret.
    let pem_text = String::from_utf8(public.clone()).unwrap();
    let der_b64: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for secret in [
        public.clone(),
        pem_text.trim().as_bytes().to_vec(),
        der_b64.into_bytes(),
    ] {
        let confused = hs256(&secret, Header::default(), &claims);
        assert_eq!(answer(&gw, &confused).await, (401, "invalid_token".into()));
    }
    // HS256 with the HS test secret, alg none, and an RS256 token from another key pair.
    assert_eq!(
        answer(&gw, &hs256(SECRET.as_bytes(), Header::default(), &claims)).await,
        (401, "invalid_token".into())
    );
    let payload = b64(claims.to_string().as_bytes());
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none"}"#));
    assert_eq!(answer(&gw, &none).await, (401, "invalid_token".into()));
    let other_dir = tempfile_dir("rsa-other");
    let (other_private, _) = rsa_pair(&other_dir);
    let foreign = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&other_private).unwrap(),
    )
    .unwrap();
    assert_eq!(answer(&gw, &foreign).await, (401, "invalid_token".into()));
    // PS256 / RS512 with the right key: only the configured algorithm passes.
    for alg in [Algorithm::RS512, Algorithm::PS256] {
        let other_alg = jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        assert_eq!(
            answer(&gw, &other_alg).await,
            (401, "invalid_token".into()),
            "{alg:?}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(other_dir).ok();
}

/// Runs the openssl command (which these tests need) and fails on an error.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An RSA public key of `bits` bits made with the openssl command, as SPKI
/// (`PUBLIC KEY`) and as PKCS#1 (`RSA PUBLIC KEY`) PEM files.
fn rsa_public_files(dir: &std::path::Path, bits: u32) -> [std::path::PathBuf; 2] {
    let private = dir.join(format!("rsa{bits}.pem"));
    let spki = dir.join(format!("rsa{bits}.spki.pem"));
    let pkcs1 = dir.join(format!("rsa{bits}.pkcs1.pem"));
    let bits_arg = bits.to_string();
    for args in [
        vec!["genrsa", "-out", private.to_str().unwrap(), &bits_arg],
        vec![
            "rsa",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            spki.to_str().unwrap(),
        ],
        vec![
            "rsa",
            "-in",
            private.to_str().unwrap(),
            "-RSAPublicKey_out",
            "-out",
            pkcs1.to_str().unwrap(),
        ],
    ] {
        openssl(&args);
    }
    [spki, pkcs1]
}

#[test]
fn rs256_keys_outside_what_the_verifier_takes_stop_start_up() {
    use clap::Parser;
    use tether_server::auth::rsa_key_bits;
    use tether_server::config::{Cli, Config};
    let dir = tempfile_dir("rsa-sizes");
    let start = |file: &std::path::Path| {
        let cli = Cli::try_parse_from([
            "tether-server",
            "--jwt-algorithm",
            "RS256",
            "--jwt-public-key-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        Config::from_cli(&cli, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for file in rsa_public_files(&dir, 1024) {
        assert_eq!(rsa_key_bits(&std::fs::read(&file).unwrap()), Some(1024));
        let err = start(&file).unwrap_err();
        assert!(
            err.starts_with("JWT_PUBLIC_KEY_FILE") && err.contains("2048 to 8192 bits"),
            "{err}"
        );
    }
    for file in rsa_public_files(&dir, 3072) {
        assert_eq!(rsa_key_bits(&std::fs::read(&file).unwrap()), Some(3072));
        start(&file).unwrap();
    }
    // An EC key given as RS256 is refused too (it is no RSA key).
    let (_, ec_public) = ec_pair(&dir, "not-rsa");
    assert_eq!(rsa_key_bits(&ec_public), None);
    std::fs::remove_dir_all(dir).ok();
}

/// A P-256 key pair made with the openssl command (PKCS#8 private, SPKI public).
fn ec_pair(dir: &std::path::Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            private.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        openssl(&args);
    }
    (
        std::fs::read(private).unwrap(),
        std::fs::read(public).unwrap(),
    )
}

#[tokio::test]
async fn an_es256_gateway_takes_its_own_signatures_only() {
    let dir = tempfile_dir("ec");
    let (private, public) = ec_pair(&dir, "ec");
    let (other_private, _) = ec_pair(&dir, "other");
    let public_for_gateway = public.clone();
    let gw = TestGateway::with(move |c| {
        c.jwt.key = JwtKey::PublicKeyPem {
            algorithm: JwtAlgorithm::Es256,
            pem: public_for_gateway,
        }
    })
    .await;
    let claims = good_claims();
    let es256 = |key: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(key).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(answer(&gw, &es256(&private)).await.0, 101);
    assert_eq!(
        answer(&gw, &es256(&other_private)).await,
        (401, "invalid_token".into()),
        "signed by another key"
    );
    // Key confusion: HS256 with the public key as the secret; the HS test secret.
    for secret in [public.clone(), SECRET.as_bytes().to_vec()] {
        assert_eq!(
            answer(&gw, &hs256(&secret, Header::default(), &claims)).await,
            (401, "invalid_token".into())
        );
    }
    // A valid signature over claims that expired is still refused.
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "u1", "exp": now_s() - 600, "apps": [APP]}),
        &EncodingKey::from_ec_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(answer(&gw, &expired).await, (401, "token_expired".into()));
    std::fs::remove_dir_all(dir).ok();
}

/// Sends a raw upgrade request and returns the status code of the answer (0 when the
/// gateway closed without answering).
fn raw_handshake(addr: std::net::SocketAddr, path_and_query: &str, extra_headers: &str) -> u16 {
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    );
    // The gateway may close while we still write a huge head; that is a refusal too.
    let _ = socket.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_kb_token_is_refused_before_any_parsing_or_upgrade() {
    let gw = TestGateway::start().await;
    let addr = gw.addr;
    // A validly signed token padded to 100 KB with a junk claim.
    let huge = hs256(
        SECRET.as_bytes(),
        Header::default(),
        &json!({"sub": "u1", "exp": now_s() + 600, "apps": [APP], "pad": "x".repeat(100 * 1024)}),
    );
    assert!(huge.len() > 100 * 1024);
    let (header_status, query_status) = tokio::task::spawn_blocking(move || {
        (
            raw_handshake(
                addr,
                &format!("/ws?app={APP}&device=d"),
                &format!("Authorization: Bearer {huge}\r\n"),
            ),
            raw_handshake(addr, &format!("/ws?app={APP}&device=d&token={huge}"), ""),
        )
    })
    .await
    .unwrap();
    // The request head is capped at 16 KiB: the connection is refused at the HTTP layer
    // (431 / 414 / 400 or closed unanswered), never upgraded.
    for status in [header_status, query_status] {
        assert_ne!(status, 101);
        assert!(
            status == 0 || (400..500).contains(&status),
            "answered {status}"
        );
    }
    // A token just over the 8 KiB verifier limit fits in the head and gets the JSON 401.
    let big = hs256(
        SECRET.as_bytes(),
        Header::default(),
        &json!({"sub": "u1", "exp": now_s() + 600, "apps": [APP], "pad": "x".repeat(9 * 1024)}),
    );
    assert_eq!(answer(&gw, &big).await, (401, "invalid_token".into()));
    // The gateway is unharmed.
    gw.connect("u1", "after").await;
}

#[tokio::test]
async fn a_token_for_one_app_or_user_opens_nothing_else() {
    let gw = TestGateway::start().await;
    let mut claims = Claims::new("u1", &["other-app"], 600);
    claims.rooms = Some(vec!["orders:u1:*".into()]);
    let token = gw.token_for(&claims);
    let (status, code) = gw.refused(Some(&token), &format!("app={APP}"), &[]).await;
    assert_eq!((status, code.as_str()), (403, "app_forbidden"));
    // An app list with a wildcard-looking entry grants only that literal name.
    let star = gw.token_for(&Claims::new("u1", &["*"], 600));
    assert_eq!(
        gw.refused(Some(&star), &format!("app={APP}"), &[]).await.1,
        "app_forbidden"
    );
}
