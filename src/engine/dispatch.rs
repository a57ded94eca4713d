//! The one place host callbacks are called from: a task that takes [`HostEvent`]s in
//! order and runs the listener on a blocking thread, never while engine state is held.
//! After `on_message` returns for a user message (its seq) or a stream message (its
//! offset), the batch's [`Processed`] goes back to the engine, which only then moves the
//! durable inbox cursor and stream positions. The next batch waits until those are
//! written, so a crash replays at most one batch ([`BATCH`] messages) however far the
//! engine falls behind.

use crate::callbacks::{app_reason, EventListener, InboundMessage};
use crate::engine::state::ConnectionStatus;
use crate::error::TetherError;
use crate::streams::StreamKey;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::stream::StreamPosition;
use tokio::sync::{mpsc, watch};

/// Most events handed to the listener in one trip to a blocking thread, and so the most
/// messages a crash can deliver twice.
const BATCH: usize = 64;

/// How long a batch waits for the positions of the one before to be written; past that
/// (a failing disk, reported by the engine) delivery goes on, at least once.
const CURSOR_WAIT: Duration = Duration::from_secs(2);

/// What the listener processed in one batch, for the engine to write down; `batch`
/// numbers them from 1, and the engine answers on the `durable` watch with the highest
/// batch whose positions are on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processed {
    /// Which batch.
    pub batch: u64,
    /// Messages the listener returned for.
    pub messages: u64,
    /// The highest inbox seq processed.
    pub seq: Option<u64>,
    /// The last position processed per stream, in delivery order.
    pub streams: Vec<(StreamKey, StreamPosition)>,
}

impl Processed {
    fn record(&mut self, message: &InboundMessage, stream: Option<(StreamKey, StreamPosition)>) {
        self.messages += 1;
        if let Some(seq) = message.seq {
            self.seq = Some(self.seq.map_or(seq, |s| s.max(seq)));
        }
        if let Some((key, position)) = stream {
            self.streams.retain(|(k, _)| *k != key);
            self.streams.push((key, position));
        }
    }
}

/// Something to tell the host.
#[derive(Debug, Clone)]
pub enum HostEvent {
    /// `on_status`.
    Status(ConnectionStatus),
    /// `on_message`; its seq or stream position is reported back once the listener
    /// returned.
    Message {
        /// The message.
        message: InboundMessage,
        /// The stream it belongs to and its position there (stream messages only).
        stream: Option<(StreamKey, StreamPosition)>,
    },
    /// `on_stream_reset`: the room's (`None`: the app's) stream lost messages for good.
    StreamReset(Option<String>),
    /// `on_ack`.
    Ack(String),
    /// `on_error`.
    Error(Arc<TetherError>),
    /// `on_expired`.
    Expired(String),
    /// `on_replaced`: the message dropped, the one that replaced it.
    Replaced {
        /// Dropped.
        id: String,
        /// Stored.
        by: String,
    },
}

fn guarded(what: &str, call: impl FnOnce()) {
    // A listener that throws must not kill the dispatcher (and with it every later event).
    // uniffi turns a Kotlin, Swift or JavaScript exception into a panic whose text carries
    // the exception's; the log keeps its first line.
    if let Err(panic) = catch_unwind(AssertUnwindSafe(call)) {
        tracing::error!(
            callback = what,
            reason = %panic_reason(panic.as_ref()),
            "the event listener failed; event dropped"
        );
    }
}

/// What a caught panic says, as [`app_reason`] keeps it.
fn panic_reason(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<String>() {
        app_reason(text)
    } else if let Some(text) = panic.downcast_ref::<&str>() {
        app_reason(text)
    } else {
        "no message".to_owned()
    }
}

fn deliver(listener: &dyn EventListener, event: HostEvent, processed: &mut Processed) {
    match event {
        HostEvent::Status(status) => guarded("on_status", || listener.on_status(status)),
        HostEvent::Message { message, stream } => {
            let done = message.clone();
            guarded("on_message", || listener.on_message(message));
            // Counted as processed even when the listener threw: otherwise one message
            // the app cannot handle would be replayed forever.
            processed.record(&done, stream);
        }
        HostEvent::StreamReset(room) => {
            guarded("on_stream_reset", || listener.on_stream_reset(room));
        }
        HostEvent::Ack(id) => guarded("on_ack", || listener.on_ack(id)),
        HostEvent::Error(error) => guarded("on_error", || listener.on_error(error)),
        HostEvent::Expired(id) => guarded("on_expired", || listener.on_expired(id)),
        HostEvent::Replaced { id, by } => {
            guarded("on_replaced", || listener.on_replaced(id, by));
        }
    }
}

