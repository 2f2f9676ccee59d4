//! The HTTP API: JSON over `/api/v1` for operators and integrations, plus
//! `/healthz`.
//!
//! [`router`] merges one router per resource (`devices`, `commands`,
//! `readings`, `status`, `keys`, `audit`, `health`, and `openapi` for the
//! document). Everything under `/api/v1` except the document requires an API
//! key ([`auth`]), applied once as a route layer; each handler then names
//! the least role it needs (`extract::Require`: viewer, operator, admin). Failures are
//! [`error::ApiError`]s rendered as `{"error": {"code", "message"}}`;
//! internal ones are logged here, in a middleware, with the details clients
//! never see.
//!
//! Resources build their routes as `utoipa_axum` `OpenApiRouter`s, so the
//! same annotations give the routes and the OpenAPI document ([`openapi`]),
//! served without a key at `/api/v1/openapi.json`.
//!
//! `GET /api/v1/stream` ([`stream`]), the browsers' live WebSocket, is the
//! exception: it is merged after the key layer (the key arrives in its first
//! message) and is not in the document (it is a socket, not an operation;
//! docs/API.md describes it). `GET /api/v1/me` ([`me`]) tells a key its role.
//!
//! Limits ([`enforce_limits`]): request bodies over `--api-body-limit-bytes`
//! are refused with 413 `payload_too_large` (axum's body limit, rendered by
//! the JSON extractor), and a request running past
//! `--api-request-timeout-secs` is stopped with 503 `timeout`. Both apply to
//! these routes only, not to the device socket or `/metrics`.

mod audit;
pub mod auth;
mod commands;
mod devices;
pub mod error;
mod extract;
mod health;
mod keys;
mod me;
mod openapi;
mod readings;
pub mod status;
pub mod stream;
pub mod time;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::metrics::Limit;
use crate::state::AppState;
use auth::ApiKeyAuth;
use error::{ApiError, ErrorReport};

/// The API's routes with `state` applied, ready to merge with the device
/// gateway's routes or to serve alone (tests drive it with `oneshot`).
/// Live-stream sockets are not tracked; see [`router_with_streams`].
pub fn router(state: AppState) -> Router {
    router_with_streams(state, TaskTracker::new())
}

/// [`router`], with every live-stream socket's task tracked by `streams`,
/// so the server can wait for them at shutdown.
pub fn router_with_streams(state: AppState, streams: TaskTracker) -> Router {
    let v1 = Router::from(v1_routes())
        .route_layer(middleware::from_extractor_with_state::<ApiKeyAuth, AppState>(state.clone()))
        // After the route layer: the document needs no key, and the stream
        // takes its key in its first message.
        .merge(openapi::router())
        .merge(stream::router(streams))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found);
    Router::new()
        .merge(health::router())
        .nest("/api/v1", v1)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_internal_errors,
        ))
        .layer(DefaultBodyLimit::max(
            state.config.limits.api_body_limit_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            enforce_limits,
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
        .merge(keys::router())
        .merge(audit::router())
        .merge(me::router())
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

/// Stops a request at the API request timeout (503 `timeout`) and counts
/// the refusals of both API limits.
async fn enforce_limits(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.config.limits.api_request_timeout;
    // Both are reference-counted: cheap to keep for the rare warning.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let Ok(response) = tokio::time::timeout(timeout, next.run(request)).await else {
        state.metrics.limit(Limit::RequestTimeout);
        tracing::warn!(
            %method,
            path = uri.path(),
            timeout_secs = timeout.as_secs_f32(),
            "API request stopped at the request timeout"
        );
        return ApiError::Timeout.into_response();
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        state.metrics.limit(Limit::BodySize);
    }
    response
}
