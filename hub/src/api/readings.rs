//! Telemetry reads: each sensor's newest value, and one sensor's readings
//! over a time range, paged in ascending time order.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::devices::{SensorJson, find_device, parse_limit};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery, RequireViewer};
use super::time::{format_ms, parse_ms};
use crate::commands::request::Scalar;
use crate::commands::view::value_json;
use crate::state::AppState;
use crate::store::{ReadingQuery, SensorInfo, StoredReading, now_ms};

/// Readings per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 1000;
/// Largest `limit` accepted.
const MAX_LIMIT: u32 = 10_000;
/// The range when `from` is not given: this long before `to`.
const DEFAULT_SPAN_MS: i64 = 3_600_000;

/// Routes of this resource, relative to `/api/v1`; each handler's
/// `#[utoipa::path]` gives both its route and its OpenAPI operation.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(latest))
        .routes(routes!(range))
}

/// Each declared sensor's newest reading.
#[derive(Debug, Serialize, ToSchema)]
struct LatestJson {
    /// The device's public id.
    device: String,
    sensors: Vec<SensorLatestJson>,
}

/// A sensor and its newest reading (all null if it has none).
#[derive(Debug, Serialize, ToSchema)]
struct SensorLatestJson {
    #[serde(flatten)]
    sensor: SensorJson,
    #[schema(value_type = Option<Scalar>)]
    value: serde_json::Value,
    #[schema(format = DateTime)]
    time: Option<String>,
    /// The same time in ms since the Unix epoch.
    time_ms: Option<i64>,
}

/// One reading.
#[derive(Debug, Serialize, ToSchema)]
struct ReadingJson {
    #[schema(format = DateTime)]
    time: String,
    /// The same time in ms since the Unix epoch.
    time_ms: i64,
    #[schema(value_type = Option<Scalar>)]
    value: serde_json::Value,
}

impl From<StoredReading> for ReadingJson {
    fn from(reading: StoredReading) -> Self {
        ReadingJson {
            time: format_ms(reading.time_ms),
            time_ms: reading.time_ms,
            value: value_json(reading.value),
        }
    }
}

/// One page of readings in ascending time order.
#[derive(Debug, Serialize, ToSchema)]
struct ReadingList {
    readings: Vec<ReadingJson>,
    /// `after` for the next page; null on the last.
    next: Option<String>,
}

/// Query of the readings endpoint; strings so each bad value is named.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RangeParams {
    /// Start of the range, inclusive (default: an hour before `to`).
    #[param(format = DateTime)]
    from: Option<String>,
    /// End of the range, inclusive (default: now).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Readings per page (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// The `next` of the previous page.
    #[param(value_type = Option<i64>)]
    after: Option<String>,
}

/// Each declared sensor's newest reading. Role: viewer.
#[utoipa::path(
    get,
    path = "/devices/{id}/latest",
    tag = "readings",
    params(("id" = String, Path, description = "The device's public id")),
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "The newest readings", body = LatestJson),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn latest(
    _viewer: RequireViewer,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<LatestJson>, ApiError> {
    let device = find_device(&state, &id).await?;
    let sensors = state.store.latest_readings(device.pk).await?;
    Ok(Json(LatestJson {
        device: device.id,
        sensors: sensors
            .into_iter()
            .map(|s| SensorLatestJson {
                sensor: SensorJson::from(s.sensor),
                value: s
                    .latest
                    .map_or(serde_json::Value::Null, |r| value_json(r.value)),
                time: s.latest.map(|r| format_ms(r.time_ms)),
                time_ms: s.latest.map(|r| r.time_ms),
            })
            .collect(),
    }))
}

/// The sensor named by `key`: its numeric id, else its name.
fn find_sensor(sensors: Vec<SensorInfo>, key: &str) -> Option<SensorInfo> {
    let by_id = key.parse::<u16>().ok();
    let mut by_name = None;
    for sensor in sensors {
        if Some(sensor.id) == by_id {
            return Some(sensor);
        }
        if by_name.is_none() && sensor.name == key {
            by_name = Some(sensor);
        }
    }
    by_name
}

fn parse_time(field: &str, raw: &str) -> Result<i64, ApiError> {
    parse_ms(raw).ok_or_else(|| {
        ApiError::bad_param(
            field,
            "must be an RFC 3339 time such as 2024-05-01T12:00:00Z",
        )
    })
}

/// The validated range query: `from`/`to` default to the last hour.
fn range_query(params: &RangeParams, now: i64) -> Result<ReadingQuery, ApiError> {
    let to_ms = match params.to.as_deref() {
        Some(raw) => parse_time("to", raw)?,
        None => now,
    };
    let from_ms = match params.from.as_deref() {
        Some(raw) => parse_time("from", raw)?,
        None => to_ms.saturating_sub(DEFAULT_SPAN_MS),
    };
    if from_ms > to_ms {
        return Err(ApiError::bad_param("from", "must not be after to"));
    }
    let limit = parse_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // The document says integer: an empty `after=` is a bad cursor, not "none".
    let after_ms = match params.after.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .map_err(|_| ApiError::bad_param("after", "unknown cursor"))?,
        ),
    };
    Ok(ReadingQuery {
        from_ms,
        to_ms,
        after_ms,
        limit,
    })
}

