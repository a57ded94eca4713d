//! One SDK client for `listen` and `send`: the config from the flags, a token provider
//! that hands out the token given, a listener forwarding the SDK's events to the command,
//! and the database directory (temporary unless `--data-dir`).

use crate::args::ConnectArgs;
use anyhow::{anyhow, Context, Result};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tether::{
    ClientConfig, ConnectionStatus, EventListener, InboundMessage, TetherClient, TetherError,
    TokenError, TokenProvider,
};
use tokio::sync::mpsc;

/// What the SDK reported, in its order (messages are handled in the callback itself).
#[derive(Debug)]
pub enum Event {
    /// `on_status`.
    Status(ConnectionStatus),
    /// `on_ack`.
    Ack(String),
    /// `on_error`.
    Error(Arc<TetherError>),
    /// `on_expired`.
    Expired(String),
    /// `on_stream_reset`: the room's (`None`: the app's) stream lost messages.
    StreamReset(Option<String>),
    /// The message handler asked the command to stop (`listen --count`).
    Done,
}

/// Called for each message on the SDK's dispatcher thread; when it returns the SDK counts
/// the message as processed. `true` asks the command to stop.
pub type MessageHandler = Box<dyn Fn(InboundMessage) -> bool + Send + Sync>;

struct Forward {
    events: mpsc::UnboundedSender<Event>,
    on_message: MessageHandler,
}

impl EventListener for Forward {
    fn on_status(&self, status: ConnectionStatus) {
        let _ = self.events.send(Event::Status(status));
    }
    fn on_message(&self, message: InboundMessage) {
        if (self.on_message)(message) {
            let _ = self.events.send(Event::Done);
        }
    }
    fn on_ack(&self, id: String) {
        let _ = self.events.send(Event::Ack(id));
    }
    fn on_error(&self, error: Arc<TetherError>) {
        let _ = self.events.send(Event::Error(error));
    }
    fn on_expired(&self, id: String) {
        let _ = self.events.send(Event::Expired(id));
    }
    // The CLI sends without replace keys: nothing is ever replaced.
    fn on_replaced(&self, _id: String, _by: String) {}
    fn on_stream_reset(&self, room: Option<String>) {
        let _ = self.events.send(Event::StreamReset(room));
    }
}

/// The token from the command line, every time the SDK asks.
struct FixedToken(String);

#[async_trait::async_trait]
impl TokenProvider for FixedToken {
    async fn fetch_token(&self) -> Result<Option<String>, TokenError> {
        Ok(Some(self.0.clone()))
    }
}

/// Where the database lives.
enum Store {
    Temporary(tempfile::TempDir),
    Kept(std::path::PathBuf),
}

impl Store {
    fn path(&self) -> &std::path::Path {
        match self {
            Store::Temporary(dir) => dir.path(),
            Store::Kept(path) => path,
        }
    }
}

/// A running SDK client.
pub struct Session {
    /// The client.
    pub client: Arc<TetherClient>,
    /// Its events.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The WebSocket URL it connects to.
    pub url: String,
    /// Its device id.
    pub device: String,
    store: Store,
}

impl Session {
    /// Opens the database and starts the client (not connected yet).
    pub fn open(args: &ConnectArgs, on_message: MessageHandler) -> Result<Session> {
        let url = ws_url(args)?;
        let device = args.device.clone().unwrap_or_else(new_device_id);
        if args.token.trim().is_empty() {
            return Err(anyhow!("--token is empty"));
        }
        let store = match &args.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create --data-dir {}", dir.display()))?;
                Store::Kept(dir.clone())
            }
            None => Store::Temporary(
                tempfile::Builder::new()
                    .prefix("tether-cli-")
                    .tempdir()
                    .context("cannot create a temporary directory for the SDK's database")?,
            ),
        };
        let config = ClientConfig::new(
            url.clone(),
            args.app.clone(),
            device.clone(),
            store.path().to_string_lossy().into_owned(),
        );
        let (tx, events) = mpsc::unbounded_channel();
        let listener = Arc::new(Forward {
            events: tx,
            on_message,
        });
        let tokens = Arc::new(FixedToken(args.token.trim().to_owned()));
        let client = TetherClient::new(config, listener, tokens).map_err(|e| sdk_error(&e))?;
        Ok(Session {
            client,
            events,
            url,
            device,
            store,
        })
    }

    /// Whether the database outlives this run.
    pub fn keeps_queue(&self) -> bool {
        matches!(self.store, Store::Kept(_))
    }

    /// Stops the client and releases its database (then the temporary one is removed).
    pub async fn close(self) {
        self.client.shutdown().await;
        drop(self.store);
    }
}

/// The SDK's error as one line (`invalid config: url ...`).
pub fn sdk_error(e: &TetherError) -> anyhow::Error {
    anyhow!("{}", e.message())
}

/// `--url`, or `--server` turned into a WebSocket URL (`http` → `ws`, `https` → `wss`,
/// path `/ws`).
pub fn ws_url(args: &ConnectArgs) -> Result<String> {
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    let mut url = args.server.server.clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| anyhow!("cannot make a WebSocket URL from {}", args.server.server))?;
    url.set_path(tether::protocol::WS_PATH);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// A device id for this run: `cli-` and 12 hex digits from the clock and the process id.
