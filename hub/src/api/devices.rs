//! `/api/v1/devices`: provisioning, listing, inspecting, revoking devices and
//! rotating their tokens.
//!
//! Reading needs any key (viewer); creating, revoking and rotating need an
//! admin key and are written to the audit log, refusals included.
//!
//! Presence is merged from two sources: the database (written by every hub,
//! with last-seen flushed every few seconds) and this hub's live session
//! registry, which is fresher for the devices connected here.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{outcome, record};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, RequireAdmin, RequireViewer};
use super::time::format_ms;
use crate::registry::{CloseReason, SessionRegistry};
use crate::state::AppState;
use crate::store::{
    ActuatorInfo, DeviceQuery, DeviceRecord, NewAuditEntry, RotateRefusal, SensorInfo,
    validate_name,
};

/// Devices per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
const MAX_LIMIT: u32 = 1000;
/// Longest accepted `q`, in characters (a name is at most 64).
const MAX_QUERY_CHARS: usize = 256;

/// Routes of this resource, relative to `/api/v1`; each handler's
/// `#[utoipa::path]` gives both its route and its OpenAPI operation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, revoke))
        .routes(routes!(rotate_token))
}

/// Body of `POST /devices`.
#[derive(Debug, Deserialize, ToSchema)]
struct CreateDevice {
    /// 1 to 64 characters, not only whitespace, no control characters.
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        example = "boiler-1"
    )]
    name: Option<String>,
}

/// Answer to `POST /devices/{id}/rotate-token`: the only response that shows the new token.
#[derive(Debug, Serialize, ToSchema)]
struct RotatedTokenJson {
    /// Public id (16 hex digits), unchanged.
    id: String,
    /// The new secret for the WebSocket handshake; shown only here. The old
    /// token no longer works.
    token: String,
    /// How many times the token has been rotated (1 after the first time).
    token_generation: i64,
    #[schema(format = DateTime)]
    rotated_at: String,
}

/// Answer to `POST /devices`: the only response that shows the token.
#[derive(Debug, Serialize, ToSchema)]
struct CreatedDevice {
    /// Public id (16 hex digits).
    id: String,
    name: String,
    /// The device's secret for the WebSocket handshake; shown only here.
    token: String,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A device in lists.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeviceSummary {
    /// Public id (16 hex digits).
    id: String,
    name: String,
    /// Connected to a hub now.
    online: bool,
    /// Instance id (`--instance-id`) of the hub holding its session; null
    /// while offline.
    hub_instance: Option<String>,
    /// Last frame or heartbeat; null if it never connected.
    #[schema(format = DateTime)]
    last_seen: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// Its credentials were revoked (`DELETE`); it can no longer connect.
    revoked: bool,
    /// Firmware version from its last Hello.
    firmware: Option<String>,
}

/// One device with its declarations.
#[derive(Debug, Serialize, ToSchema)]
struct DeviceDetail {
    #[serde(flatten)]
    summary: DeviceSummary,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// Sequence number of the last committed telemetry frame.
    last_seq: u64,
    /// Sensors declared in its last Hello.
    sensors: Vec<SensorJson>,
    /// Actuators declared in its last Hello.
    actuators: Vec<ActuatorJson>,
}

/// A declared sensor.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SensorJson {
    pub id: u16,
    pub name: String,
    pub unit: String,
    /// `bool`, `int` or `float`.
    #[schema(value_type = String, example = "float")]
    pub kind: &'static str,
}

impl From<SensorInfo> for SensorJson {
    fn from(sensor: SensorInfo) -> Self {
        SensorJson {
            id: sensor.id,
            name: sensor.name,
            unit: sensor.unit,
            kind: sensor.kind.as_str(),
        }
    }
}

/// A declared actuator.
#[derive(Debug, Serialize, ToSchema)]
struct ActuatorJson {
    id: u16,
    name: String,
    /// `bool`, `int` or `float`.
    #[schema(value_type = String, example = "bool")]
    kind: &'static str,
}

/// One page of devices.
#[derive(Debug, Serialize, ToSchema)]
struct DeviceList {
    devices: Vec<DeviceSummary>,
    /// `after` for the next page; null on the last.
    next: Option<String>,
}

