//! The one place host callbacks are called from: a task that takes [`HostEvent`]s in
//! order and runs the listener on a blocking thread, never while engine state is held.
//! After `on_message` returns for a user message, its seq goes back to the engine, which
//! only then moves the durable inbox cursor.

use crate::callbacks::{EventListener, InboundMessage};
use crate::engine::state::ConnectionStatus;
use crate::error::TetherError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most events handed to the listener in one trip to a blocking thread.
const BATCH: usize = 64;

/// Something to tell the host.
#[derive(Debug, Clone)]
pub enum HostEvent {
    /// `on_status`.
    Status(ConnectionStatus),
    /// `on_message`; the seq is reported back once the listener returned.
    Message(InboundMessage),
    /// `on_ack`.
    Ack(String),
    /// `on_error`.
    Error(Arc<TetherError>),
    /// `on_expired`.
    Expired(String),
}

fn guarded(what: &str, call: impl FnOnce()) {
    // A listener that throws must not kill the dispatcher (and with it every later event).
    if catch_unwind(AssertUnwindSafe(call)).is_err() {
        tracing::error!(callback = what, "the event listener failed; event dropped");
    }
}

fn deliver(listener: &dyn EventListener, event: HostEvent, processed: &mut Vec<u64>) {
    match event {
        HostEvent::Status(status) => guarded("on_status", || listener.on_status(status)),
        HostEvent::Message(message) => {
            let seq = message.seq;
            guarded("on_message", || listener.on_message(message));
            // Counted as processed even when the listener threw: otherwise one message
            // the app cannot handle would be replayed forever.
            processed.extend(seq);
        }
        HostEvent::Ack(id) => guarded("on_ack", || listener.on_ack(id)),
        HostEvent::Error(error) => guarded("on_error", || listener.on_error(error)),
        HostEvent::Expired(id) => guarded("on_expired", || listener.on_expired(id)),
    }
}

/// Runs until the engine drops its sender.
pub async fn run(
    listener: Arc<dyn EventListener>,
    mut events: mpsc::UnboundedReceiver<HostEvent>,
    processed: mpsc::UnboundedSender<u64>,
) {
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let listener = listener.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut seqs = Vec::new();
            for event in batch {
                deliver(listener.as_ref(), event, &mut seqs);
            }
            seqs
        })
        .await;
        match done {
            Ok(seqs) => {
                for seq in seqs {
                    // The engine may be gone (shutdown); nothing left to do then.
                    let _ = processed.send(seq);
                }
            }
            Err(e) => tracing::error!(error = %e, "listener thread failed"),
        }
    }
}
