//! Accepting TCP connections and serving HTTP/1.1 on them (the WebSocket upgrade, the API).
//!
//! An explicit accept loop instead of `axum::serve`, for what a gateway facing the public
//! internet needs: `TCP_NODELAY` (small frames must not wait for Nagle), a deadline for
//! the request head (a slowloris client sending one header byte a minute is dropped
//! after `WS_HANDSHAKE_TIMEOUT`), a small per-connection read buffer, accept errors (such
//! as running out of file descriptors) survived with a short pause, and a graceful
//! stop that lets in-flight requests finish.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Largest request head accepted; the upgrade request is small.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long in-flight HTTP requests may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` is cancelled. A client has `head_timeout` to
/// send its request head.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    head_timeout: Duration,
    stop: CancellationToken,
) {
    let requests = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE, ENFILE, ECONNABORTED...: the listener itself is fine; wait a
                    // moment so a full descriptor table does not spin the loop.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        // The task ends when the HTTP connection does: after an upgrade that is at once
        // (the WebSocket lives on in its own task), for API clients after keep-alive.
        requests.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, %remote, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    requests.close();
    if tokio::time::timeout(DRAIN, requests.wait()).await.is_err() {
        debug!("some HTTP requests were still running at shutdown");
    }
}