/// Query of `GET /devices`; strings so each bad value is named in the error.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Devices per page (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Only devices that are (`true`) or are not (`false`) connected.
    #[param(value_type = Option<bool>)]
    online: Option<String>,
    /// Only devices whose name contains this text (no control characters).
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    q: Option<String>,
}

impl DeviceSummary {
    /// The record merged with this hub's live view of the device
    /// (`instance` is this hub's instance id).
    fn new(record: DeviceRecord, sessions: &SessionRegistry, instance: &str) -> DeviceSummary {
        let live_seen = sessions.last_seen(record.pk);
        let last_seen = match (record.last_seen_ms, live_seen) {
            (Some(db), Some(live)) => Some(db.max(live)),
            (db, live) => db.or(live),
        };
        // A session here is certain; otherwise the database says which hub
        // (if any) wrote the current session.
        let here = sessions.is_online(record.pk);
        let revoked = record.is_revoked();
        let hub_instance = match (here, record.online) {
            (true, _) => Some(instance.to_owned()),
            (false, true) => record.hub_instance,
            (false, false) => None,
        };
        DeviceSummary {
            online: record.online || here,
            hub_instance,
            last_seen: last_seen.map(format_ms),
            created_at: format_ms(record.created_at_ms),
            revoked,
            id: record.id,
            name: record.name,
            firmware: record.firmware,
        }
    }
}

/// Parses an integer parameter within `min..=max`.
pub(crate) fn parse_limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_param(
            "limit",
            format!("must be an integer from 1 to {max}"),
        )),
    }
}

/// The device with public id `id`, or a 404.
pub(crate) async fn find_device(state: &AppState, id: &str) -> Result<DeviceRecord, ApiError> {
    state
        .store
        .get_device(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device with id {id:?}")))
}

/// Provisions a device; the answer is the only one that shows its token.
/// Role: admin.
#[utoipa::path(
    post,
    path = "/devices",
    tag = "devices",
    request_body = CreateDevice,
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 201, description = "Created", body = CreatedDevice,
            headers(("Location" = String, description = "The device's URL"))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
        (status = 422, description = "A missing or invalid name", body = ErrorBody),
    )
)]
async fn create(
    admin: RequireAdmin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateDevice>,
) -> Result<Response, ApiError> {
    let asked_name = body.name.clone();
    let created = async {
        let name = body
            .name
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        validate_name(&name).map_err(|reason| ApiError::invalid("name", reason))?;
        Ok::<_, ApiError>(state.store.create_device(&name).await?)
    }
    .await;
    let entry = NewAuditEntry::new(
        admin.actor(),
        "device.create",
        created.as_ref().ok().map(|d| d.id.as_str()),
        outcome(&created),
    )
    .with_detail(json!({ "key_id": admin.key.id, "name": asked_name }));
    record(&state, entry).await;
    let device = created?;
    let location = format!("/api/v1/devices/{}", device.id);
    let body = CreatedDevice {
        created_at: format_ms(device.created_at_ms),
        id: device.id,
        name: device.name,
        token: device.token,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Lists devices in creation order, one page at a time. Role: viewer.
#[utoipa::path(
    get,
    path = "/devices",
    tag = "devices",
    params(ListParams),
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "One page", body = DeviceList),
        (status = 400, description = "A bad query parameter or cursor", body = ErrorBody),
    )
)]
async fn list(
    _viewer: RequireViewer,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<DeviceList>, ApiError> {
    let limit = parse_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let online = match params.online.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_param("online", "must be true or false")),
    };
    let name_contains = params.q.filter(|q| !q.is_empty());
    if let Some(q) = &name_contains {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ApiError::bad_param("q", "is too long"));
        }
        // No name holds one, and Postgres refuses NUL in text (a 500).
        if q.chars().any(char::is_control) {
            return Err(ApiError::bad_param(
                "q",
                "must not contain control characters",
            ));
        }
    }
    let query = DeviceQuery {
        limit,
        after: params.after.filter(|a| !a.is_empty()),
        online,
        name_contains,
    };
    let page = state.store.list_devices(&query).await?;
    Ok(Json(DeviceList {
        devices: page
            .devices
            .into_iter()
            .map(|d| DeviceSummary::new(d, &state.sessions, &state.config.instance_id))
            .collect(),
        next: page.next,
    }))
}

