//! S2, authenticated upgrades per second and churn: a burst of upgrades as fast as the
//! node takes them (token checked, limit admitted, inbox opened for each), then
//! connect+disconnect churn on top of the held connections. Once with HS256 tokens (the
//! main case), once with ES256 (an asymmetric signature to verify per upgrade).

use super::common::cpu;
use super::servers::{self, Kind};
use super::{row, CLIENT_CPU, SERVER_CPU};
use crate::orchestrate::Worker;
use crate::report::{decode_histogram, Row};
use crate::worker::{Connect, Role};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs S2 on one node, with HS256 then ES256 tokens. Without `openssl` (which makes the
/// ES256 key pair) the ES256 row is left out, with a warning.
pub async fn run(quick: bool) -> Result<Vec<Row>> {
    let mut rows = vec![measure(quick, None).await?];
    let dir = std::env::temp_dir().join(format!("tether-bench-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    match es256_keys(&dir) {
        Ok(keys) => {
            let row = measure(quick, Some(keys)).await;
            std::fs::remove_dir_all(&dir).ok();
            rows.push(row?);
        }
        Err(e) => {
            std::fs::remove_dir_all(&dir).ok();
            eprintln!("   S2 with ES256 tokens skipped: {e:#}");
        }
    }
    Ok(rows)
}

/// A P-256 key pair made with `openssl`: the files of the private key (PKCS#8 PEM, for
/// the token signer) and of the public key (for the gateway).
fn es256_keys(dir: &Path) -> Result<(String, String)> {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .context("running openssl (needed for the ES256 case)")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let (private_path, public_path) = (
        private.to_string_lossy().into_owned(),
        public.to_string_lossy().into_owned(),
    );
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &private_path,
    ])?;
    run(&[
        "pkey",
        "-in",
        &private_path,
        "-pubout",
        "-out",
        &public_path,
    ])?;
    Ok((private_path, public_path))
}

/// One S2 run; `es256` holds the private and the public key's files.
async fn measure(quick: bool, es256: Option<(String, String)>) -> Result<Row> {
    let (count, churn_per_s, churn_s) = if quick {
        (3_000, 1_000, 5)
    } else {
        (10_000, 2_000, 60)
    };
    let (tokens, env, private_key_file) = match es256 {
        Some((private_file, public_file)) => (
            "ES256",
            vec![
                ("JWT_ALGORITHM", "es256".to_owned()),
                ("JWT_PUBLIC_KEY_FILE", public_file),
            ],
            Some(private_file),
        ),
        None => ("HS256", Vec::new(), None),
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let servers = servers::start(Kind::Tether, 1, false, &env, SERVER_CPU).await?;
    let role = Role::Connect(Connect {
        targets: servers.addrs(),
        // No fixed source address: a bind(ip, 0) before connect makes the kernel pick a
        // port at bind time (slow, and without TIME_WAIT reuse); unbound connects to
        // loopback reuse TIME_WAIT ports (tcp_tw_reuse=2), which churn needs.
        sources: Vec::new(),
        first_user: 0,
        count,
        concurrency: 256,
        churn_per_s,
        churn_s,
        es256_private_key_file: private_key_file,
    });
    let mut worker = Worker::spawn(&role, Some(CLIENT_CPU))?;
    worker
        .next(Duration::from_secs(30))
        .await
        .context("connect worker ready")?;
    let pids = servers.pids();
    let before = cpu(&pids);
    worker.go().await?;
    let result = worker
        .next(Duration::from_secs(churn_s + 300))
        .await
        .context("connect result")?;
    let used = cpu(&pids) - before;
    worker.stop().await;
    let r = &result["result"];
    let mut row = row(
        "S2",
        format!(
            "tether 1 node, {tokens} tokens: burst of {count}, then {churn_per_s}/s churn for {churn_s} s"
        ),
        json!({
            "upgrades_per_s": r["upgrades_per_s"],
            "burst_failed": r["failed"],
            "burst_p50_us": r["burst_latency_us"]["p50"],
            "burst_p99_us": r["burst_latency_us"]["p99"],
            "churn_ok": r["churn_ok"],
            "churn_failed": r["churn_failed"],
            "churn_p50_us": r["churn_latency_us"]["p50"],
            "churn_p99_us": r["churn_latency_us"]["p99"],
            "server_cpu_s": used,
        }),
    );
    row.latency = r["churn_hist"]
        .as_str()
        .and_then(|h| decode_histogram(h).ok());
    Ok(row)
}
