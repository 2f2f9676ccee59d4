//! The operator console: a small browser app the hub serves itself at `/`.
//!
//! The page is plain HTML, CSS and ES modules from `hub/console/`, compiled
//! into the binary with `include_bytes!`, so there is no build step, no JS
//! toolchain and nothing to deploy next to the hub. It talks to the same
//! `/api/v1` routes as every other client (Bearer key) and to the live
//! `/api/v1/stream` WebSocket; docs/CONSOLE.md describes what it shows.
//!
//! Every response of this module, the 404 included, carries a strict
//! Content-Security-Policy (same-origin scripts, styles and connections,
//! no inline code), `nosniff`, `no-referrer` and `Cache-Control: no-cache`:
//! the assets are small, and a browser must never run yesterday's modules
//! against today's hub.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// One embedded file of the console.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The file name under `hub/console/` and `/console/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes, as compiled in.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Declares an embedded file; the content type is named next to the file so
/// a new file cannot be added without one.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

/// Every file the console ships; `index.html` is served at `/`, all of them
/// under `/console/<name>`.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("chart.js", JS),
    asset!("device.js", JS),
    asset!("dom.js", JS),
    asset!("events.js", JS),
    asset!("fleet.js", JS),
    asset!("format.js", JS),
    asset!("overview.js", JS),
    asset!("router.js", JS),
    asset!("session.js", JS),
    asset!("store.js", JS),
    asset!("stream.js", JS),
];

/// The embedded file called `name`, if the console ships one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// `GET /` and `GET /console/<file>`, with the console's security headers
/// on every answer. Merged into the hub's router by [`crate::server`].
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(file))
        .layer(middleware::map_response(security_headers))
}

async fn index() -> Response {
    match asset("index.html") {
        Some(index) => serve(index),
        None => not_found(),
    }
}

async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some(asset) => serve(asset),
        None => not_found(),
    }
}

fn serve(asset: &'static Asset) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "no such console file\n",
    )
        .into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_are_unique_and_typed() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(
                ASSETS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
            let expected = match a.name.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                _ => "",
            };
            assert_eq!(a.content_type, expected, "{}", a.name);
            assert!(!a.body.is_empty(), "{} is empty", a.name);
        }
    }
}
