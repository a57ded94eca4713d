//! Client tokens (JWT) and the backend API key.
//!
//! The verifier pins the one configured algorithm, requires `exp`, checks `nbf`, `iss` and
//! `aud` when configured, and turns every failure into a refusal the handshake can send
//! (`invalid_token` / `token_expired`). Token text never reaches a log.

use clap::ValueEnum;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tether_protocol::names;
use thiserror::Error;

/// JWT signature algorithms the gateway accepts (one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `JWT_SECRET`.
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 with the public key in `JWT_PUBLIC_KEY_FILE`.
    Rs256,
    /// ECDSA P-256 SHA-256 with the public key in `JWT_PUBLIC_KEY_FILE`.
    Es256,
}

/// The key that checks client tokens.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 public key, PEM.
    PublicKeyPem {
        /// The algorithm.
        algorithm: JwtAlgorithm,
        /// The PEM text.
        pem: Vec<u8>,
    },
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("JwtKey::Secret(***)"),
            JwtKey::PublicKeyPem { algorithm, .. } => {
                write!(f, "JwtKey::PublicKeyPem({algorithm:?})")
            }
        }
    }
}

/// JWT checking settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The verification key.
    pub key: JwtKey,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
    /// Leeway for `exp`/`nbf`, seconds.
    pub leeway_s: u64,
}

/// Tokens longer than this are refused unread: no real token is near it, and it bounds the
/// work an attacker can make the gateway do per handshake.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims Tether reads from a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Apps the token may connect to.
    #[serde(default)]
    pub apps: Vec<String>,
    /// User type (`customer`, `admin`, `partner`, ...).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    /// Room patterns the user may join (`*` as a trailing wildcard); absent: any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: one, or an array of several (RFC 7519 §4.1.3); a configured audience
    /// must be among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// The `aud` claim, in either form RFC 7519 allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "tether"`.
    One(String),
    /// `"aud": ["tether", "billing"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(aud: &str) -> Self {
        Audience::One(aud.to_owned())
    }
}

impl From<String> for Audience {
    fn from(aud: String) -> Self {
        Audience::One(aud)
    }
}

impl Claims {
    /// Claims for `sub` on `apps`, expiring `ttl_s` seconds from now.
    pub fn new(sub: impl Into<String>, apps: &[&str], ttl_s: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp: crate::clock::now_s() + ttl_s,
            apps: apps.iter().map(|a| (*a).to_owned()).collect(),
            user_type: None,
            rooms: None,
            iss: None,
            aud: None,
            nbf: None,
        }
    }

    /// The user type, `customer` when the token has none.
    pub fn user_type(&self) -> &str {
        self.user_type.as_deref().unwrap_or("customer")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// Anything else: missing, malformed, bad signature, wrong algorithm, bad claims.
    #[error("{0}")]
    Invalid(String),
}

/// Checks client tokens against the configured key and claims.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl TokenVerifier {
    /// Builds the verifier; fails only for a key that does not parse.
    pub fn new(config: &JwtConfig) -> Result<TokenVerifier, jsonwebtoken::errors::Error> {
        let (key, algorithm) = match &config.key {
            JwtKey::Secret(secret) => (DecodingKey::from_secret(secret), Algorithm::HS256),
            JwtKey::PublicKeyPem {
                algorithm: JwtAlgorithm::Es256,
                pem,
            } => (DecodingKey::from_ec_pem(pem)?, Algorithm::ES256),
            JwtKey::PublicKeyPem { pem, .. } => (DecodingKey::from_rsa_pem(pem)?, Algorithm::RS256),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not only match when present.
        let mut required = vec!["exp", "sub"];
        match &config.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(TokenVerifier { key, validation })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Invalid("token is empty".into()));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid(format!(
                "token is larger than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm => TokenError::Invalid(format!(
                    "algorithm not accepted (this gateway takes {:?})",
                    self.validation.algorithms
                )),
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Invalid(format!("claim {claim} is required"))
                }
                ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer (iss)".into()),
                ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience (aud)".into()),
                ErrorKind::ImmatureSignature => {
                    TokenError::Invalid("token not valid yet (nbf)".into())
                }
                ErrorKind::InvalidClaimFormat(claim) => {
                    TokenError::Invalid(format!("claim {claim} has the wrong format"))
                }
                ErrorKind::Json(e) => TokenError::Invalid(format!("claims are malformed: {e}")),
                _ => TokenError::Invalid("malformed token".into()),
            },
        )?;
        let claims = data.claims;
        names::validate_user_id(&claims.sub).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if let Some(user_type) = &claims.user_type {
            if user_type.is_empty()
                || user_type.len() > 64
                || user_type.chars().any(char::is_control)
            {
                return Err(TokenError::Invalid(
                    "claim type must be 1-64 printable characters".into(),
                ));
            }
        }
        Ok(claims)
    }
}

