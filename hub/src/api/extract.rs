//! Request extractors whose failures are [`ApiError`]s, so a bad body, query
//! or path gets the same JSON error shape as everything else (axum's own
//! extractors answer in plain text).
//!
//! [`ApiJson`] separates the two ways a body can be wrong: not JSON at all
//! (400 `bad_request`) and JSON whose values do not fit (422 `invalid`, naming
//! the field by its path). Request types declare their fields as `Option` so
//! that a missing field reaches the handler's validation, which names it.
//!
//! [`Require`] checks the API key's role: each handler names the least role
//! it needs ([`RequireViewer`], [`RequireOperator`], [`RequireAdmin`]) as its
//! first extractor, so a key below it gets 403 `forbidden` before the body is
//! read. The key itself was already checked by the `ApiKeyAuth` route layer
//! (401 first), which left the identity in the request's extensions.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::auth::ApiKeyAuth;
use super::error::ApiError;
use crate::state::AppState;
use crate::store::{ApiKeyIdentity, Role};

/// A least role, as a type, for [`Require`].
pub trait NeededRole {
    /// The least role a route needs.
    const ROLE: Role;
}

/// Marker: any valid key (every role reads).
#[derive(Debug)]
pub struct Viewer;
/// Marker: operator or admin.
#[derive(Debug)]
pub struct Operator;
/// Marker: admin only.
#[derive(Debug)]
pub struct Admin;

impl NeededRole for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl NeededRole for Operator {
    const ROLE: Role = Role::Operator;
}
impl NeededRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// The request's API key, whose role is at least `R::ROLE`; otherwise the
/// request is refused with 403 `forbidden` (401 when there is no valid key).
#[derive(Debug)]
pub struct Require<R> {
    /// Who the key belongs to.
    pub key: ApiKeyIdentity,
    _role: PhantomData<R>,
}

/// Every valid key.
pub type RequireViewer = Require<Viewer>;
/// Keys that may send commands.
pub type RequireOperator = Require<Operator>;
/// Keys that may manage devices and keys and read the audit log.
pub type RequireAdmin = Require<Admin>;

impl<R: NeededRole> Require<R> {
    /// The audit log's actor for this key: `api:<key name>`.
    pub fn actor(&self) -> String {
        format!("api:{}", self.key.name)
    }
}

impl<R: NeededRole> FromRequestParts<AppState> for Require<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiKeyAuth(key) = ApiKeyAuth::from_request_parts(parts, state).await?;
        if !key.role.allows(R::ROLE) {
            return Err(ApiError::Forbidden {
                needed: R::ROLE,
                has: key.role,
            });
        }
        Ok(Require {
            key,
            _role: PhantomData,
        })
    }
}

/// A JSON request body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Query parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Decodes a JSON object into `T`, classifying failures: not JSON at all is a
/// 400; JSON that is not an object, or whose values do not fit `T`, is a 422
/// naming the field by its path (`body` for the document itself).
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| ApiError::BadRequest {
            field: None,
            message: format!("the body is not valid JSON: {err}"),
        })?;
    // serde would also accept a struct as a positional array; requests are objects.
    if !document.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::Invalid {
            field,
            message: err.into_inner().to_string(),
        }
    })
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::BadRequest {
                            field: None,
                            message: "could not read the request body".into(),
                        }
                    }
                })?;
        decode_json(&bytes).map(ApiJson)
    }
}

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::BadRequest {
                field: None,
                message: rejection.body_text(),
            })
    }
}

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::BadRequest {
                field: None,
                message: rejection.body_text(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        name: Option<String>,
        #[serde(default, rename = "nested")]
        _nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    struct Nested {
        #[serde(rename = "count")]
        _count: Option<u32>,
    }

    fn status(result: Result<Body, ApiError>) -> (StatusCode, String) {
        let err = result.expect_err("should fail");
        (err.status_code(), err.to_string())
    }

    #[test]
    fn syntax_errors_are_400_and_type_errors_422_with_the_path() {
        let ok: Body = decode_json(br#"{"name":"x"}"#).expect("valid");
        assert_eq!(ok.name.as_deref(), Some("x"));
        assert_eq!(
            status(decode_json(b"{\"name\":")).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status(decode_json(b"{} x")).0, StatusCode::BAD_REQUEST);
        let (code, message) = status(decode_json(br#"{"name": 5}"#));
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.starts_with("name: "), "{message}");
        assert!(!message.contains("line"), "{message}");
        let (code, message) = status(decode_json(br#"{"nested": {"count": -1}}"#));
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.starts_with("nested.count: "), "{message}");
        let (code, message) = status(decode_json(b"[]"));
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.starts_with("body: "), "{message}");
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, expected) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), expected, "{value}");
        }
    }
}
