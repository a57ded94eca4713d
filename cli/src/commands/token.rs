//! `tether token`: an HS256 client token with the gateway's own claim type and signer
//! (`tether_server::auth`), so what it mints is what the gateway verifies.

use crate::args::TokenArgs;
use crate::duration;
use anyhow::{bail, Result};
use std::process::ExitCode;
use tether::protocol::names;
use tether_server::auth::{mint_token, Claims};

/// The gateway refuses shorter HS256 secrets at start-up.
const MIN_SECRET_CHARS: usize = 32;

/// Prints the token on stdout (alone, for `TOKEN=$(tether token ...)`).
pub fn run(args: &TokenArgs) -> Result<ExitCode> {
    let token = mint(args)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Checks the arguments and signs the token.
pub fn mint(args: &TokenArgs) -> Result<String> {
    names::validate_user_id(&args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    for app in &args.app {
        names::validate_app(app).map_err(|e| anyhow::anyhow!("--app: {e}"))?;
    }
    if args.ttl.as_secs() == 0 {
        bail!("--ttl must be at least 1s");
    }
    if let Some(kind) = &args.user_type {
        if kind.is_empty() || kind.len() > 64 || kind.chars().any(char::is_control) {
            bail!("--type must be 1-64 printable characters");
        }
    }
    if args.secret.is_empty() {
        bail!("--secret is empty (pass the gateway's JWT_SECRET)");
    }
    if args.secret.chars().count() < MIN_SECRET_CHARS {
        eprintln!(
            "warning: the secret has fewer than {MIN_SECRET_CHARS} characters; \
             the gateway refuses such a JWT_SECRET"
        );
    }
    let apps: Vec<&str> = args.app.iter().map(String::as_str).collect();
    let mut claims = Claims::new(args.user.as_str(), &apps, args.ttl.as_secs());
    claims.rooms = args.rooms.clone();
    claims.user_type = args.user_type.clone();
    claims.iss = args.issuer.clone();
    claims.aud = args.audience.clone().map(Into::into);
    tracing::info!(
        user = %claims.sub,
        apps = ?claims.apps,
        ttl = %duration::show(args.ttl),
        exp = claims.exp,
        "minted a token"
    );
    Ok(mint_token(args.secret.as_bytes(), &claims))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;
    use tether_server::auth::TokenVerifier;
    use tether_server::config::{JwtConfig, JwtKey};

    const SECRET: &str = "cli-unit-test-secret-0123456789abcdef";

    fn args() -> TokenArgs {
        TokenArgs {
            user: "alice".into(),
            app: vec!["demo".into(), "shop".into()],
            rooms: Some(vec!["order:*".into()]),
            ttl: Duration::from_secs(600),
            user_type: Some("partner".into()),
            issuer: Some("auth.example".into()),
            audience: None,
            secret: SECRET.into(),
        }
    }

    #[test]
    fn the_gateway_verifier_accepts_the_token_with_every_claim() {
        let token = mint(&args()).unwrap();
        let verifier = TokenVerifier::new(&JwtConfig {
            key: JwtKey::Secret(SECRET.as_bytes().to_vec()),
            issuer: Some("auth.example".into()),
            audience: None,
            leeway_s: 5,
        })
        .unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.apps, ["demo", "shop"]);
        assert_eq!(claims.rooms, Some(vec!["order:*".to_owned()]));
        assert_eq!(claims.user_type(), "partner");
        let now = tether_server::clock::now_s();
        assert!(
            (now + 590..=now + 600).contains(&claims.exp),
            "{}",
            claims.exp
        );
    }

    type Breaker = fn(&mut TokenArgs);

    #[test]
    fn bad_arguments_name_the_flag() {
        let cases: Vec<(Breaker, &str)> = vec![
            (|a| a.user = String::new(), "--user"),
            (|a| a.app = vec!["bad app".into()], "--app"),
            (|a| a.ttl = Duration::ZERO, "--ttl"),
            (|a| a.user_type = Some(String::new()), "--type"),
            (|a| a.secret = String::new(), "--secret"),
        ];
        for (breaks, flag) in cases {
            let mut a = args();
            breaks(&mut a);
            let e = mint(&a).unwrap_err().to_string();
            assert!(e.contains(flag), "{e} should name {flag}");
        }
    }
}
