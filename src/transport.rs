//! The WebSocket transport: opens `wss://…/ws?app&device&since` with the token in the
//! `Authorization` header (tokio-tungstenite over rustls with the `ring` provider chosen
//! explicitly), then runs one I/O task per socket that bridges frames to two channels, so
//! the engine only ever sees [`Incoming`] and sends [`SocketCommand`]. The [`Connector`] trait
//! lets tests put a scripted gateway in place of the network.

use crate::config::Settings;
use crate::error::Error;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::close::{self, CloseCode};
use tether_protocol::error::{HttpErrorBody, HttpErrorCode};
use tether_protocol::stream::StreamPosition;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{
    self,
    client::IntoClientRequest,
    http::{header, HeaderValue},
    protocol::{frame::coding::CloseCode as WsCloseCode, CloseFrame, WebSocketConfig},
    Message,
};
use url::Url;

/// A frame from the gateway, or the end of the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// The gateway closed the socket (`None`: no close frame, the socket just died).
    Closed(Option<CloseCode>),
    /// The socket failed.
    Failed(String),
}

/// A frame for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketCommand {
    /// A text frame.
    Text(String),
    /// Close the socket with this code.
    Close(CloseCode),
}

/// An open socket as the engine sees it.
#[derive(Debug)]
pub struct Connection {
    /// Frames to send, in order. Unbounded because the engine bounds what it sends (a
    /// window of unacked messages) and must never wait on the socket.
    pub outgoing: mpsc::UnboundedSender<SocketCommand>,
    /// Frames received. Bounded: a slow engine slows the reads, not the memory.
    pub incoming: mpsc::Receiver<Incoming>,
}

/// Why an attempt failed before the upgrade completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The gateway answered with an HTTP error instead of upgrading.
    #[error("gateway refused the connection: HTTP {status} {code:?}: {message}")]
    Refused {
        /// The status.
        status: u16,
        /// The body's code, when it had one.
        code: Option<HttpErrorCode>,
        /// The body's message (or a summary).
        message: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The attempt took longer than the connect timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// DNS, TCP, TLS or WebSocket handshake failure.
    #[error("{0}")]
    Network(String),
    /// The client could not build the upgrade request (a token with characters a header
    /// cannot hold): nothing reached any gateway.
    #[error("could not build the connect request: {0}")]
    Request(String),
}

