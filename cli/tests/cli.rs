//! The `tether` binary end to end against a real gateway: tokens it mints connect, `listen`
//! prints what `pub` publishes, `send` is acknowledged and stored, `stats`/`health` read
//! the gateway, and bad input fails with a clear message and a non-zero exit code.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{closed_port, Gw, Running, ADMIN_KEY, APP, SECRET};

/// `tether listen` for `user`, with `extra` flags, connected.
async fn listen(gw: &Gw, token: &str, extra: &[&str]) -> Running {
    let mut args = vec!["listen", "--app", APP, "--token", token];
    args.extend_from_slice(extra);
    let mut running = Running::spawn(gw.tether(&args));
    running.wait_stderr("connected").await;
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_connects_and_listen_prints_a_user_message() {
    let gw = Gw::start().await;
    let token = gw.token("alice").await;
    assert_eq!(token.split('.').count(), 3, "{token}");
    let mut listener = listen(&gw, &token, &["--count", "1"]).await;

    let out = gw
        .run(&[
            "pub",
            "user",
            "--user",
            "alice",
            "--app",
            APP,
            "--admin-key",
            ADMIN_KEY,
            "--type",
            "notification",
            "--data",
            r#"{"text":"hi"}"#,
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let answer = out.json();
    assert_eq!(answer["seq"], 1, "{answer}");
    assert_eq!(answer["queued"], true);
    assert_eq!(answer["delivered"], 1, "the listener was connected");

    let line = listener.next_json().await;
    assert_eq!(line["type"], "notification");
    assert_eq!(line["data"], json!({"text": "hi"}));
    assert_eq!(line["seq"], 1);
    assert_eq!(line["id"], answer["id"]);
    assert_eq!(line["room"], Value::Null);
    assert!(line["ts"].as_u64().unwrap() > 0);
    // --count 1: it stops on its own, cleanly.
    assert_eq!(listener.finish().await, 0, "{:#?}", listener.errors);
    assert!(listener.stdout_rest().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_for_the_ack_and_the_backend_reads_the_message() {
    let gw = Gw::start().await;
    let token = gw.token("bob").await;
    let out = gw
        .run(&[
            "send",
            "--app",
            APP,
            "--token",
            &token,
            "--device",
            "laptop-1",
            "--type",
            "chat",
            "--data",
            r#"{"text":"hello","n":[1,2]}"#,
            "--timeout",
            "10s",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim();
    assert!(!id.is_empty() && !id.contains('\n'), "{out:?}");
    assert!(out.stderr.contains(&format!("queued id={id}")), "{out:?}");
    assert!(out.stderr.contains("waiting for the ack"), "{out:?}");

    let page = gw.get(&format!("/v1/inbound?app={APP}")).await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{page}");
    let stored = &messages[0];
    assert_eq!(stored["id"], id);
    assert_eq!(stored["userId"], "bob");
    assert_eq!(stored["device"], "laptop-1");
    assert_eq!(stored["type"], "chat");
    assert_eq!(stored["data"], json!({"text": "hello", "n": [1, 2]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_app_messages_reach_listeners() {
    let gw = Gw::start().await;
    let token = gw.token("carol").await;
    let mut in_room = listen(&gw, &token, &["--room", "lobby", "--count", "2"]).await;
    let mut elsewhere = listen(&gw, &token, &["--count", "1"]).await;

    // The join goes out after `connected`; publish until the room has its member.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let room_answer = loop {
        let out = gw
            .run(&[
                "pub",
                "room",
                "--room",
                "lobby",
                "--app",
                APP,
                "--admin-key",
                ADMIN_KEY,
                "--type",
                "chat",
                "--data",
                r#"{"in":"room"}"#,
            ])
            .await;
        assert_eq!(out.code, 0, "{out:?}");
        let answer = out.json();
        if answer["delivered"] == 1 {
            break answer;
        }
        assert_eq!(answer["delivered"], 0, "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room never had its member"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let line = in_room.next_json().await;
    assert_eq!(line["room"], "lobby");
    assert_eq!(line["id"], room_answer["id"]);
    assert_eq!(line["data"], json!({"in": "room"}));
    assert_eq!(line["seq"], Value::Null, "room messages carry no seq");

    let out = gw
        .run(&[
            "pub",
            "app",
            "--app",
            APP,
            "--admin-key",
            ADMIN_KEY,
            "--type",
            "maintenance_notice",
            "--data",
            r#"{"at":"02:00"}"#,
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let app_id = out.json()["id"].clone();
    for listener in [&mut in_room, &mut elsewhere] {
        let line = listener.next_json().await;
        assert_eq!(line["type"], "maintenance_notice");
        assert_eq!(line["id"], app_id);
        assert_eq!(line["data"], json!({"at": "02:00"}));
        assert_eq!(listener.finish().await, 0, "{:#?}", listener.errors);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_health_print_the_gateways_json() {
    let gw = Gw::start().await;
    let token = gw.token("dave").await;
    let mut listener = listen(&gw, &token, &[]).await;

    let mut stats = gw.tether(&["stats"]);
    stats.env("TETHER_ADMIN_KEY", ADMIN_KEY);
    let out = support::run(stats).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\n  \""), "pretty JSON: {out:?}");
    let stats = out.json();
    assert_eq!(stats["totalConnections"], 1, "{stats}");
    assert_eq!(stats["connectionsByApp"][APP], 1, "{stats}");
    assert_eq!(stats["nodes"], 1);

    // The gateway's own variable works as well.
    let mut stats = gw.tether(&["stats"]);
    stats.env("ADMIN_API_KEY", ADMIN_KEY);
    assert_eq!(support::run(stats).await.code, 0);

    let out = gw.run(&["health"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json(), json!({"status": "healthy", "broker": "memory"}));

    // Ctrl-C: a clean shutdown (the socket closed, exit 0).
    let pid = listener.child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    listener.wait_stderr("interrupted, shutting down").await;
    assert_eq!(listener.finish().await, 0, "{:#?}", listener.errors);
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while gw.get("/v1/stats").await["totalConnections"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the socket stayed open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_named_with_the_cause() {
    let port = closed_port();
    let server = format!("http://127.0.0.1:{port}");
    let out = support::run(support::tether(&["health", "--server", &server])).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach {server}/health: connection refused")),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());

    let out = support::run(support::tether(&[
        "send",
        "--server",
        &server,
        "--app",
        APP,
        "--token",
        "t.t.t",
        "--type",
        "chat",
        "--timeout",
        "1s",
    ]))
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no ack within 1s"), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot reach ws://127.0.0.1:{port}/ws: connection refused"
        )),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "no id without an ack: {out:?}");

    let out = support::run(support::tether(&[
        "listen",
        "--server",
        &server,
        "--app",
        APP,
        "--token",
        "t.t.t",
        "--connect-timeout",
        "1s",
    ]))
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not connected within 1s"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly() {
    let gw = Gw::start().await;
    let token = gw.token("erin").await;
    let publish = |data: &'static str, key: &'static str| {
        let gw = &gw;
        async move {
            gw.run(&[
                "pub",
                "user",
                "--user",
                "erin",
                "--app",
                APP,
                "--admin-key",
                key,
                "--type",
                "notification",
                "--data",
                data,
            ])
            .await
        }
    };

    let out = publish("{oops", ADMIN_KEY).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--data is not valid JSON"), "{out:?}");

    let out = publish("{}", "wrong-admin-key-000").await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("HTTP 401 unauthorized: wrong API key"),
        "{out:?}"
    );
    // Nothing of the above reached the inbox.
    assert_eq!(gw.get("/v1/stats").await["totalQueuedMessages"], 0);

    // The server's own refusal, with its code.
    let out = gw
        .run(&[
            "pub",
            "app",
            "--app",
            APP,
            "--admin-key",
            ADMIN_KEY,
            "--type",
            "Not-Valid",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("HTTP 400 invalid_request"), "{out:?}");

    let out = gw.run(&["stats"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no admin key"), "{out:?}");

    // A token signed with another secret is refused at once, not retried forever
    // (`--connect-timeout 0` would keep a retrying client up past the test's limit).
    let forged = gw
        .run(&[
            "token",
            "--user",
            "erin",
            "--app",
            APP,
            "--secret",
            "another-secret-0123456789abcdef-xyz",
        ])
        .await;
    let out = gw
        .run(&[
            "listen",
            "--app",
            APP,
            "--token",
            forged.stdout.trim(),
            "--connect-timeout",
            "0",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("refused the token"), "{out:?}");

    // A token for another app: refused for good.
    let out = gw
        .run(&[
            "listen",
            "--app",
            "other-app",
            "--token",
            &token,
            "--connect-timeout",
            "0",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("other-app"), "{out:?}");

    let out = gw
        .run(&[
            "send", "--app", APP, "--token", &token, "--type", "chat", "--data", "[1,",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--data is not valid JSON"), "{out:?}");

    let out = gw
        .run(&[
            "send", "--app", APP, "--token", &token, "--type", "Bad Type",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cannot queue"), "{out:?}");

    // Usage errors: exit 2 with clap's message naming the flag.
    for (args, needle) in [
        (vec!["health", "--server", "ws://127.0.0.1:1"], "http://"),
        (vec!["health", "--server", "not a url"], "not a URL"),
        (
            vec![
                "token", "--user", "u", "--app", APP, "--secret", SECRET, "--ttl", "1w",
            ],
            "--ttl",
        ),
        (vec!["listen", "--app", APP], "--token"),
    ] {
        let out = gw.run(&args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:?}");
    }

    let long_user = "u".repeat(129);
    let out = gw
        .run(&[
            "token", "--user", &long_user, "--app", APP, "--secret", SECRET,
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--user"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_shows_examples() {
    for args in [
        vec!["--help"],
        vec!["pub", "--help"],
        vec!["send", "--help"],
    ] {
        let out = support::run(support::tether(&args)).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Examples"), "{args:?}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_gateway_gives_exit_code_1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A stand-in answering /health the way a gateway with Redis down does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        let body = r#"{"status":"unhealthy","latency":null}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
    });
    let out = support::run(support::tether(&[
        "health",
        "--server",
        &format!("http://{addr}"),
    ]))
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["status"], "unhealthy", "the document is printed");
    assert!(out.stderr.contains("unhealthy (HTTP 503)"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_kept_in_data_dir_goes_out_on_the_next_run() {
    let gw = Gw::start().await;
    let token = gw.token("frank").await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let offline = format!("http://127.0.0.1:{}", closed_port());
    let out = gw
        .run(&[
            "send",
            "--server",
            &offline,
            "--app",
            APP,
            "--token",
            &token,
            "--data-dir",
            data_dir,
            "--type",
            "first",
            "--timeout",
            "1s",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("stays queued in --data-dir"), "{out:?}");
    let first = out
        .stderr
        .split("queued id=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();

    let out = gw
        .run(&[
            "send",
            "--app",
            APP,
            "--token",
            &token,
            "--data-dir",
            data_dir,
            "--type",
            "second",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let second = out.stdout.trim().to_owned();

    let page = gw.get(&format!("/v1/inbound?app={APP}")).await;
    let stored: Vec<(&str, &str)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stored,
        [(first.as_str(), "first"), (second.as_str(), "second")],
        "queue order, each once"
    );
}
