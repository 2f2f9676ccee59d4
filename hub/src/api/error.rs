//! The one error type of the HTTP API and its JSON rendering.
//!
//! Every failure becomes `{"error": {"code": "...", "message": "..."}}` (plus
//! `"field"` when one input is to blame) with the matching status. Database
//! details never reach clients: a store failure renders as a generic
//! `internal` error and carries the real error in the response's extensions,
//! where the logging middleware in [`super`] picks it up. Rendering itself
//! has no side effects.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// Why a request failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No usable API key: missing, malformed, unknown or revoked (401).
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthorized,
    /// The API key is valid but its role is below what the route needs (403).
    #[error("this needs the {needed} role; the key has {has}")]
    Forbidden {
        /// The least role the route needs.
        needed: crate::store::Role,
        /// The key's role.
        has: crate::store::Role,
    },
    /// The request is malformed: bad JSON, a bad query parameter or cursor (400).
    #[error("{message}")]
    BadRequest {
        /// The parameter to blame, if one is.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Well-formed JSON with a value that breaks a rule (422).
    #[error("{field}: {message}")]
    Invalid {
        /// The field to blame (a JSON path such as `name`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (409).
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The path exists but not with this method (405).
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// A body that is not declared as JSON (415).
    #[error("expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// A body over the size limit (413).
    #[error("request body too large")]
    PayloadTooLarge,
    /// Too many failed authentications from this address (429, `Retry-After`).
    #[error("{0}")]
    Throttled(crate::throttle::Throttled),
    /// The request ran past `--api-request-timeout-secs` (503, `Retry-After`).
    #[error("the request took too long and was stopped; retry shortly")]
    Timeout,
    /// The database is overloaded or locked; retry shortly (503).
    #[error("the service is busy; retry shortly")]
    Unavailable(#[source] Arc<StoreError>),
    /// Anything else that is the hub's fault (500).
    #[error("internal error")]
    Internal(#[source] Arc<StoreError>),
}

/// The failure behind a 500/503, attached to the response for the logging
/// middleware; never serialized.
#[derive(Debug, Clone)]
pub struct ErrorReport(pub Arc<StoreError>);

impl ApiError {
    /// A 400 naming the query or path parameter at fault.
    pub fn bad_param(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: Some(field.to_owned()),
            message: format!("{field}: {}", message.into()),
        }
    }

    /// A 422 naming the body field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (snake_case).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Invalid { .. } => "invalid",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Throttled(_) => "throttled",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable(_) | ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } => field.as_deref(),
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::InvalidCursor => ApiError::bad_param("after", "unknown cursor"),
            StoreError::InvalidName(reason) => ApiError::invalid("name", reason),
            err if err.is_unavailable() => ApiError::Unavailable(Arc::new(err)),
            err => ApiError::Internal(Arc::new(err)),
        }
    }
}

/// Every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
struct ErrorObject<'a> {
    /// Stable machine-readable code: `unauthorized`, `forbidden`, `bad_request`,
    /// `invalid`, `not_found`, `method_not_allowed`, `unsupported_media_type`,
    /// `payload_too_large`, `throttled`, `timeout`, `internal`, or a 409's own code
    /// (`device_revoked`, `idempotency_conflict`).
    #[schema(value_type = String, example = "not_found")]
    code: &'static str,
    /// A sentence for people; may change between versions.
    message: String,
    /// The parameter or body field to blame (a JSON path such as
    /// `action.args[1]`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message: self.to_string(),
                field: self.field(),
            },
        };
        let mut response = (self.status_code(), Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(source) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response.extensions_mut().insert(ErrorReport(source));
            }
            ApiError::Internal(source) => {
                response.extensions_mut().insert(ErrorReport(source));
            }
            ApiError::Throttled(throttled) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, throttled.retry_after_secs.into());
            }
            ApiError::Timeout => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_details_stay_out_of_the_message() {
        let err = ApiError::from(StoreError::Corrupt("secret table detail".into()));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.code(), "internal");
        assert!(!err.to_string().contains("secret"));
        let response = err.into_response();
        assert!(response.extensions().get::<ErrorReport>().is_some());
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let err = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let response = err.into_response();
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
    }

    #[test]
    fn store_validation_errors_name_their_input() {
        let err = ApiError::from(StoreError::InvalidCursor);
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(err.field(), Some("after"));
        let err = ApiError::from(StoreError::InvalidName("must not be empty"));
        assert_eq!(err.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.to_string(), "name: must not be empty");
    }
}
