//! The device gateway: `GET /ws/device`.
//!
//! The handshake authenticates the device (token and/or verified client
//! certificate, see [`auth`]) and checks the subprotocol *before*
//! upgrading, so a refused device gets a plain HTTP status (401, 400) and
//! never holds a WebSocket. An accepted connection is served by
//! [`connection::serve`], tracked so shutdown can wait for it.
//!
//! Before the token is looked up: a browser `Origin` not on the allow-list
//! is refused (403, [`origin_allowed`]), and a source address with too many
//! failed authentications is refused (429 with `Retry-After`, see
//! [`crate::throttle`]) without asking the database.

pub mod auth;
pub mod connect_batch;
pub mod connection;
pub mod rate;
pub mod session;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::metrics::{DbOp, Handshake, Limit};
use crate::state::AppState;
use crate::throttle::{PeerAddr, Throttled};
use crate::tls::PeerCertificate;
use auth::AuthRefusal;

/// The device endpoint; `connections` tracks every upgraded connection task.
pub fn router(connections: TaskTracker) -> Router<AppState> {
    Router::new().route(
        schema::DEVICE_PATH,
        get(
            move |state: State<AppState>,
                  peer: PeerAddr,
                  certificate: Option<Extension<PeerCertificate>>,
                  headers: HeaderMap,
                  upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                let certificate = certificate.map(|Extension(certificate)| certificate);
                handshake(
                    state,
                    peer,
                    certificate,
                    headers,
                    upgrade,
                    connections.clone(),
                )
            },
        ),
    )
}

/// A JSON error answer (`{"error":{"code","message"}}`) before an upgrade;
/// 401s also carry `WWW-Authenticate: Bearer`.
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
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

/// Whether a request passes the browser Origin allow-list: one without an
/// `Origin` header (devices, tools: not a browser) passes; a browser's
/// origin must be exactly one of `allowed`.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    headers.get_all(header::ORIGIN).iter().all(|origin| {
        origin
            .to_str()
            .is_ok_and(|origin| allowed.iter().any(|a| a == origin))
    })
}

/// The 403 for an Origin not on the allow-list.
pub fn forbidden_origin() -> Response {
    refuse(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        "this Origin may not open this WebSocket",
    )
}

/// The 429 for an address over its failed-authentication budget.
pub fn throttled(throttled: Throttled) -> Response {
    let mut response = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        &throttled.to_string(),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, throttled.retry_after_secs.into());
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
    PeerAddr(peer): PeerAddr,
    certificate: Option<PeerCertificate>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    connections: TaskTracker,
) -> Response {
    let metrics = &state.metrics;
    if !origin_allowed(&headers, &state.config.limits.allowed_origins) {
        metrics.handshake(Handshake::ForbiddenOrigin);
        metrics.limit(Limit::Origin);
        warn!(origin = ?headers.get(header::ORIGIN), "device handshake refused: Origin not allowed");
        return forbidden_origin();
    }
    if let Some(refused) = peer.and_then(|ip| state.auth_throttle.check(ip).err()) {
        metrics.handshake(Handshake::Throttled);
        metrics.limit(Limit::AuthThrottle);
        return throttled(refused);
    }
    let token = bearer_token(&headers);
    let device = match auth::authenticate(
        &state.connects,
        &state.store,
        token,
        certificate.as_ref(),
    )
    .await
    {
        Ok(device) => device,
        Err(AuthRefusal::Unavailable(err)) => {
            metrics.handshake(Handshake::Unavailable);
            metrics.database_error(DbOp::Session);
            tracing::error!(error = %err, "device authentication failed");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "database unavailable",
            );
        }
        Err(refusal) => {
            metrics.handshake(Handshake::Unauthorized);
            if refusal.is_failed_attempt() {
                if let Some(ip) = peer {
                    state.auth_throttle.failed(ip);
                }
                warn!(%refusal, "device handshake refused");
            }
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &refusal.to_string(),
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
    fn origin_must_be_on_the_list_when_present() {
        let allowed = vec!["https://console.example".to_owned()];
        let mut headers = HeaderMap::new();
        assert!(
            origin_allowed(&headers, &allowed),
            "no Origin: not a browser"
        );
        assert!(origin_allowed(&headers, &[]));
        headers.insert(
            header::ORIGIN,
            "https://console.example".parse().expect("header"),
        );
        assert!(origin_allowed(&headers, &allowed));
        assert!(!origin_allowed(&headers, &[]));
        headers.insert(
            header::ORIGIN,
            "https://console.example.evil".parse().expect("header"),
        );
        assert!(!origin_allowed(&headers, &allowed));
        headers.insert(header::ORIGIN, "null".parse().expect("header"));
        assert!(!origin_allowed(&headers, &allowed));
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
