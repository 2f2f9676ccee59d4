//! API key authentication: `Authorization: Bearer <key-id>.<secret>`.
//!
//! [`ApiKeyAuth`] is an extractor. The router also runs it as a route layer
//! over every `/api/v1` route, so no handler can forget it; the identity it
//! finds is kept in the request's extensions, so a handler that asks for it
//! again does not authenticate twice.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::ApiError;
use crate::metrics::Limit;
use crate::state::AppState;
use crate::store::ApiKeyIdentity;
use crate::throttle::PeerAddr;

/// The holder of the valid API key the request presented.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth(pub ApiKeyIdentity);

/// The credentials of a `Bearer` authorization header; None when the header
/// is missing, not text, or another scheme.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

impl FromRequestParts<AppState> for ApiKeyAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(known) = parts.extensions.get::<ApiKeyAuth>() {
            return Ok(known.clone());
        }
        // Throttled addresses are refused before the database is asked.
        let peer = PeerAddr::of(parts).0;
        if let Some(refused) = peer.and_then(|ip| state.auth_throttle.check(ip).err()) {
            state.metrics.limit(Limit::AuthThrottle);
            return Err(ApiError::Throttled(refused));
        }
        let key = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let Some(identity) = state.store.authenticate_api_key(key).await? else {
            if let Some(ip) = peer {
                state.auth_throttle.failed(ip);
            }
            return Err(ApiError::Unauthorized);
        };
        let auth = ApiKeyAuth(identity);
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_credentials_are_found() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, expected) in [
            ("Bearer abc.def", Some("abc.def")),
            ("bearer  abc.def ", Some("abc.def")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("abc.def", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), expected, "{value:?}");
        }
    }
}
