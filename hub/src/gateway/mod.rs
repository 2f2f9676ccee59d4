//! The device gateway: `GET /ws/device`.
//!
//! The handshake authenticates the device token and checks the subprotocol
//! *before* upgrading, so a refused device gets a plain HTTP status (401, 400)
//! and never holds a WebSocket. An accepted connection is served by
//! [`connection::serve`], tracked so shutdown can wait for it.

pub mod connection;
pub mod session;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::metrics::{DbOp, Handshake};
use crate::state::AppState;

/// The device endpoint; `connections` tracks every upgraded connection task.
pub fn router(connections: TaskTracker) -> Router<AppState> {
    Router::new().route(
        schema::DEVICE_PATH,
        get(
            move |state: State<AppState>,
                  headers: HeaderMap,
                  upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                handshake(state, headers, upgrade, connections.clone())
            },
        ),
    )
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The token from `Authorization: Bearer <token>`, if present.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == schema::SUBPROTOCOL)
}

async fn handshake(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    connections: TaskTracker,
) -> Response {
    let metrics = &state.metrics;
    let Some(token) = bearer_token(&headers) else {
        metrics.handshake(Handshake::Unauthorized);
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        );
    };
    let device = match state.store.authenticate_device(token).await {
        Ok(Some(device)) => device,
        Ok(None) => {
            metrics.handshake(Handshake::Unauthorized);
            warn!("device handshake refused: invalid or revoked token");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid or revoked device token",
            );
        }
        Err(err) => {
            metrics.handshake(Handshake::Unavailable);
            metrics.database_error(DbOp::Session);
            tracing::error!(error = %err, "device authentication failed");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "database unavailable",
            );
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            metrics.handshake(Handshake::BadProtocol);
            return rejection.into_response();
        }
    };
    if !offers_subprotocol(&headers) {
        metrics.handshake(Handshake::BadProtocol);
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
            &format!("offer Sec-WebSocket-Protocol: {}", schema::SUBPROTOCOL),
        );
    }
    metrics.handshake(Handshake::Accepted);
    let config = &state.config;
    let max_message = config.max_message_bytes as usize;
    let write_buffer = config.ws_write_buffer_bytes;
    upgrade
        .protocols([schema::SUBPROTOCOL])
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .read_buffer_size(config.ws_read_buffer_bytes)
        .write_buffer_size(write_buffer)
        // Room for one largest downlink plus the buffer; sends beyond wait.
        .max_write_buffer_size(write_buffer + max_message + 1024)
        .on_upgrade(move |socket| {
            connections.track_future(connection::serve(state, device, socket))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            "Bearer abc.def".parse().expect("header"),
        );
        assert_eq!(bearer_token(&headers), Some("abc.def"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().expect("header"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn subprotocol_must_be_offered() {
        let mut headers = HeaderMap::new();
        assert!(!offers_subprotocol(&headers));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "chat, iothub.v1".parse().expect("header"),
        );
        assert!(offers_subprotocol(&headers));
    }
}
