//! `GET /api/v1/stream`: the live WebSocket for browsers (the console).
//!
//! Presence of every device, telemetry of the devices a client subscribed
//! to, every command status change and once-a-second hub stats, as JSON
//! text messages (docs/API.md, "Live stream").
//!
//! The route sits outside the Bearer-key route layer and outside the
//! OpenAPI document: browsers cannot set headers on a WebSocket, so the key
//! arrives in the first message ([`client`]), and the socket is not an HTTP
//! operation. The API's request timeout does not reach it: the handler
//! returns the `101` at once and the socket is served by its own task,
//! tracked with the device connections so shutdown waits for it (bounded)
//! after closing it with 1001.
//!
//! Before the upgrade: an `Origin` must be absent, the hub's own origin
//! (`http(s)://<Host>`: the console is served by the hub) or on
//! `--allowed-origins` (403 `forbidden_origin` otherwise, counted as limit
//! `origin`), and an address with too many failed authentications is
//! refused with 429 and `Retry-After`.
//!
//! - [`protocol`]: the messages and close codes;
//! - [`fanout`]: one dispatcher forwarding hub events to the clients that want them;
//! - [`client`]: one connection's task;
//! - [`snapshot`]: the device list a snapshot carries.

pub mod client;
pub mod fanout;
pub mod protocol;
pub mod snapshot;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::gateway::{forbidden_origin, origin_allowed, refuse, throttled};
use crate::metrics::Limit;
use crate::state::AppState;
use crate::throttle::PeerAddr;
use fanout::Fanout;

/// The stream's path under `/api/v1`.
pub const PATH: &str = "/stream";

/// Largest message a browser may send: `subscribe` with 1000 ids fits in
/// about 20 KiB; the API's body limit bounds it the same way.
fn max_message_bytes(state: &AppState) -> usize {
    state.config.limits.api_body_limit_bytes.max(32 * 1024)
}

/// The stream route, relative to `/api/v1`; `connections` tracks each socket's task.
pub fn router(connections: TaskTracker) -> Router<AppState> {
    let fanout = Arc::new(Fanout::default());
    Router::new().route(
        PATH,
        get(
            move |state: State<AppState>,
                  peer: PeerAddr,
                  headers: HeaderMap,
                  upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                handshake(
                    state,
                    peer,
                    headers,
                    upgrade,
                    Arc::clone(&fanout),
                    connections.clone(),
                )
            },
        ),
    )
}

/// Whether every `Origin` header is the hub's own origin (the `Host` the
/// browser addressed, over http or https).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origins = headers.get_all(header::ORIGIN);
    origins.iter().next().is_some()
        && origins.iter().all(|origin| {
            origin.to_str().is_ok_and(|origin| {
                origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
            })
        })
}

async fn handshake(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    fanout: Arc<Fanout>,
    connections: TaskTracker,
) -> Response {
    if !same_origin(&headers) && !origin_allowed(&headers, &state.config.limits.allowed_origins) {
        state.metrics.limit(Limit::Origin);
        warn!(origin = ?headers.get(header::ORIGIN), "live-stream handshake refused: Origin not allowed");
        return forbidden_origin();
    }
    if let Some(refused) = peer.and_then(|ip| state.auth_throttle.check(ip).err()) {
        state.metrics.limit(Limit::AuthThrottle);
        return throttled(refused);
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::BAD_REQUEST {
                "bad_request"
            } else {
                "upgrade_required"
            };
            let message = format!("{} (open it as a WebSocket)", rejection.body_text());
            return refuse(status, code, &message);
        }
    };
    let max_message = max_message_bytes(&state);
    upgrade
        .max_message_size(max_message)
        .max_frame_size(max_message)
        // Browsers send little. The read buffer also matters for speed: each
        // poll for input zero-fills this much (tungstenite's default, 128 KiB
        // per outgoing message, was the stream's largest cost).
        .read_buffer_size(state.config.ws_read_buffer_bytes)
        // Small buffers: a browser that stops reading hits the send timeout
        // instead of parking megabytes in the hub.
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(256 * 1024)
        .on_upgrade(move |socket| {
            connections.track_future(client::serve(state, fanout, socket, peer))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().expect("header"));
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn the_hubs_own_origin_is_same_origin() {
        let host = Some("hub.example:8443");
        assert!(same_origin(&headers(
            host,
            Some("https://hub.example:8443")
        )));
        assert!(same_origin(&headers(host, Some("http://hub.example:8443"))));
        assert!(!same_origin(&headers(host, Some("https://hub.example"))));
        assert!(!same_origin(&headers(host, Some("https://evil.example"))));
        assert!(!same_origin(&headers(host, Some("null"))));
        assert!(!same_origin(&headers(
            None,
            Some("https://hub.example:8443")
        )));
        // No Origin is not "same origin" here; origin_allowed lets it pass.
        assert!(!same_origin(&headers(host, None)));
    }
}