/// Runs until the engine drops its sender. `durable` is the highest batch whose
/// positions the engine wrote.
pub async fn run(
    listener: Arc<dyn EventListener>,
    mut events: mpsc::UnboundedReceiver<HostEvent>,
    processed: mpsc::UnboundedSender<Processed>,
    mut durable: watch::Receiver<u64>,
) {
    let mut batches = 0;
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
            let mut done = Processed::default();
            for event in batch {
                deliver(listener.as_ref(), event, &mut done);
            }
            done
        })
        .await;
        match done {
            Ok(mut done) if done.messages > 0 => {
                batches += 1;
                done.batch = batches;
                // The engine may be gone (shutdown); nothing left to do then.
                let _ = processed.send(done);
                let written = durable.wait_for(|batch| *batch >= batches);
                if tokio::time::timeout(CURSOR_WAIT, written).await.is_err() {
                    tracing::warn!(batch = batches, "positions not written yet; delivering on");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "listener thread failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::InboundMessage;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<u64>>);

    impl EventListener for Seen {
        fn on_status(&self, _status: ConnectionStatus) {}
        fn on_message(&self, message: InboundMessage) {
            self.0.lock().unwrap().extend(message.seq);
        }
        fn on_ack(&self, _id: String) {}
        fn on_error(&self, _error: Arc<TetherError>) {}
        fn on_expired(&self, _id: String) {}
        fn on_replaced(&self, _id: String, _by: String) {}
        fn on_stream_reset(&self, _room: Option<String>) {}
    }

    fn message(seq: u64) -> HostEvent {
        HostEvent::Message {
            message: InboundMessage {
                r#type: "n".into(),
                id: format!("m{seq}"),
                seq: Some(seq),
                offset: None,
                room: None,
                data_json: "null".into(),
                ts: 0,
            },
            stream: None,
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    /// Waits (up to 10 s) until the listener has seen `n` messages.
    async fn until_seen(seen: &Seen, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.0.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn a_listener_failure_is_logged_with_the_first_line_of_its_text() {
        let panic = catch_unwind(|| {
            // As uniffi words it: a String payload.
            let exception = "java.lang.IllegalStateException: boom\n\tat A.b(A.kt:1)";
            panic!("Callback interface failure: {exception}")
        })
        .unwrap_err();
        assert_eq!(
            panic_reason(panic.as_ref()),
            "Callback interface failure: java.lang.IllegalStateException: boom"
        );
        let panic = catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(panic_reason(panic.as_ref()), "no message");
    }

    #[tokio::test]
    async fn a_batch_waits_until_the_cursor_of_the_one_before_is_written() {
        let seen = Arc::new(Seen::default());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (processed_tx, mut processed) = mpsc::unbounded_channel();
        let (durable, durable_rx) = watch::channel(0);
        for seq in 1..=200 {
            events_tx.send(message(seq)).unwrap();
        }
        tokio::spawn(run(seen.clone(), events, processed_tx, durable_rx));
        let count = || seen.0.lock().unwrap().len();
        until_seen(&seen, BATCH).await;
        settle().await;
        assert_eq!(count(), BATCH, "one batch, then a wait for its cursor");
        let mut reported = Vec::new();
        while let Ok(done) = processed.try_recv() {
            reported.push(done);
        }
        assert_eq!(
            reported,
            [Processed {
                batch: 1,
                messages: BATCH as u64,
                seq: Some(BATCH as u64),
                streams: Vec::new()
            }]
        );

        durable.send_replace(0);
        settle().await;
        assert_eq!(count(), BATCH, "not before the batch is written");
        durable.send_replace(1);
        until_seen(&seen, 2 * BATCH).await;
        settle().await;
        assert_eq!(count(), 2 * BATCH, "the next batch once it is");
        durable.send_replace(4);
        until_seen(&seen, 200).await;
        assert_eq!(count(), 200);
    }

    #[tokio::test]
    async fn a_cursor_that_is_never_written_delays_delivery_but_does_not_stop_it() {
        let seen = Arc::new(Seen::default());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (processed_tx, _processed) = mpsc::unbounded_channel();
        let (_durable, durable_rx) = watch::channel(0);
        for seq in 1..=100 {
            events_tx.send(message(seq)).unwrap();
        }
        tokio::spawn(run(seen.clone(), events, processed_tx, durable_rx));
        until_seen(&seen, 100).await;
        assert_eq!(seen.0.lock().unwrap().len(), 100);
    }
}
