//! The HTTP API: JSON over `/api/v1` for operators and integrations, plus
//! `/healthz`.
//!
//! [`router`] merges one router per resource (`devices`, `commands`,
//! `readings`, `status`, `health`, and `openapi` for the document).
//! Everything under `/api/v1` except the document requires an API key
//! ([`auth`]), applied once as a route layer. Failures are
//! [`error::ApiError`]s rendered as `{"error": {"code", "message"}}`;
//! internal ones are logged here, in a middleware, with the details clients
//! never see.
//!
//! Resources build their routes as `utoipa_axum` `OpenApiRouter`s, so the
//! same annotations give the routes and the OpenAPI document ([`openapi`]),
//! served without a key at `/api/v1/openapi.json`.

pub mod auth;
mod commands;
mod devices;
pub mod error;
mod extract;
mod health;
mod openapi;
mod readings;
pub mod status;
pub mod time;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;
use auth::ApiKeyAuth;
use error::{ApiError, ErrorReport};

/// The API's routes with `state` applied, ready to merge with the device
/// gateway's routes or to serve alone (tests drive it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let v1 = Router::from(v1_routes())
        .route_layer(middleware::from_extractor_with_state::<ApiKeyAuth, AppState>(state.clone()))
        // After the route layer: the document needs no key.
        .merge(openapi::router())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found);
    Router::new()
        .merge(health::router())
        .nest("/api/v1", v1)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_internal_errors,
        ))
        .with_state(state)
}

/// The routes under `/api/v1` that need an API key, with their operations.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(devices::router())
        .merge(commands::router())
        .merge(readings::router())
        .merge(status::router())
}

/// The OpenAPI document of [`router`]'s routes, as served at
/// `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let v1 = v1_routes().merge(openapi::router());
    openapi::document(health::router().into_openapi(), v1.into_openapi())
}

async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint".into()).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Logs the hidden cause of every 500/503 with the request it failed, and
/// counts it in `hub_database_errors_total{op="api"}`.
async fn log_internal_errors(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Some(ErrorReport(err)) = response.extensions_mut().remove::<ErrorReport>() {
        state.metrics.database_error(crate::metrics::DbOp::Api);
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
