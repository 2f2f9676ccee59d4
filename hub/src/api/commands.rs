//! `/api/v1/devices/{id}/commands`: send a command, follow it, list them.
//!
//! `POST` answers as soon as the command is stored: 202 with the command
//! (status `queued`, or further if the device was quick). With
//! `?wait=SECONDS` (0 to 60) the request is held until the command reaches a
//! final status or the wait ends; then 200 if it is final, 202 if not. An
//! `Idempotency-Key` header (or `idempotency_key` in the body) makes retries
//! safe: the same key with the same request returns the earlier command
//! (same status rules), with a different request 409. Every answer has a
//! `Location` naming the command.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::devices::{find_device, parse_limit};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, RequireOperator, RequireViewer};
use crate::commands::SubmitError;
use crate::commands::request::CommandRequest;
use crate::commands::view::{CommandStatusName, CommandView};
use crate::state::AppState;
use crate::store::{CommandQuery, CommandRecord, CommandStatus};

/// Longest `?wait`, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Commands per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
const MAX_LIMIT: u32 = 1000;

/// Routes of this resource, relative to `/api/v1`; each handler's
/// `#[utoipa::path]` gives both its route and its OpenAPI operation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
}

/// Query of `POST .../commands`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CreateParams {
    /// Hold the answer up to this many seconds until the command is final.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 60)]
    wait: Option<String>,
}

/// Query of `GET .../commands`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only commands with this status.
    #[param(value_type = Option<CommandStatusName>)]
    status: Option<String>,
    /// Commands per page (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
}

/// One page of commands, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct CommandList {
    commands: Vec<CommandView>,
    /// `before` for the next page; null on the last.
    next: Option<String>,
}

fn parse_wait(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    match raw.parse::<u64>() {
        Ok(secs) if secs <= MAX_WAIT_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(ApiError::bad_param(
            "wait",
            format!("must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"),
        )),
    }
}

/// The `Idempotency-Key` header, reconciled with the body's key.
fn idempotency_key(headers: &HeaderMap, body: &mut CommandRequest) -> Result<(), ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(());
    };
    let header_key = value
        .to_str()
        .map_err(|_| ApiError::bad_param("Idempotency-Key", "must be visible ASCII"))?
        .to_owned();
    match &body.idempotency_key {
        Some(body_key) if *body_key != header_key => Err(ApiError::invalid(
            "idempotency_key",
            "differs from the Idempotency-Key header",
        )),
        _ => {
            body.idempotency_key = Some(header_key);
            Ok(())
        }
    }
}

fn command_response(record: &CommandRecord) -> Response {
    let status = if record.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let location = format!(
        "/api/v1/devices/{}/commands/{}",
        record.device_id, record.id
    );
    (
        status,
        [(header::LOCATION, location)],
        Json(CommandView::from(record)),
    )
        .into_response()
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> ApiError {
        match err {
            SubmitError::UnknownDevice(_) => ApiError::NotFound(err.to_string()),
            SubmitError::DeviceRevoked(_) | SubmitError::IdempotencyConflict(..) => {
                ApiError::Conflict {
                    code: err.code(),
                    message: err.to_string(),
                }
            }
            SubmitError::Invalid(invalid) => ApiError::Invalid {
                field: invalid.field,
                message: invalid.message,
            },
            SubmitError::Store(store) => store.into(),
        }
    }
}