/// RSA key sizes the verifier (aws-lc) accepts for RS256, in bits.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// The modulus size in bits of an RSA public key in PEM (`PUBLIC KEY`, SubjectPublicKeyInfo,
/// or `RSA PUBLIC KEY`, PKCS#1); `None` when it is not one. Start-up uses it to refuse a key
/// the verifier would accept at parse time and then fail every token with.
pub fn rsa_key_bits(pem: &[u8]) -> Option<usize> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END "))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let (tag, outer, _) = der_element(&der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, first, rest) = der_element(outer)?;
    let modulus = match tag {
        // PKCS#1: SEQUENCE { INTEGER n, INTEGER e }.
        0x02 => first,
        // SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier, BIT STRING { PKCS#1 } }.
        0x30 => {
            let (tag, bits, _) = der_element(rest)?;
            if tag != 0x03 || bits.first() != Some(&0) {
                return None;
            }
            let (tag, pkcs1, _) = der_element(&bits[1..])?;
            if tag != 0x30 {
                return None;
            }
            let (tag, n, _) = der_element(pkcs1)?;
            if tag != 0x02 {
                return None;
            }
            n
        }
        _ => return None,
    };
    let significant = modulus.iter().position(|b| *b != 0)?;
    let top = modulus[significant];
    Some((modulus.len() - significant - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// One DER element at the start of `input`: (tag, content, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Signs an HS256 token: what `--dev` prints and what tests use. Production tokens come
/// from the app's own backend.
pub fn mint_token(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_else(|e| unreachable!("HS256 signing with a byte secret cannot fail: {e}"))
}

/// Compares a presented API key with the configured one in constant time.
pub fn api_key_matches(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> TokenVerifier {
        TokenVerifier::new(&JwtConfig {
            key: JwtKey::Secret(SECRET.to_vec()),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            leeway_s: 5,
        })
        .unwrap()
    }

    #[test]
    fn a_good_token_gives_its_claims() {
        let mut claims = Claims::new("u1", &["app"], 60);
        claims.rooms = Some(vec!["orders:*".into()]);
        let out = verifier(None, None)
            .verify(&mint_token(SECRET, &claims))
            .unwrap();
        assert_eq!(out, claims);
        assert_eq!(out.user_type(), "customer");
    }

    #[test]
    fn expired_tokens_are_expired_beyond_the_leeway_only() {
        let mut claims = Claims::new("u1", &["app"], 0);
        claims.exp = crate::clock::now_s() - 2;
        assert!(verifier(None, None)
            .verify(&mint_token(SECRET, &claims))
            .is_ok());
        claims.exp = crate::clock::now_s() - 30;
        assert_eq!(
            verifier(None, None).verify(&mint_token(SECRET, &claims)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn bad_tokens_are_invalid() {
        let v = verifier(None, None);
        let claims = Claims::new("u1", &["app"], 60);
        let wrong_key = mint_token(b"another-secret-another-secret-xx", &claims);
        assert!(
            matches!(v.verify(&wrong_key), Err(TokenError::Invalid(m)) if m == "bad signature")
        );
        assert!(matches!(
            v.verify("not.a.token"),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(v.verify(""), Err(TokenError::Invalid(_))));
        assert!(matches!(
            v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let v = verifier(None, None);
        let claims = Claims::new("u1", &["app"], 60);
        let body = mint_token(SECRET, &claims);
        let payload = body.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(matches!(v.verify(&none), Err(TokenError::Invalid(_))));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(
            matches!(v.verify(&hs512), Err(TokenError::Invalid(m)) if m.starts_with("algorithm not accepted"))
        );
    }

    #[test]
    fn exp_is_required() {
        #[derive(Serialize)]
        struct NoExp {
            sub: &'static str,
            apps: [&'static str; 1],
        }
        let token = jsonwebtoken::encode(
            &Header::default(),
            &NoExp {
                sub: "u",
                apps: ["a"],
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(
            matches!(verifier(None, None).verify(&token), Err(TokenError::Invalid(m)) if m.contains("exp"))
        );
    }

    #[test]
    fn issuer_audience_and_nbf_are_checked() {
        let mut claims = Claims::new("u1", &["app"], 60);
        claims.iss = Some("good".into());
        claims.aud = Some("tether".into());
        let token = mint_token(SECRET, &claims);
        assert!(verifier(Some("good"), Some("tether"))
            .verify(&token)
            .is_ok());
        assert!(
            matches!(verifier(Some("other"), None).verify(&token), Err(TokenError::Invalid(m)) if m.contains("iss"))
        );
        assert!(
            matches!(verifier(None, Some("else")).verify(&token), Err(TokenError::Invalid(m)) if m.contains("aud"))
        );
        // The array form: accepted when the configured audience is one of them.
        claims.aud = Some(Audience::Many(vec!["billing".into(), "tether".into()]));
        let token = mint_token(SECRET, &claims);
        assert!(verifier(None, Some("tether")).verify(&token).is_ok());
        assert!(
            matches!(verifier(None, Some("else")).verify(&token), Err(TokenError::Invalid(m)) if m.contains("aud"))
        );
        claims.nbf = Some(crate::clock::now_s() + 600);
        assert!(
            matches!(verifier(None, None).verify(&mint_token(SECRET, &claims)), Err(TokenError::Invalid(m)) if m.contains("nbf"))
        );
    }

    #[test]
    fn api_keys_compare_exactly() {
        assert!(api_key_matches("k-0123456789abcdef", "k-0123456789abcdef"));
        assert!(!api_key_matches("k-0123456789abcdeF", "k-0123456789abcdef"));
        assert!(!api_key_matches("k", "k-0123456789abcdef"));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn rsa_key_size_reading_survives_anything() {
        let pem = |der: &[u8]| {
            use base64::Engine;
            format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            )
        };
        // PKCS#1 with a 9-bit modulus (0x01 0xff) and exponent 3.
        let tiny = [0x30, 0x07, 0x02, 0x02, 0x01, 0xff, 0x02, 0x01, 0x03];
        assert_eq!(rsa_key_bits(pem(&tiny).as_bytes()), Some(9));
        for broken in [
            &b"not a key"[..],
            pem(&[]).as_bytes(),
            pem(&tiny[..5]).as_bytes(),
            pem(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).as_bytes(),
            pem(&[0x30, 0x80]).as_bytes(),
            pem(&[0x30, 0x02, 0x04, 0x00]).as_bytes(),
            pem(&[0x30, 0x03, 0x02, 0x01, 0x00]).as_bytes(),
        ] {
            assert_eq!(rsa_key_bits(broken), None, "{broken:?}");
        }
    }
}