fn new_device_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    format!("cli-{nanos:08x}{:04x}", std::process::id() & 0xffff)
}

/// An SDK error as a line for stderr; a network failure names the URL and the cause the
/// way `curl` would (`cannot reach ws://127.0.0.1:1/ws: connection refused`).
pub fn error_text(e: &TetherError, url: &str) -> String {
    let message = e.message();
    if e.kind() != tether::ErrorKind::Network {
        return message;
    }
    let mut reason = message.trim_start_matches("IO error: ").to_owned();
    if let Some(at) = reason.find(" (os error ") {
        reason.truncate(at);
    }
    if let Some(first) = reason.get(..1) {
        if reason
            .get(1..2)
            .is_some_and(|c| c.chars().all(char::is_lowercase))
        {
            reason = format!("{}{}", first.to_lowercase(), &reason[1..]);
        }
    }
    format!("cannot reach {url}: {reason}")
}

/// Prints an SDK error on stderr and keeps it as the last one; a retry loop repeats the
/// same failure, so an error equal to the last one is not printed again.
pub fn report_error(e: &TetherError, url: &str, last_error: &mut Option<String>) {
    let text = error_text(e, url);
    if last_error.as_deref() != Some(text.as_str()) {
        eprintln!("error: {text}");
    }
    *last_error = Some(text);
}

/// A status change as a line for stderr.
pub fn describe(status: &ConnectionStatus) -> String {
    match status {
        ConnectionStatus::Idle => "idle".into(),
        ConnectionStatus::Connecting => "connecting...".into(),
        ConnectionStatus::Connected => "connected".into(),
        ConnectionStatus::Reconnecting {
            attempt,
            retry_in_ms,
        } => format!("reconnecting in {retry_in_ms} ms (attempt {attempt})"),
        ConnectionStatus::WaitingForNetwork => "waiting for the network".into(),
        ConnectionStatus::Suspended => "suspended".into(),
        ConnectionStatus::Disconnected => "disconnected".into(),
        ConnectionStatus::Failed { reason } => format!("failed: {reason}"),
    }
}

/// The error that ends a command, if this event is one: the client gave up (`Failed`),
/// the gateway said to stay away (`Disconnected`: kicked, or the same device connected
/// elsewhere), or it refused the token at a handshake (a fixed token never gets better).
pub fn fatal(event: &Event, connected: bool, last_error: Option<&str>) -> Option<String> {
    let with_last = |what: &str| match last_error {
        Some(last) => format!("{what} ({last})"),
        None => what.to_owned(),
    };
    match event {
        Event::Status(ConnectionStatus::Failed { reason }) => {
            Some(format!("the connection failed: {reason}"))
        }
        Event::Status(ConnectionStatus::Disconnected) => Some(with_last(
            "the gateway closed the connection and said not to reconnect",
        )),
        Event::Error(e) if !connected && e.kind() == tether::ErrorKind::Auth => Some(e.message()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::args::ServerArgs;

    fn args(server: &str, url: Option<&str>) -> ConnectArgs {
        ConnectArgs {
            server: ServerArgs {
                server: url::Url::parse(server).unwrap(),
            },
            url: url.map(str::to_owned),
            app: "demo".into(),
            token: "t".into(),
            device: None,
            data_dir: None,
        }
    }

    #[test]
    fn the_ws_url_follows_the_server() {
        assert_eq!(
            ws_url(&args("http://127.0.0.1:8080", None)).unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url(&args("https://gw.example.com/base?x=1", None)).unwrap(),
            "wss://gw.example.com/ws"
        );
        assert_eq!(
            ws_url(&args("http://x", Some("ws://y:1/ws"))).unwrap(),
            "ws://y:1/ws"
        );
    }

    #[test]
    fn network_errors_read_like_curls() {
        let e = TetherError::new(
            tether::ErrorKind::Network,
            "IO error: Connection refused (os error 111)",
        );
        assert_eq!(
            error_text(&e, "ws://127.0.0.1:1/ws"),
            "cannot reach ws://127.0.0.1:1/ws: connection refused"
        );
        let e = TetherError::new(tether::ErrorKind::Auth, "gateway refused the token: x");
        assert_eq!(error_text(&e, "ws://h/ws"), "gateway refused the token: x");
    }

    #[test]
    fn device_ids_are_valid() {
        let id = new_device_id();
        tether::protocol::names::validate_device(&id).unwrap();
        assert!(id.starts_with("cli-"));
    }

    #[test]
    fn refusals_end_the_command_only_where_retrying_cannot_help() {
        let auth = || {
            Event::Error(Arc::new(TetherError::new(
                tether::ErrorKind::Auth,
                "gateway refused the token: bad signature",
            )))
        };
        assert!(fatal(&auth(), false, None)
            .unwrap()
            .contains("bad signature"));
        // A room refused while connected is reported, not fatal.
        assert!(fatal(&auth(), true, None).is_none());
        let network = Event::Error(Arc::new(TetherError::new(
            tether::ErrorKind::Network,
            "refused",
        )));
        assert!(fatal(&network, false, None).is_none());
        let down = fatal(
            &Event::Status(ConnectionStatus::Disconnected),
            true,
            Some("kicked"),
        )
        .unwrap();
        assert!(down.contains("kicked"), "{down}");
    }
}