/// What the engine asks for.
#[derive(Clone)]
pub struct ConnectRequest {
    /// The full URL, query included.
    pub url: Url,
    /// The bearer token (never logged).
    pub token: String,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of every log line, even a debug dump.
        f.debug_struct("ConnectRequest")
            .field("url", &self.url.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Opens connections.
pub trait Connector: Send + Sync + 'static {
    /// Opens one connection.
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, ConnectError>> + Send>>;
}

/// Builds `…/ws?app=&device=&since=`, with `appOffset`/`appEpoch` when the app stream has a
/// position to recover from.
pub fn connect_url(
    base: &Url,
    settings: &Settings,
    since: u64,
    app_stream: Option<&StreamPosition>,
) -> Url {
    let mut url = base.clone();
    let mut query = url.query_pairs_mut();
    query
        .append_pair("app", &settings.app)
        .append_pair("device", &settings.device_id)
        .append_pair("since", &since.to_string());
    if let Some(position) = app_stream {
        query
            .append_pair("appOffset", &position.offset.to_string())
            .append_pair("appEpoch", &position.epoch);
    }
    drop(query);
    url
}

/// The real connector.
pub struct WsConnector {
    tls: Arc<rustls::ClientConfig>,
    websocket: WebSocketConfig,
    timeout: Duration,
}

impl WsConnector {
    /// A connector for these settings; fails on a bad custom root CA.
    pub fn new(settings: &Settings) -> Result<Self, Error> {
        let websocket = WebSocketConfig::default()
            // Frames are small JSON envelopes; tungstenite's defaults (128 KiB buffers,
            // 64 MiB messages) are sized for servers, not phones.
            .read_buffer_size(16 * 1024)
            .write_buffer_size(16 * 1024)
            .max_write_buffer_size(1024 * 1024)
            .max_message_size(Some(1024 * 1024))
            .max_frame_size(Some(1024 * 1024));
        Ok(WsConnector {
            tls: Arc::new(tls_config(settings.tls_root_ca_pem.as_deref())?),
            websocket,
            timeout: settings.connect_timeout,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Chosen here rather than installed process-wide, so nothing depends on (or panics
    // over) which provider another library installed.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS config: only `custom_root` when given, else the platform verifier on mobile and
/// Mozilla's roots elsewhere.
pub fn tls_config(custom_root: Option<&str>) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?;
    if let Some(pem) = custom_root {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert =
                cert.map_err(|e| Error::Config(format!("tls_root_ca_pem is not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("tls_root_ca_pem is not a CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config("tls_root_ca_pem holds no certificate".into()));
        }
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    platform_config(builder)
}

#[cfg(any(target_os = "android", target_os = "ios"))]
fn platform_config(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
) -> Result<rustls::ClientConfig, Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    #[cfg(target_os = "android")]
    if !crate::android::platform_tls_ready() {
        return Err(Error::Config(
            "the Android TLS verifier has no Context yet: call PlatformTls.init(context) \
             before creating a client (TetherAndroid.create does)"
                .into(),
        ));
    }
    // The system trust store: user and MDM-installed CAs, OS revocation checks.
    Ok(builder
        .with_platform_verifier()
        .map_err(|e| Error::Config(format!("platform TLS verifier unavailable: {e}")))?
        .with_no_client_auth())
}

#[cfg(not(any(target_os = "android", target_os = "ios")))]
fn platform_config(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
) -> Result<rustls::ClientConfig, Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

impl Connector for WsConnector {
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, ConnectError>> + Send>> {
        let tls = self.tls.clone();
        let websocket = self.websocket;
        let timeout = self.timeout;
        Box::pin(async move {
            let mut http = request
                .url
                .as_str()
                .into_client_request()
                .map_err(|e| ConnectError::Request(e.to_string()))?;
            let mut bearer =
                HeaderValue::from_str(&format!("Bearer {}", request.token)).map_err(|_| {
                    ConnectError::Request(
                        "the token holds characters an HTTP header cannot carry".into(),
                    )
                })?;
            bearer.set_sensitive(true);
            http.headers_mut().insert(header::AUTHORIZATION, bearer);
            let attempt = tokio_tungstenite::connect_async_tls_with_config(
                http,
                Some(websocket),
                true,
                Some(tokio_tungstenite::Connector::Rustls(tls)),
            );
            let (socket, _response) = match tokio::time::timeout(timeout, attempt).await {
                Err(_) => return Err(ConnectError::Timeout(timeout)),
                Ok(Err(e)) => return Err(refusal(e)),
                Ok(Ok(done)) => done,
            };
            let (out_tx, out_rx) = mpsc::unbounded_channel();
            let (in_tx, in_rx) = mpsc::channel(64);
            tokio::spawn(pump(socket, out_rx, in_tx));
            Ok(Connection {
                outgoing: out_tx,
                incoming: in_rx,
            })
        })
    }
}

fn refusal(error: tungstenite::Error) -> ConnectError {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body: Option<HttpErrorBody> = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok());
            let (code, message) = match body {
                Some(b) => (Some(b.error.code), b.error.message),
                None => (None, format!("HTTP {status} without an error body")),
            };
            ConnectError::Refused {
                status,
                code,
                message,
                retry_after,
            }
        }
        other => ConnectError::Network(other.to_string()),
    }
}

/// Moves frames between the socket and the engine until either side ends.
async fn pump<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    mut outgoing: mpsc::UnboundedReceiver<SocketCommand>,
    incoming: mpsc::Sender<Incoming>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            frame = socket.next() => {
                let event = match frame {
                    Some(Ok(Message::Text(text))) => Incoming::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(close::ABNORMAL, |f| u16::from(f.code));
                        let _ = incoming.send(Incoming::Closed(Some(code))).await;
                        // tungstenite answers the close frame; drive it out.
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                        return;
                    }
                    // Pings are answered by tungstenite; binary frames are not part of the
                    // protocol and are ignored rather than trusted.
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Incoming::Failed(e.to_string()),
                    None => Incoming::Closed(None),
                };
                let end = !matches!(event, Incoming::Text(_));
                if incoming.send(event).await.is_err() || end {
                    return;
                }
            }
            command = outgoing.recv() => match command {
                Some(SocketCommand::Text(text)) => {
                    if let Err(e) = socket.send(Message::text(text)).await {
                        let _ = incoming.send(Incoming::Failed(e.to_string())).await;
                        return;
                    }
                }
                Some(SocketCommand::Close(code)) => {
                    let frame = CloseFrame { code: WsCloseCode::from(code), reason: "".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(Some(frame))).await;
                    return;
                }
                // The engine dropped the connection: close politely, do not wait long.
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                    return;
                }
            }
        }
    }
}