/// Sends a command to one of the device's actuators. It is stored before
/// the answer; then delivered to the device now or when it next connects.
/// Every submission, accepted or refused, is written to the audit log.
/// Role: operator.
#[utoipa::path(
    post,
    path = "/devices/{id}/commands",
    tag = "commands",
    params(
        ("id" = String, Path, description = "The device's public id"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes retries safe (same as the body's `idempotency_key`)"),
        CreateParams,
    ),
    request_body = CommandRequest,
    extensions(("x-required-role" = json!("operator"))),
    responses(
        (status = 200, description = "Final within `wait`", body = CommandView,
            headers(("Location" = String, description = "The command's URL"))),
        (status = 202, description = "Accepted; not final (yet)", body = CommandView,
            headers(("Location" = String, description = "The command's URL"))),
        (status = 400, description = "The body is not JSON, or a bad `wait`", body = ErrorBody),
        (status = 403, description = "The key's role is below operator (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 409, description = "`device_revoked`, or `idempotency_conflict`", body = ErrorBody),
        (status = 422, description = "The request breaks a rule (`field` names it)", body = ErrorBody),
    )
)]
async fn create(
    operator: RequireOperator,
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<CreateParams>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<CommandRequest>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(params.wait.as_deref())?;
    idempotency_key(&headers, &mut body)?;
    // Subscribed before submitting, so no status change can slip past the wait.
    let events = (!wait.is_zero()).then(|| state.commands.subscribe());
    let submitted = state
        .commands
        .submit(&device_id, body, operator.actor(), None)
        .await?;
    let mut record = submitted.record().clone();
    if let Some(events) = events {
        let waited = state.commands.wait_final(events, Arc::clone(&record), wait);
        // A hub that is stopping answers at once with what it knows (202 if
        // not final), so a long `wait` cannot hold up the shutdown.
        tokio::select! {
            latest = waited => record = latest?,
            () = state.shutdown.cancelled() => {
                if let Some(fresh) = state.store.command(record.id).await? {
                    record = Arc::new(fresh);
                }
            }
        }
    }
    Ok(command_response(&record))
}

/// One command with its lifecycle so far. Role: viewer.
#[utoipa::path(
    get,
    path = "/devices/{id}/commands/{command_id}",
    tag = "commands",
    params(
        ("id" = String, Path, description = "The device's public id"),
        ("command_id" = String, Path, description = "The command's id"),
    ),
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "The command", body = CommandView),
        (status = 404, description = "No such device, or no such command of it", body = ErrorBody),
    )
)]
async fn show(
    _viewer: RequireViewer,
    State(state): State<AppState>,
    ApiPath((device_id, command_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let device = find_device(&state, &device_id).await?;
    let not_found = || {
        ApiError::NotFound(format!(
            "device {device_id:?} has no command {command_id:?}"
        ))
    };
    let id: i64 = command_id.parse().map_err(|_| not_found())?;
    let record = state
        .store
        .command(id)
        .await?
        .filter(|c| c.device_pk == device.pk)
        .ok_or_else(not_found)?;
    Ok((StatusCode::OK, Json(CommandView::from(&record))).into_response())
}

/// The device's commands, newest first, one page at a time. Role: viewer.
#[utoipa::path(
    get,
    path = "/devices/{id}/commands",
    tag = "commands",
    params(
        ("id" = String, Path, description = "The device's public id"),
        ListParams,
    ),
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "One page", body = CommandList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn list(
    _viewer: RequireViewer,
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<CommandList>, ApiError> {
    let device = find_device(&state, &device_id).await?;
    let limit = parse_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = match params.status.as_deref() {
        None => None,
        Some(name) => Some(CommandStatus::parse(name).ok_or_else(|| {
            let names: Vec<&str> = CommandStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_param("status", format!("must be one of {}", names.join(", ")))
        })?),
    };
    let before_id = match params.before.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::bad_param("before", "must be a cursor from `next`"))?,
        ),
    };
    let page = state
        .store
        .list_commands(&CommandQuery {
            device_pk: device.pk,
            status,
            before_id,
            limit,
        })
        .await?;
    Ok(Json(CommandList {
        commands: page.commands.iter().map(CommandView::from).collect(),
        next: page.next_before_id.map(|id| id.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_bounded() {
        assert_eq!(parse_wait(None).expect("default"), Duration::ZERO);
        assert_eq!(parse_wait(Some("5")).expect("ok"), Duration::from_secs(5));
        assert!(parse_wait(Some("61")).is_err());
        assert!(parse_wait(Some("-1")).is_err());
        assert!(parse_wait(Some("1.5")).is_err());
    }

    #[test]
    fn header_and_body_keys_must_agree() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "k1".parse().expect("header"));
        let mut body = CommandRequest::default();
        idempotency_key(&headers, &mut body).expect("header only");
        assert_eq!(body.idempotency_key.as_deref(), Some("k1"));
        let mut body = CommandRequest {
            idempotency_key: Some("k2".into()),
            ..CommandRequest::default()
        };
        assert!(idempotency_key(&headers, &mut body).is_err());
    }
}
