#![allow(clippy::unwrap_used)]
//! The `tether-server` binary: configuration errors name the variable, `--dev` prints a
//! working token, and SIGTERM shuts down gracefully with exit code 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tether-server");

fn clean_command() -> Command {
    let mut command = Command::new(BIN);
    // Run where no .env exists and with no inherited Tether settings.
    command.current_dir(std::env::temp_dir());
    for (key, _) in std::env::vars() {
        if key.starts_with("WS_")
            || key.starts_with("JWT_")
            || key.starts_with("REDIS_")
            || key == "ADMIN_API_KEY"
            || key == "TETHER_BIND"
        {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn a_missing_secret_stops_start_up_naming_the_variable() {
    let output = clean_command().output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let output = clean_command()
        .env("JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("WS_MAX_CONNECTIONS_PER_USER", "lots")
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WS_MAX_CONNECTIONS_PER_USER"), "{stderr}");
}

#[test]
fn a_dotenv_file_is_read() {
    let dir = std::env::temp_dir().join(format!("tether-dotenv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        "JWT_SECRET=0123456789abcdef0123456789abcdef\nJWT_LEEWAY=99\n",
    )
    .unwrap();
    let output = clean_command().current_dir(&dir).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The secret came from .env (no JWT_SECRET error); the bad leeway from .env is reported.
    assert!(stderr.contains("JWT_LEEWAY"), "{stderr}");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev() -> (Running, String, String, std::sync::mpsc::Receiver<String>) {
    let mut child = clean_command()
        .args(["--dev", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut addr, mut token) = (None, None);
    while addr.is_none() || token.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("dev banner");
        if let Some(rest) = line.split("dev mode) on http://").nth(1) {
            addr = Some(rest.trim().to_owned());
        }
        if line.trim_start().starts_with("eyJ") {
            token = Some(line.trim().to_owned());
        }
    }
    (Running(child), addr.unwrap(), token.unwrap(), rx)
}

#[test]
fn dev_mode_prints_a_token_that_connects_and_sigterm_exits_0_after_1012() {
    let (mut running, addr, token, logs) = start_dev();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("ws://{addr}/ws?app=demo&device=dev-1&token={token}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the printed token connects");
        let first = ws.next().await.unwrap().unwrap();
        assert!(first.to_text().unwrap().contains("connection_established"));
        // SIGTERM: the client gets 1012 and the process exits 0.
        let pid = running.0.id() as i32;
        assert_eq!(send_sigterm(pid), 0);
        let close = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(close, 1012);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    // Logs are JSON lines with the connection's user, app and node, and never the token.
    // The process has exited: the reader thread ends at end of file.
    let lines: Vec<String> = logs.iter().collect();
    let opened = lines
        .iter()
        .find(|l| l.contains("connection opened"))
        .expect("an open log line");
    let parsed: serde_json::Value = serde_json::from_str(opened).expect("JSON log line");
    assert_eq!(parsed["user"], "dev-user", "{opened}");
    assert_eq!(parsed["app"], "demo");
    assert!(parsed["node"].as_str().unwrap().starts_with("server_"));
    assert!(parsed["conn"].as_str().unwrap().starts_with("server_"));
    let log_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with('{')).collect();
    assert!(log_lines.len() >= 3, "{lines:?}");
    assert!(
        log_lines.iter().all(|l| !l.contains(&token)),
        "a token reached the log"
    );
}

fn send_sigterm(pid: i32) -> i32 {
    // SIGTERM through the kill(1) command keeps this test free of unsafe code.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    if status.success() {
        0
    } else {
        1
    }
}
