//! The HTTP side of the gateway: the backend API under `/v1` (admin key required),
//! `/health` and `/metrics` (PROTOCOL.md §9).

pub mod error;
pub mod inbound;
pub mod observe;
pub mod send;

use crate::auth::{api_key_matches, bearer};
use crate::state::Shared;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use tether_protocol::HttpErrorCode;

/// Routes of the backend API, `/health` and `/metrics`.
pub fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let v1 = Router::new()
        .route("/send/user", post(send::to_user))
        .route("/send/room", post(send::to_room))
        .route("/send/app", post(send::to_app))
        .route("/connections", delete(send::kick))
        .route("/inbound", get(inbound::read))
        .route("/stats", get(observe::stats))
        .route_layer(middleware::from_fn_with_state(shared, require_admin_key));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(observe::health))
        .route("/metrics", get(observe::metrics))
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
        Some(_) => Err(ApiError::new(HttpErrorCode::Unauthorized, "wrong API key")),
        None => Err(ApiError::new(
            HttpErrorCode::Unauthorized,
            "missing API key: send Authorization: Bearer <ADMIN_API_KEY>",
        )),
    }
}
