//! `/api/v1/devices`: provisioning, listing, inspecting and revoking devices.
//!
//! Presence is merged from two sources: the database (written by every hub,
//! with last-seen flushed every few seconds) and this hub's live session
//! registry, which is fresher for the devices connected here.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::time::format_ms;
use crate::registry::{CloseReason, SessionRegistry};
use crate::state::AppState;
use crate::store::{ActuatorInfo, DeviceQuery, DeviceRecord, SensorInfo, validate_name};

/// Devices per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
const MAX_LIMIT: u32 = 1000;
/// Longest accepted `q`, in bytes (a name is at most 64 characters).
const MAX_QUERY_BYTES: usize = 256;

/// Routes of this resource, relative to `/api/v1`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/devices", get(list).post(create))
        .route("/devices/{id}", get(show).delete(revoke))
}

/// Body of `POST /devices`.
#[derive(Debug, Deserialize)]
struct CreateDevice {
    name: Option<String>,
}

/// Answer to `POST /devices`: the only response that shows the token.
#[derive(Debug, Serialize)]
struct CreatedDevice {
    id: String,
    name: String,
    token: String,
    created_at: String,
}

/// A device in lists.
#[derive(Debug, Serialize)]
pub(crate) struct DeviceSummary {
    id: String,
    name: String,
    online: bool,
    last_seen: Option<String>,
    created_at: String,
    revoked: bool,
    firmware: Option<String>,
}

/// One device with its declarations.
#[derive(Debug, Serialize)]
struct DeviceDetail {
    #[serde(flatten)]
    summary: DeviceSummary,
    revoked_at: Option<String>,
    last_seq: u64,
    sensors: Vec<SensorJson>,
    actuators: Vec<ActuatorJson>,
}

/// A declared sensor.
#[derive(Debug, Serialize)]
pub(crate) struct SensorJson {
    pub id: u16,
    pub name: String,
    pub unit: String,
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
#[derive(Debug, Serialize)]
struct ActuatorJson {
    id: u16,
    name: String,
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct DeviceList {
    devices: Vec<DeviceSummary>,
    next: Option<String>,
}

/// Query of `GET /devices`; strings so each bad value is named in the error.
#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<String>,
    after: Option<String>,
    online: Option<String>,
    q: Option<String>,
}

impl DeviceSummary {
    /// The record merged with this hub's live view of the device.
    fn new(record: DeviceRecord, sessions: &SessionRegistry) -> DeviceSummary {
        let live_seen = sessions.last_seen(record.pk);
        let last_seen = match (record.last_seen_ms, live_seen) {
            (Some(db), Some(live)) => Some(db.max(live)),
            (db, live) => db.or(live),
        };
        DeviceSummary {
            online: record.online || sessions.is_online(record.pk),
            last_seen: last_seen.map(format_ms),
            created_at: format_ms(record.created_at_ms),
            revoked: record.is_revoked(),
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

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateDevice>,
) -> Result<Response, ApiError> {
    let name = body
        .name
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    validate_name(&name).map_err(|reason| ApiError::invalid("name", reason))?;
    let device = state.store.create_device(&name).await?;
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

async fn list(
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
    if name_contains
        .as_ref()
        .is_some_and(|q| q.len() > MAX_QUERY_BYTES)
    {
        return Err(ApiError::bad_param("q", "is too long"));
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
            .map(|d| DeviceSummary::new(d, &state.sessions))
            .collect(),
        next: page.next,
    }))
}

async fn show(
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
        summary: DeviceSummary::new(record, &state.sessions),
    }))
}

async fn revoke(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let pk = state
        .store
        .revoke_device(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device with id {id:?}")))?;
    // A live session here closes now; other hubs find the revocation when
    // they next poll the database.
    state.sessions.close(pk, CloseReason::Revoked);
    Ok(StatusCode::NO_CONTENT)
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
