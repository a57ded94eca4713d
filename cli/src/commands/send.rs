//! `tether send`: one app message through the SDK's durable queue, acknowledged by the
//! gateway (so the backend sees it in `GET /v1/inbound`) before the command succeeds.

use super::interrupted;
use crate::args::SendArgs;
use crate::duration;
use crate::json;
use crate::sdk::{describe, fatal, report_error, sdk_error, Event, Session};
use anyhow::{bail, Result};
use std::process::ExitCode;
use tether::{ConnectionStatus, ErrorKind};

/// Queues, connects, waits for the ack; prints the message id.
pub async fn run(args: SendArgs) -> Result<ExitCode> {
    let data = json::payload(&args.data)?;
    // Messages other devices sent this user are not this command's business.
    let mut session = Session::open(&args.connect, Box::new(|_| false))?;
    let id = match session
        .client
        .send_message(args.kind.clone(), data.get().to_owned())
        .await
    {
        Ok(id) => id,
        Err(e) => {
            session.close().await;
            return Err(sdk_error(&e).context(format!("cannot queue the {:?} message", args.kind)));
        }
    };
    eprintln!("queued id={id}, connecting to {}", session.url);
    session.client.connect();
    let outcome = wait_for_ack(&mut session, &id, &args).await;
    let keeps = session.keeps_queue();
    session.close().await;
    match outcome {
        Ok(()) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if keeps => Err(e.context(format!(
            "message {id} stays queued in --data-dir and goes out on the next run with it"
        ))),
        Err(e) => Err(e.context(format!("message {id} was not delivered"))),
    }
}

async fn wait_for_ack(session: &mut Session, id: &str, args: &SendArgs) -> Result<()> {
    let deadline = tokio::time::sleep(args.timeout);
    tokio::pin!(deadline);
    let stop = interrupted();
    tokio::pin!(stop);
    let mut connected = false;
    let mut last_error: Option<String> = None;
    loop {
        let event = tokio::select! {
            event = session.events.recv() => event,
            () = &mut deadline => bail!(
                "no ack within {}{}",
                duration::show(args.timeout),
                match (&last_error, connected) {
                    (Some(e), _) => format!(" (last error: {e})"),
                    (None, false) => format!(" (not connected to {})", session.url),
                    (None, true) => String::new(),
                }
            ),
            () = &mut stop => bail!("interrupted before the ack"),
        };
        let Some(event) = event else {
            bail!("the SDK stopped unexpectedly");
        };
        if let Some(reason) = fatal(&event, connected, last_error.as_deref()) {
            bail!("{reason}");
        }
        match event {
            Event::Ack(acked) if acked == id => return Ok(()),
            Event::Expired(expired) if expired == id => {
                bail!("the message expired before it could be delivered")
            }
            Event::Error(e)
                if e.kind() == ErrorKind::InvalidMessage && e.message().contains(id) =>
            {
                bail!("the gateway refused the message: {}", e.message())
            }
            Event::Status(status) => {
                connected = status == ConnectionStatus::Connected;
                if connected {
                    eprintln!("connected, waiting for the ack of {id}");
                } else {
                    eprintln!("{}", describe(&status));
                }
            }
            Event::Error(e) => report_error(&e, &session.url, &mut last_error),
            Event::Ack(_) | Event::Expired(_) | Event::StreamReset(_) | Event::Done => {}
        }
    }
}
