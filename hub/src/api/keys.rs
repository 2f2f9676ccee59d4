//! `/api/v1/api-keys`: creating, listing and revoking API keys, for admins.
//!
//! A key's secret is shown once, in the answer that creates it; lists show
//! names, roles and times only. A revoked key is refused (401) from the next
//! request on, since every request checks its key against the database.
//! Creating and revoking are written to the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{outcome, record};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, RequireAdmin};
use super::time::format_ms;
use crate::state::AppState;
use crate::store::{ApiKeyRecord, NewAuditEntry, Role, validate_name};

/// Routes of this resource, relative to `/api/v1`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// A role name, as the API shows and accepts it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Role)]
enum RoleJson {
    /// Reads everything.
    Viewer,
    /// Also sends commands.
    Operator,
    /// Also manages devices and API keys and reads the audit log.
    Admin,
}

/// Body of `POST /api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
struct CreateKey {
    /// Who or what uses the key: 1 to 64 characters, not only whitespace,
    /// no control characters.
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        example = "grafana"
    )]
    name: Option<String>,
    /// What the key may do; required (no default, so no key gets more than asked for).
    #[schema(value_type = RoleJson)]
    role: Option<String>,
}

/// Answer to `POST /api-keys`: the only response that shows the key.
#[derive(Debug, Serialize, ToSchema)]
struct CreatedKey {
    /// Public id (16 hex digits), the part of the key before the dot.
    id: String,
    name: String,
    #[schema(value_type = RoleJson)]
    role: &'static str,
    /// `<id>.<secret>` for `Authorization: Bearer`; shown only here.
    key: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// An API key in lists (never its secret).
#[derive(Debug, Serialize, ToSchema)]
struct KeyJson {
    /// Public id (16 hex digits).
    id: String,
    name: String,
    #[schema(value_type = RoleJson)]
    role: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
    /// Last successful use, to the minute; null if never used.
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    /// Revoked keys are refused (401).
    revoked: bool,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<ApiKeyRecord> for KeyJson {
    fn from(key: ApiKeyRecord) -> KeyJson {
        KeyJson {
            id: key.id,
            name: key.name,
            role: key.role.as_str(),
            created_at: format_ms(key.created_at_ms),
            last_used_at: key.last_used_at_ms.map(format_ms),
            revoked: key.revoked_at_ms.is_some(),
            revoked_at: key.revoked_at_ms.map(format_ms),
        }
    }
}

/// Every API key, revoked or not.
#[derive(Debug, Serialize, ToSchema)]
struct KeyList {
    api_keys: Vec<KeyJson>,
}

/// Creates an API key with a role; the answer is the only one that shows
/// the key. Role: admin.
#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "create_api_key",
    request_body = CreateKey,
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 201, description = "Created", body = CreatedKey,
            headers(("Location" = String, description = "Where to revoke it (DELETE)"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
        (status = 422, description = "A missing or invalid name or role", body = ErrorBody),
    )
)]
async fn create(
    admin: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let asked_name = body.name.clone();
    let asked_role = body.role.clone();
    let created = create_key(&state, body).await;
    let entry = NewAuditEntry::new(
        admin.actor(),
        "api_key.create",
        created.as_ref().ok().map(|k| k.id.as_str()),
        outcome(&created),
    )
    .with_detail(json!({
        "key_id": admin.key.id,
        "name": asked_name,
        "role": asked_role,
    }));
    record(&state, entry).await;
    let created = created?;
    let location = format!("/api/v1/api-keys/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

async fn create_key(state: &AppState, body: CreateKey) -> Result<CreatedKey, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    validate_name(&name).map_err(|reason| ApiError::invalid("name", reason))?;
    let role = body
        .role
        .ok_or_else(|| ApiError::invalid("role", "is required (viewer, operator or admin)"))?;
    let role = Role::parse(&role)
        .ok_or_else(|| ApiError::invalid("role", "must be viewer, operator or admin"))?;
    let key = state.store.create_api_key_with_role(&name, role).await?;
    Ok(CreatedKey {
        created_at: format_ms(key.created_at_ms),
        role: key.role.as_str(),
        id: key.id,
        name: key.name,
        key: key.key,
    })
}

/// Every API key, revoked or not, in creation order (no secrets). Role: admin.
#[utoipa::path(
    get,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "list_api_keys",
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
    )
)]
async fn list(
    _admin: RequireAdmin,
    State(state): State<AppState>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.list_api_keys().await?;
    Ok(Json(KeyList {
        api_keys: keys.into_iter().map(KeyJson::from).collect(),
    }))
}

/// Revokes an API key: it is refused (401) from the next request on.
/// Revoking the key that makes the request is allowed. Role: admin.
#[utoipa::path(
    delete,
    path = "/api-keys/{id}",
    tag = "api-keys",
    operation_id = "revoke_api_key",
    params(("id" = String, Path, description = "The key's public id")),
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 204, description = "Revoked (also when it already was)"),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
async fn revoke(
    admin: RequireAdmin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = match state.store.revoke_api_key(&id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::NotFound(format!("no API key with id {id:?}"))),
        Err(err) => Err(ApiError::from(err)),
    };
    let entry = NewAuditEntry::new(
        admin.actor(),
        "api_key.revoke",
        Some(&id),
        outcome(&revoked),
    )
    .with_detail(json!({ "key_id": admin.key.id }));
    record(&state, entry).await;
    revoked
}
