//! `GET /ws`: decides, before any upgrade, whether a client may connect (docs/protocol.md §2).
//!
//! Checks run in the protocol's order (origin, token, parameters, app, limits) and the
//! first that fails answers with an HTTP status and `{"error":{"code","message"}}`. A
//! client that passes is admitted to its user's connection limit, registered in the hub
//! (so live messages start queueing for it), positioned in its inbox, and only then
//! upgraded; its connection task starts with everything it needs.

use super::admission::Admitted;
use super::connection::{self, Grant, Session};
use super::origin::origin_allowed;
use super::streams;
use super::ws::upgrade;
use crate::auth::{bearer, Claims, TokenError};
use crate::broker::stream::StreamName;
use crate::broker::{Admission, Lease};
use crate::hub::{ConnInfo, Topic};
use crate::state::Shared;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use metrics::{counter, histogram};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tether_protocol::stream::StreamPosition;
use tether_protocol::{names, HttpErrorBody, HttpErrorCode};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// A refused handshake.
#[derive(Debug)]
pub struct Refusal {
    code: HttpErrorCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl Refusal {
    fn new(code: HttpErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        counter!("tether_handshakes_refused_total", "code" => self.code.as_str()).increment(1);
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response =
            (status, Json(HttpErrorBody::new(self.code, self.message))).into_response();
        if let Some(seconds) = self.retry_after_s {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The validated query parameters.
struct Params {
    app: String,
    device: Option<String>,
    since: Option<u64>,
    /// The last position processed in the app's broadcast stream.
    app_since: Option<StreamPosition>,
}

/// The `/ws` handler.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let started = Instant::now();
    let (response, outcome) = match admit(&shared, remote, &mut request).await {
        Ok(response) => (response, "accepted"),
        Err(refusal) => {
            debug!(%remote, code = refusal.code.as_str(), message = %refusal.message, "handshake refused");
            (refusal.into_response(), "refused")
        }
    };
    histogram!("tether_handshake_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn admit(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    request: &mut Request,
) -> Result<Response, Refusal> {
    if shared.draining() {
        return Err(Refusal::new(
            HttpErrorCode::ShuttingDown,
            "this node is shutting down; connect again",
        ));
    }
    let headers = request.headers();
    check_origin(shared, headers)?;
    let query: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let claims = check_token(shared, headers, &query)?;
    let accept =
        upgrade::accept_key(request.method(), request.version(), headers).map_err(|e| {
            Refusal::new(
                HttpErrorCode::InvalidParams,
                format!("not a WebSocket upgrade request: {e}"),
            )
        })?;
    let params = check_params(&query)?;
    if !claims.apps.contains(&params.app) {
        return Err(Refusal::new(
            HttpErrorCode::AppForbidden,
            format!("the token does not grant app {:?}", params.app),
        ));
    }
    check_rate(shared, remote)?;

    let info = ConnInfo {
        app: Arc::from(params.app.as_str()),
        user: Arc::from(claims.sub.as_str()),
        device: params.device.as_deref().map(Arc::from),
        user_type: Arc::from(claims.user_type()),
    };
    let id = shared.hub.allocate_id();
    let lease = Lease::of(&info, shared.hub.conn_ref(id));
    match shared
        .broker
        .admit(&lease, shared.config.max_connections_per_user)
        .await
    {
        Ok(Admission::Full) => {
            return Err(Refusal::new(
                HttpErrorCode::TooManyConnections,
                format!(
                    "user already holds {} connections to this app on other devices",
                    shared.config.max_connections_per_user
                ),
            ))
        }
        Ok(Admission::Admitted { .. }) => {}
        Err(e) => return Err(unavailable(&e)),
    }
    let mut admitted = Admitted::new(shared.clone(), id, lease);

    let registration = shared.hub.register(id, info);
    registration.cell.expire_at(connection::token_deadline_ms(
        &claims,
        shared.config.jwt.leeway_s,
    ));
    admitted.mark_registered();
    for topic in &registration.new_topics {
        shared
            .broker
            .subscribe(topic)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    let info = registration.cell.info();
    let replay = shared
        .broker
        .open_inbox(&info.app, &info.user, info.device.as_deref(), params.since)
        .await
        .map_err(|e| unavailable(&e))?;
    let app_stream = match shared.config.history_of(&StreamName::App) {
        Some(limits) => {
            // Subscribed (or waiting for another connection's subscribe on its way) before
            // the read, so nothing falls between the replay and live messages.
            let topic = Topic::App {
                app: info.app.clone(),
            };
            shared
                .broker
                .subscribe(&topic)
                .await
                .map_err(|e| unavailable(&e))?;
            let joined = streams::join(
                &*shared.broker,
                &info.app,
                &StreamName::App,
                params.app_since.as_ref(),
                limits,
            )
            .await
            .map_err(|e| unavailable(&e))?;
            if params.app_since.is_some() {
                let outcome = if joined.answer.recovered {
                    "recovered"
                } else {
                    "lost"
                };
                counter!("tether_stream_recoveries_total", "outcome" => outcome).increment(1);
            }
            Some(joined)
        }
        None => None,
    };

    let session = Session {
        shared: shared.clone(),
        grant: Grant {
            rooms: claims.rooms.map(Vec::into_boxed_slice),
        },
        remote,
        admitted,
        registration,
        replay,
        app_stream,
    };
    let on_upgrade = hyper::upgrade::on(request);
    shared
        .connections
        .spawn(connection::start(on_upgrade, Box::new(session)));
    Ok(switching_protocols(accept))
}

/// The 101 answer that completes the upgrade.
pub fn switching_protocols(accept: HeaderValue) -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The TCP stream under an upgraded connection, with bytes the client sent after its
/// request (our listener serves plain `TcpStream`s, so the downcast holds).
pub async fn upgraded_stream(on_upgrade: hyper::upgrade::OnUpgrade) -> Option<(TcpStream, Bytes)> {
    let upgraded = on_upgrade.await.ok()?;
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf))
}

fn unavailable(e: &crate::broker::BrokerError) -> Refusal {
    warn!(error = %e, "handshake refused: broker unavailable");
    Refusal::new(
        HttpErrorCode::Unavailable,
        "the gateway cannot reach its broker; retry with backoff",
    )
}

fn check_origin(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if origin_allowed(origin, &shared.config.allowed_origins) {
        Ok(())
    } else {
        Err(Refusal::new(
            HttpErrorCode::OriginForbidden,
            "this Origin may not open connections (see WS_ALLOWED_ORIGINS)",
        ))
    }
}

fn check_token(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Claims, Refusal> {
    let from_header = headers.get(header::AUTHORIZATION).map(|value| {
        value.to_str().ok().and_then(bearer).ok_or_else(|| {
            Refusal::new(
                HttpErrorCode::InvalidToken,
                "Authorization must be \"Bearer <token>\"",
            )
        })
    });
    let token = match from_header {
        Some(token) => token?,
        None => query.get("token").map(String::as_str).ok_or_else(|| {
            Refusal::new(
                HttpErrorCode::InvalidToken,
                "no token: send Authorization: Bearer <token>",
            )
        })?,
    };
    shared.verifier.verify(token).map_err(|e| match e {
        TokenError::Expired => Refusal::new(
            HttpErrorCode::TokenExpired,
            "the token has expired; get a fresh one",
        ),
        TokenError::Invalid(reason) => Refusal::new(
            HttpErrorCode::InvalidToken,
            format!("invalid token: {reason}"),
        ),
    })
}

fn check_params(query: &HashMap<String, String>) -> Result<Params, Refusal> {
    let invalid = |message: String| Refusal::new(HttpErrorCode::InvalidParams, message);
    let app = query
        .get("app")
        .ok_or_else(|| invalid("app is required (?app=<name>)".into()))?;
    names::validate_app(app).map_err(|e| invalid(e.to_string()))?;
    let device = match query.get("device") {
        Some(device) => {
            names::validate_device(device).map_err(|e| invalid(e.to_string()))?;
            Some(device.clone())
        }
        None => None,
    };
    let since = match query.get("since") {
        Some(since) => Some(
            since
                .parse::<u64>()
                .map_err(|_| invalid(format!("since must be a decimal seq (got {since:?})")))?,
        ),
        None => None,
    };
    let app_since = match (query.get("appOffset"), query.get("appEpoch")) {
        (None, None) => None,
        (Some(offset), Some(epoch)) => {
            let offset = offset.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "appOffset must be a decimal offset (got {offset:?})"
                ))
            })?;
            StreamPosition::validate_epoch(epoch).map_err(|e| invalid(format!("appEpoch: {e}")))?;
            Some(StreamPosition {
                offset,
                epoch: epoch.clone(),
            })
        }
        _ => {
            return Err(invalid(
                "appOffset and appEpoch go together (the last app stream position processed)"
                    .into(),
            ))
        }
    };
    Ok(Params {
        app: app.clone(),
        device,
        since,
        app_since,
    })
}

fn check_rate(shared: &Shared, remote: SocketAddr) -> Result<(), Refusal> {
    let Some(limiter) = &shared.handshake_limiter else {
        return Ok(());
    };
    limiter.check_key(&remote.ip()).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        Refusal {
            retry_after_s: Some(wait.as_secs().max(1)),
            ..Refusal::new(
                HttpErrorCode::RateLimited,
                "too many connection attempts from this address",
            )
        }
    })
}
