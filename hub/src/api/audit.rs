//! `/api/v1/audit`: the audit log, for admins; and [`record`], how the API
//! appends to it.
//!
//! Every command submission and every admin action leaves one entry (see
//! `store::audit`). An entry is appended after the action, in its own
//! statement: a failed append does not undo or fail an action that already
//! happened, but it is never silent either: it is logged at ERROR and
//! counted in `hub_database_errors_total{op="api"}`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::devices::parse_limit;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, RequireAdmin};
use super::time::format_ms;
use crate::metrics::DbOp;
use crate::state::AppState;
use crate::store::{AuditEntry, AuditQuery, NewAuditEntry};

/// Entries per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
const MAX_LIMIT: u32 = 1000;
/// Longest accepted `actor` or `action` filter, in characters.
const MAX_FILTER_CHARS: usize = 200;

/// Routes of this resource, relative to `/api/v1`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Appends `entry` to the audit log. A failure is logged and counted, not
/// returned: the action it describes already happened.
pub(crate) async fn record(state: &AppState, entry: NewAuditEntry) {
    if let Err(err) = state.store.record_audit(&entry).await {
        state.metrics.database_error(DbOp::Api);
        tracing::error!(
            error = %err,
            actor = %entry.actor,
            action = %entry.action,
            target = ?entry.target,
            outcome = %entry.outcome,
            "could not write the audit log"
        );
    }
}

/// The outcome column for an action's result: `ok`, or the error's code.
pub(crate) fn outcome<T>(result: &Result<T, ApiError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(err) => err.code().to_owned(),
    }
}

/// One entry.
#[derive(Debug, Serialize, ToSchema)]
struct AuditJson {
    /// Increasing id.
    id: i64,
    /// When.
    #[schema(format = DateTime)]
    at: String,
    /// Who: `api:<key name>`, `mqtt` or `cli`.
    #[schema(example = "api:ops")]
    actor: String,
    /// What: `command.create`, `device.create`, `device.revoke`,
    /// `device.rotate_token`, `api_key.create` or `api_key.revoke`.
    #[schema(example = "device.revoke")]
    action: String,
    /// On what: the device or API key id, when there is one.
    target: Option<String>,
    /// `ok`, or the error code of the refusal (`not_found`, `invalid`, …).
    #[schema(example = "ok")]
    outcome: String,
    /// More about the action (a JSON object; never a secret).
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

impl From<AuditEntry> for AuditJson {
    fn from(entry: AuditEntry) -> AuditJson {
        AuditJson {
            id: entry.id,
            at: format_ms(entry.at_ms),
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome,
            detail: entry.detail,
        }
    }
}

/// One page of entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct AuditList {
    entries: Vec<AuditJson>,
    /// `before` for the next page; null on the last.
    next: Option<String>,
}

/// Query of `GET /audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Entries per page (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
    /// Only entries by exactly this actor (`api:ops`, `mqtt`, `cli`).
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    actor: Option<String>,
    /// Only entries of exactly this action (`device.revoke`, …).
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    action: Option<String>,
}

/// A text filter: empty means none; too long or with control characters is a 400.
fn filter(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = raw.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_FILTER_CHARS {
        return Err(ApiError::bad_param(field, "is too long"));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_param(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(value))
}

/// The audit log, newest first, one page at a time. Role: admin.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    operation_id = "list_audit",
    params(ListParams),
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 200, description = "One page", body = AuditList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
    )
)]
async fn list(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = parse_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // The document says integer: an empty `before=` is a bad cursor, not "none".
    let before_id = match params.before.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::bad_param("before", "must be a cursor from `next`"))?,
        ),
    };
    let query = AuditQuery {
        limit,
        before_id,
        actor: filter("actor", params.actor)?,
        action: filter("action", params.action)?,
    };
    let page = state.store.list_audit(&query).await?;
    Ok(Json(AuditList {
        entries: page.entries.into_iter().map(AuditJson::from).collect(),
        next: page.next_before_id.map(|id| id.to_string()),
    }))
}
