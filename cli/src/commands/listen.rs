//! `tether listen`: a client through the SDK printing every message as one JSON line.

use super::interrupted;
use crate::args::ListenArgs;
use crate::duration;
use crate::sdk::{describe, fatal, report_error, sdk_error, Event, MessageHandler, Session};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use serde_json::value::RawValue;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tether::{ConnectionStatus, InboundMessage};
use tokio::time::Instant;

/// One stdout line.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    seq: Option<u64>,
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    data: &'a RawValue,
    ts: u64,
}

/// The line of a message (its `data` as the JSON it is, kept on one line: valid JSON has
/// no raw line breaks inside strings, so those outside are only whitespace).
pub fn json_line(message: &InboundMessage) -> String {
    let one_line = message.data_json.replace(['\n', '\r'], " ");
    let parsed = serde_json::from_str::<&RawValue>(&one_line).ok();
    let line = Line {
        kind: &message.r#type,
        id: &message.id,
        seq: message.seq,
        room: message.room.as_deref(),
        offset: message.offset,
        data: parsed.unwrap_or(RawValue::NULL),
        ts: message.ts,
    };
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Prints each message; asks to stop after `count` of them (or when stdout is closed).
fn printer(count: Option<u64>) -> MessageHandler {
    let printed = Arc::new(AtomicU64::new(0));
    Box::new(move |message| {
        if count.is_some_and(|n| printed.load(Ordering::SeqCst) >= n) {
            return true;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{}", json_line(&message))
            .and_then(|()| out.flush())
            .is_err()
        {
            return true; // stdout closed (`| head -1`): nothing left to do
        }
        let done = printed.fetch_add(1, Ordering::SeqCst) + 1;
        count.is_some_and(|n| done >= n)
    })
}

/// Runs until Ctrl-C, `--count` messages, or a refusal retrying cannot fix.
pub async fn run(args: ListenArgs) -> Result<ExitCode> {
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let mut session = Session::open(&args.connect, printer(args.count))?;
    for room in &args.room {
        if let Err(e) = session.client.join_room(room.clone()) {
            session.close().await;
            return Err(anyhow!("--room {room:?}: {}", sdk_error(&e)));
        }
    }
    eprintln!(
        "connecting to {} (app {}, device {})",
        session.url, args.connect.app, session.device
    );
    session.client.connect();
    let outcome = watch(&mut session, &args).await;
    session.close().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn watch(session: &mut Session, args: &ListenArgs) -> Result<()> {
    let deadline = (!args.connect_timeout.is_zero()).then(|| Instant::now() + args.connect_timeout);
    let mut connected = false;
    let mut ever_connected = false;
    let mut last_error: Option<String> = None;
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        let give_up = async {
            match deadline {
                Some(at) if !ever_connected => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            event = session.events.recv() => event,
            () = give_up => bail!(
                "{} (not connected within {}, giving up)",
                last_error.unwrap_or_else(|| format!("no answer from {}", session.url)),
                duration::show(args.connect_timeout),
            ),
            () = &mut stop => {
                eprintln!("interrupted, shutting down");
                return Ok(());
            }
        };
        let Some(event) = event else {
            bail!("the SDK stopped unexpectedly");
        };
        if let Some(reason) = fatal(&event, connected, last_error.as_deref()) {
            bail!("{reason}");
        }
        match event {
            Event::Done => return Ok(()),
            Event::Status(status) => {
                connected = status == ConnectionStatus::Connected;
                ever_connected |= connected;
                eprintln!("{}", describe(&status));
            }
            Event::Error(e) => report_error(&e, &session.url, &mut last_error),
            Event::StreamReset(room) => eprintln!("{}", describe_reset(room.as_deref())),
            Event::Ack(_) | Event::Expired(_) => {}
        }
    }
}

/// What a stream reset means, for stderr.
fn describe_reset(room: Option<&str>) -> String {
    let stream = match room {
        Some(room) => format!("room {room}"),
        None => "the app's broadcasts".to_owned(),
    };
    format!("missed messages of {stream} that the gateway no longer keeps; refetch its state")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message(data_json: &str) -> InboundMessage {
        InboundMessage {
            r#type: "notification".into(),
            id: "m1".into(),
            seq: Some(3),
            room: None,
            offset: None,
            data_json: data_json.into(),
            ts: 17,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_data_inline() {
        let line = json_line(&message(r#"{"text":"hi"}"#));
        assert_eq!(
            line,
            r#"{"type":"notification","id":"m1","seq":3,"room":null,"data":{"text":"hi"},"ts":17}"#
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_stream_message_line_carries_its_offset_and_a_reset_names_the_stream() {
        let mut m = message("1");
        m.room = Some("news".into());
        m.offset = Some(9);
        assert_eq!(
            json_line(&m),
            r#"{"type":"notification","id":"m1","seq":3,"room":"news","offset":9,"data":1,"ts":17}"#
        );
        assert!(describe_reset(Some("news")).contains("room news"));
        assert!(describe_reset(None).contains("app's broadcasts"));
    }

    #[test]
    fn pretty_data_stays_on_one_line() {
        let line = json_line(&message("{\n  \"a\": \"x\\ny\"\r\n}"));
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["data"]["a"], "x\ny");
    }

    #[test]
    fn data_that_is_not_json_becomes_null() {
        let line: serde_json::Value = serde_json::from_str(&json_line(&message("{nope"))).unwrap();
        assert!(line["data"].is_null());
    }
}
