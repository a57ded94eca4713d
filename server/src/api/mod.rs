//! The HTTP side of the gateway: the backend API under `/v1` (admin key required),
//! `/health`, `/metrics` and the API's OpenAPI document (docs/protocol.md §9).
//!
//! Every endpoint is one row of [`table`]: the router is built from it and [`endpoints`]
//! lists it, so the OpenAPI test (`server/tests/openapi.rs`) sees exactly what is served.

pub mod error;
pub mod history;
pub mod inbound;
pub mod inbox;
pub mod keyed_request;
pub mod observe;
pub mod openapi;
pub mod params;
pub mod presence;
pub mod rooms;
pub mod send;

use crate::auth::{api_key_matches, bearer};
use crate::state::Shared;
use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use error::ApiError;
use metrics::{counter, histogram};
use std::sync::Arc;
use std::time::Instant;
use tether_protocol::HttpErrorCode;
use tracing::debug;

/// The HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `DELETE`
    Delete,
}

impl Verb {
    /// The method as OpenAPI names it (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// `Authorization: Bearer <ADMIN_API_KEY>` required.
    AdminKey,
    /// No credentials.
    Public,
}

/// One endpoint of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Full path, as in the OpenAPI document.
    pub path: &'static str,
    /// Method.
    pub verb: Verb,
    /// Credentials needed.
    pub access: Access,
}

type Row = (Endpoint, MethodRouter<Arc<Shared>>);

fn row<H, T>(verb: Verb, path: &'static str, access: Access, handler: H) -> Row
where
    H: Handler<T, Arc<Shared>>,
    T: 'static,
{
    let endpoint = Endpoint { path, verb, access };
    (endpoint, on(verb.filter(), handler))
}

/// Every endpoint with its handler: the single source of the router and of [`endpoints`].
fn table() -> Vec<Row> {
    use Access::{AdminKey, Public};
    use Verb::{Delete, Get, Post};
    vec![
        row(Post, "/v1/send/user", AdminKey, send::to_user),
        row(Post, "/v1/send/users", AdminKey, send::to_users),
        row(Post, "/v1/send/room", AdminKey, send::to_room),
        row(Post, "/v1/send/app", AdminKey, send::to_app),
        row(Delete, "/v1/connections", AdminKey, send::kick),
        row(Get, "/v1/inbound", AdminKey, inbound::read),
        row(Get, "/v1/presence", AdminKey, presence::read),
        row(Get, "/v1/rooms", AdminKey, rooms::read),
        row(Get, "/v1/inbox", AdminKey, inbox::read),
        row(Get, "/v1/history", AdminKey, history::read),
        row(Get, "/v1/stats", AdminKey, observe::stats),
        row(Get, "/v1/openapi.json", Public, openapi::document),
        row(Get, "/health", Public, observe::health),
        row(Get, "/metrics", Public, observe::metrics),
    ]
}

/// The endpoints [`routes`] serves.
pub fn endpoints() -> Vec<Endpoint> {
    table().into_iter().map(|(endpoint, _)| endpoint).collect()
}

/// Routes of the backend API, `/health`, `/metrics` and `/v1/openapi.json`.
pub fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let mut admin = Router::new();
    let mut public = Router::new();
    for (endpoint, handler) in table() {
        match endpoint.access {
            Access::AdminKey => admin = admin.route(endpoint.path, handler),
            Access::Public => public = public.route(endpoint.path, handler),
        }
    }
    let admin = admin.route_layer(middleware::from_fn_with_state(shared, require_admin_key));
    public
        .merge(admin)
        .route_layer(middleware::from_fn(count_requests))
        .layer(middleware::map_response(json_errors))
}

/// Every error of the API has the JSON error body, also the 405 and 413 that the router
/// and the body limit answer on their own (empty or plain text otherwise).
async fn json_errors(response: Response) -> Response {
    let (code, message) = match response.status() {
        StatusCode::METHOD_NOT_ALLOWED => (
            HttpErrorCode::MethodNotAllowed,
            "this route does not take that method; see the Allow header",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            HttpErrorCode::PayloadTooLarge,
            "the request body is larger than the API accepts",
        ),
        _ => return response,
    };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut answer = ApiError::new(code, message).into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

/// `tether_api_requests_total{route, status}` and `tether_api_request_duration_seconds{route}`,
/// refusals by the admin-key check included.
/// The route is the matched pattern from [`table`], so the label set stays small.
async fn count_requests(route: MatchedPath, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    histogram!("tether_api_request_duration_seconds", "route" => route.as_str().to_owned())
        .record(started.elapsed().as_secs_f64());
    counter!(
        "tether_api_requests_total",
        "route" => route.as_str().to_owned(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

async fn require_admin_key(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &shared.config.admin_api_key else {
        return Err(ApiError::new(
            HttpErrorCode::Unauthorized,
            "the backend API is disabled: set ADMIN_API_KEY on the gateway",
        ));
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(key) if api_key_matches(key, &expected.0) => Ok(next.run(request).await),
        Some(_) => {
            debug!(path = %request.uri().path(), "admin API call refused: wrong key");
            Err(ApiError::new(HttpErrorCode::Unauthorized, "wrong API key"))
        }
        None => Err(ApiError::new(
            HttpErrorCode::Unauthorized,
            "missing API key: send Authorization: Bearer <ADMIN_API_KEY>",
        )),
    }
}
