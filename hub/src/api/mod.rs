//! The HTTP API: JSON over `/api/v1` for operators and integrations, plus
//! `/healthz`.
//!
//! [`router`] merges one router per resource (`devices`, `commands`,
//! `readings`, `health`). Everything under `/api/v1` requires an API key ([`auth`]),
//! applied once as a route layer. Failures are [`error::ApiError`]s rendered
//! as `{"error": {"code", "message"}}`; internal ones are logged here, in a
//! middleware, with the details clients never see.

pub mod auth;
mod commands;
mod devices;
pub mod error;
mod extract;
mod health;
mod readings;
pub mod time;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;
use auth::ApiKeyAuth;
use error::{ApiError, ErrorReport};

/// The API's routes with `state` applied, ready to merge with the device
/// gateway's routes or to serve alone (tests drive it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(devices::router())
        .merge(commands::router())
        .merge(readings::router())
        .route_layer(middleware::from_extractor_with_state::<ApiKeyAuth, AppState>(state.clone()))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found);
    Router::new()
        .merge(health::router())
        .nest("/api/v1", v1)
        .layer(middleware::from_fn(log_internal_errors))
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint".into()).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Logs the hidden cause of every 500/503 with the request it failed.
async fn log_internal_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Some(ErrorReport(err)) = response.extensions_mut().remove::<ErrorReport>() {
        tracing::error!(
            %method,
            path,
            status = response.status().as_u16(),
            error = %err,
            source = ?std::error::Error::source(&*err),
            "API request failed"
        );
    }
    response
}
