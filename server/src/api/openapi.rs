//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of this API (`server/openapi.json`),
//! served without the admin key: it describes the API and holds no data.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as kept in the repository.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// Serves [`DOCUMENT`].
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