/// One device with its declared sensors and actuators. Role: viewer.
#[utoipa::path(
    get,
    path = "/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "The device's public id")),
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "The device", body = DeviceDetail),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn show(
    _viewer: RequireViewer,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let record = find_device(&state, &id).await?;
    let sensors = state.store.sensors(record.pk).await?;
    let actuators = state.store.actuators(record.pk).await?;
    Ok(Json(DeviceDetail {
        revoked_at: record.revoked_at_ms.map(format_ms),
        last_seq: record.last_seq,
        sensors: sensors.into_iter().map(SensorJson::from).collect(),
        actuators: actuators
            .into_iter()
            .map(|a: ActuatorInfo| ActuatorJson {
                id: a.id,
                name: a.name,
                kind: a.kind.as_str(),
            })
            .collect(),
        summary: DeviceSummary::new(record, &state.sessions, &state.config.instance_id),
    }))
}

/// Revokes the device's credentials: its session closes and it can no
/// longer connect. The device and its data stay (`revoked: true`).
/// Role: admin.
#[utoipa::path(
    delete,
    path = "/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "The device's public id")),
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 204, description = "Revoked (also when it already was)"),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn revoke(
    admin: RequireAdmin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = match state.store.revoke_device(&id).await {
        Ok(Some(pk)) => Ok(pk),
        Ok(None) => Err(ApiError::NotFound(format!("no device with id {id:?}"))),
        Err(err) => Err(ApiError::from(err)),
    };
    let entry = NewAuditEntry::new(admin.actor(), "device.revoke", Some(&id), outcome(&revoked))
        .with_detail(json!({ "key_id": admin.key.id }));
    record(&state, entry).await;
    // A live session here closes now; other hubs find the revocation when
    // they next poll the database.
    state.sessions.close(revoked?, CloseReason::Revoked);
    Ok(StatusCode::NO_CONTENT)
}

/// Gives the device a new token and answers with it (shown only here). The
/// old token stops working at once; a session that authenticated with it is
/// closed with 4001 (here now, on other hubs within their revocation poll).
/// Role: admin.
#[utoipa::path(
    post,
    path = "/devices/{id}/rotate-token",
    tag = "devices",
    params(("id" = String, Path, description = "The device's public id")),
    extensions(("x-required-role" = json!("admin"))),
    responses(
        (status = 200, description = "The new token", body = RotatedTokenJson),
        (status = 403, description = "The key's role is below admin (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 409, description = "`device_revoked`: a revoked device gets no new token", body = ErrorBody),
    )
)]
async fn rotate_token(
    admin: RequireAdmin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RotatedTokenJson>, ApiError> {
    let rotated = match state.store.rotate_device_token(&id).await {
        Ok(Ok(rotated)) => Ok(rotated),
        Ok(Err(RotateRefusal::UnknownDevice)) => {
            Err(ApiError::NotFound(format!("no device with id {id:?}")))
        }
        Ok(Err(RotateRefusal::Revoked)) => Err(ApiError::Conflict {
            code: "device_revoked",
            message: format!("device {id:?} is revoked; a revoked device gets no new token"),
        }),
        Err(err) => Err(ApiError::from(err)),
    };
    let entry = NewAuditEntry::new(
        admin.actor(),
        "device.rotate_token",
        Some(&id),
        outcome(&rotated),
    )
    .with_detail(json!({
        "key_id": admin.key.id,
        "token_generation": rotated.as_ref().ok().map(|r| r.token_generation),
    }));
    record(&state, entry).await;
    let rotated = rotated?;
    // A session here on the old token closes now; other hubs close theirs
    // when they next poll the database.
    state.sessions.close_older_generation(
        rotated.pk,
        rotated.token_generation,
        CloseReason::Revoked,
    );
    Ok(Json(RotatedTokenJson {
        rotated_at: format_ms(rotated.rotated_at_ms),
        id: rotated.id,
        token: rotated.token,
        token_generation: rotated.token_generation,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_bounded_and_named() {
        assert_eq!(parse_limit(None, 100, 1000).expect("default"), 100);
        assert_eq!(parse_limit(Some("1000"), 100, 1000).expect("max"), 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            let err = parse_limit(Some(bad), 100, 1000).expect_err(bad);
            assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
            assert!(err.to_string().starts_with("limit: "));
        }
    }
}