/// One sensor's readings in a time range, oldest first, one page at a time.
/// Role: viewer.
#[utoipa::path(
    get,
    path = "/devices/{id}/sensors/{sensor}/readings",
    tag = "readings",
    params(
        ("id" = String, Path, description = "The device's public id"),
        ("sensor" = String, Path, description = "The sensor's declared id or name"),
        RangeParams,
    ),
    extensions(("x-required-role" = json!("viewer"))),
    responses(
        (status = 200, description = "One page", body = ReadingList),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 404, description = "No such device, or no such sensor of it", body = ErrorBody),
    )
)]
async fn range(
    _viewer: RequireViewer,
    State(state): State<AppState>,
    ApiPath((id, sensor_key)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Json<ReadingList>, ApiError> {
    // Parameters first: a malformed request is refused before any lookup.
    let query = range_query(&params, now_ms())?;
    let device = find_device(&state, &id).await?;
    let sensors = state.store.sensors(device.pk).await?;
    let sensor = find_sensor(sensors, &sensor_key)
        .ok_or_else(|| ApiError::NotFound(format!("device {id:?} has no sensor {sensor_key:?}")))?;
    let page = state.store.readings(device.pk, sensor.id, &query).await?;
    Ok(Json(ReadingList {
        readings: page.readings.into_iter().map(ReadingJson::from).collect(),
        next: page.next_after_ms.map(|ms| ms.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use schema::ValueKind;

    fn params(from: Option<&str>, to: Option<&str>) -> RangeParams {
        RangeParams {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            limit: None,
            after: None,
        }
    }

    #[test]
    fn range_defaults_to_the_last_hour() {
        let q = range_query(&params(None, None), 10_000_000).expect("valid");
        assert_eq!((q.from_ms, q.to_ms), (10_000_000 - 3_600_000, 10_000_000));
        assert_eq!(q.limit, 1000);
        assert_eq!(q.after_ms, None);
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        for (p, field) in [
            (params(Some("nope"), None), "from"),
            (params(None, Some("2024-13-01T00:00:00Z")), "to"),
            (
                params(Some("2024-01-02T00:00:00Z"), Some("2024-01-01T00:00:00Z")),
                "from",
            ),
        ] {
            let err = range_query(&p, 0).expect_err(field);
            assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
        let mut p = params(None, None);
        p.after = Some("x".into());
        let err = range_query(&p, 0).expect_err("bad cursor");
        assert!(err.to_string().starts_with("after: "));
    }

    #[test]
    fn sensors_are_found_by_id_then_name() {
        let sensor = |id, name: &str| SensorInfo {
            id,
            name: name.into(),
            unit: String::new(),
            kind: ValueKind::Int,
        };
        let sensors = vec![sensor(1, "2"), sensor(2, "temp")];
        assert_eq!(find_sensor(sensors.clone(), "2").map(|s| s.id), Some(2));
        assert_eq!(find_sensor(sensors.clone(), "temp").map(|s| s.id), Some(2));
        assert_eq!(find_sensor(sensors.clone(), "1").map(|s| s.id), Some(1));
        assert_eq!(find_sensor(sensors, "9").map(|s| s.id), None);
    }
}
