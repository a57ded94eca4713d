//! Routes the SDK's `tracing` output to the host's [`LogSink`] (Logcat, os_log). Events go
//! through a bounded queue to one thread that calls the sink, so logging never blocks the
//! engine on foreign code; when the host falls behind, lines are dropped and counted.

use crate::callbacks::{LogLevel, LogSink};
use crate::error::{Error, TetherResult};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Lines waiting for the host; beyond this they are dropped.
const QUEUE: usize = 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

struct Line {
    level: LogLevel,
    target: String,
    message: String,
}

/// The tracing layer that feeds the sink.
pub struct SinkLayer {
    max: Level,
    lines: SyncSender<Line>,
}

fn level_of(level: &Level) -> LogLevel {
    match *level {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

fn tracing_level(level: LogLevel) -> Level {
    match level {
        LogLevel::Trace => Level::TRACE,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    }
}

impl SinkLayer {
    /// A layer passing events at `max` or more severe to `sink`, from a thread of its own.
    pub fn new(sink: Arc<dyn LogSink>, max: LogLevel) -> Result<Self, Error> {
        let (lines, rx) = sync_channel::<Line>(QUEUE);
        std::thread::Builder::new()
            .name("tether-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let lost = DROPPED.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        sink.log(
                            LogLevel::Warn,
                            "tether::logging".into(),
                            format!("{lost} log lines dropped: the log sink is too slow"),
                        );
                    }
                    // A sink that throws must not take the logging thread down.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        sink.log(line.level, line.target, line.message)
                    }));
                }
            })
            .map_err(|e| Error::Config(format!("could not start the log thread: {e}")))?;
        Ok(SinkLayer {
            max: tracing_level(max),
            lines,
        })
    }

    fn wanted(&self, metadata: &Metadata<'_>) -> bool {
        // Our own lines at the chosen level; other crates' (tungstenite, rustls, sled) only
        // when they warn.
        *metadata.level() <= self.max
            && (metadata.target().starts_with("tether") || *metadata.level() <= Level::WARN)
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
            return;
        }
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
            return;
        }
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wanted(metadata)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !self.wanted(metadata) {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = Line {
            level: level_of(metadata.level()),
            target: metadata.target().to_owned(),
            message: message.0,
        };
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends the SDK's log lines at `level` and above to `sink`. Once per process: the
/// process-wide tracing subscriber can be set only once.
#[uniffi::export]
pub fn set_log_sink(sink: Arc<dyn LogSink>, level: LogLevel) -> TetherResult<()> {
    let layer = SinkLayer::new(sink, level)?;
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).map_err(|_| {
        Error::Config(
            "a log sink (or another tracing subscriber) is already installed in this process"
                .into(),
        )
        .into()
    })
}
