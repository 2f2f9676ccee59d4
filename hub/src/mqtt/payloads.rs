//! The JSON the bridge publishes, one function per message kind.
//!
//! Kept apart from the publishing code so the shapes are written down once,
//! tested without a broker, and match the HTTP API where they overlap:
//! command status is exactly the API's [`CommandView`], times are RFC 3339
//! with milliseconds ([`format_ms`]), values are plain JSON
//! ([`value_json`]), refusals use the API's `{"error": {...}}` shape.
//!
//! - telemetry: `{"device": ID, "seq": N, "readings": [{"sensor": NAME,
//!   "sensor_id": N, "unit": U, "time": RFC3339, "value": V}]}`;
//! - presence: `{"device": ID, "online": BOOL, "session": COUNTER, "at": RFC3339}`;
//! - command status: the [`CommandView`];
//! - refusal: `{"error": {"code": C, "message": M, "field": F}, "topic": REQUEST_TOPIC}`
//!   (`field` only when one input is to blame).

use serde::Serialize;

use crate::api::time::format_ms;
use crate::commands::view::{CommandView, value_json};
use crate::events::{PresenceEvent, TelemetryEvent};
use crate::store::CommandRecord;

/// A payload that could not be encoded (not expected: every shape here is
/// plain data, but the encoder's error is reported rather than unwrapped).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode MQTT payload: {0}")]
pub struct PayloadError(#[from] serde_json::Error);

#[derive(Serialize)]
struct Telemetry<'a> {
    device: &'a str,
    seq: u64,
    readings: Vec<Reading<'a>>,
}

#[derive(Serialize)]
struct Reading<'a> {
    /// Declared name; null only if the sensor is unknown to the label.
    sensor: Option<&'a str>,
    sensor_id: u16,
    unit: Option<&'a str>,
    time: String,
    value: serde_json::Value,
}

/// A stored telemetry frame as JSON.
pub fn telemetry(event: &TelemetryEvent) -> Result<Vec<u8>, PayloadError> {
    let readings = event
        .readings
        .iter()
        .map(|r| {
            let declared = event.device.sensor(r.sensor);
            Reading {
                sensor: declared.map(|(name, _)| name),
                sensor_id: r.sensor,
                unit: declared.map(|(_, unit)| unit),
                time: format_ms(r.time_ms),
                value: value_json(r.value),
            }
        })
        .collect();
    Ok(serde_json::to_vec(&Telemetry {
        device: &event.device.id,
        seq: event.seq,
        readings,
    })?)
}

#[derive(Serialize)]
struct Presence<'a> {
    device: &'a str,
    online: bool,
    session: i64,
    at: String,
}

/// A presence change as JSON; `session` is the device's session counter.
pub fn presence(event: &PresenceEvent) -> Result<Vec<u8>, PayloadError> {
    Ok(serde_json::to_vec(&Presence {
        device: &event.device_id,
        online: event.online,
        session: event.session_counter,
        at: format_ms(event.at_ms),
    })?)
}

/// A command's state as JSON: the HTTP API's view of it.
pub fn command(record: &CommandRecord) -> Result<Vec<u8>, PayloadError> {
    Ok(serde_json::to_vec(&CommandView::from(record))?)
}

#[derive(Serialize)]
struct Refusal<'a> {
    error: ErrorBody<'a>,
    topic: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// Why the request that arrived on `request_topic` was refused.
pub fn refusal(
    code: &str,
    message: &str,
    field: Option<&str>,
    request_topic: &str,
) -> Result<Vec<u8>, PayloadError> {
    Ok(serde_json::to_vec(&Refusal {
        error: ErrorBody {
            code,
            message,
            field,
        },
        topic: request_topic,
    })?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use schema::Value;
    use serde_json::json;

    use super::*;
    use crate::events::DeviceLabel;
    use crate::store::{CommandAction, CommandStatus, ReadingRow};

    fn parse(bytes: Result<Vec<u8>, PayloadError>) -> serde_json::Value {
        serde_json::from_slice(&bytes.expect("encodes")).expect("valid JSON")
    }

    #[test]
    fn telemetry_names_sensors_and_units() {
        let event = TelemetryEvent {
            device: Arc::new(DeviceLabel {
                id: "0f3a".into(),
                sensors: vec![
                    (1, "temperature".into(), "°C".into()),
                    (2, "door".into(), String::new()),
                ],
            }),
            seq: 7,
            readings: vec![
                ReadingRow {
                    device_pk: 1,
                    sensor: 1,
                    time_ms: 1_700_000_000_250,
                    value: Value::Float(21.5),
                },
                ReadingRow {
                    device_pk: 1,
                    sensor: 2,
                    time_ms: 1_700_000_000_251,
                    value: Value::Bool(true),
                },
                ReadingRow {
                    device_pk: 1,
                    sensor: 9,
                    time_ms: 0,
                    value: Value::Int(-3),
                },
            ],
        };
        assert_eq!(
            parse(telemetry(&event)),
            json!({"device": "0f3a", "seq": 7, "readings": [
                {"sensor": "temperature", "sensor_id": 1, "unit": "°C",
                 "time": "2023-11-14T22:13:20.250Z", "value": 21.5},
                {"sensor": "door", "sensor_id": 2, "unit": "",
                 "time": "2023-11-14T22:13:20.251Z", "value": true},
                {"sensor": null, "sensor_id": 9, "unit": null,
                 "time": "1970-01-01T00:00:00.000Z", "value": -3},
            ]})
        );
    }

    #[test]
    fn presence_carries_the_session_counter() {
        let event = PresenceEvent {
            device_id: "0f3a".into(),
            online: false,
            session_counter: 12,
            at_ms: 1_700_000_000_000,
        };
        assert_eq!(
            parse(presence(&event)),
            json!({"device": "0f3a", "online": false, "session": 12,
                   "at": "2023-11-14T22:13:20.000Z"})
        );
    }

    #[test]
    fn refusals_name_the_field_only_when_known() {
        assert_eq!(
            parse(refusal(
                "invalid",
                "bad",
                Some("value"),
                "hub/devices/a/commands"
            )),
            json!({"error": {"code": "invalid", "message": "bad", "field": "value"},
                   "topic": "hub/devices/a/commands"})
        );
        assert_eq!(
            parse(refusal("bad_request", "not JSON", None, "t")),
            json!({"error": {"code": "bad_request", "message": "not JSON"}, "topic": "t"})
        );
    }

    #[test]
    fn command_status_is_the_api_view() {
        let record = CommandRecord {
            id: 42,
            device_pk: 1,
            device_id: "0f3a".into(),
            actuator_id: 1,
            actuator_name: "relay".into(),
            action: CommandAction::Set(Value::Bool(true)),
            idempotency_key: None,
            source: "mqtt".into(),
            status: CommandStatus::Queued,
            created_ms: 0,
            expires_ms: 60_000,
            sent_ms: None,
            delivered_ms: None,
            finished_ms: None,
            attempts: 0,
            result_value: None,
            reason: None,
            reply: None,
        };
        let json = parse(command(&record));
        assert_eq!(json["id"], 42);
        assert_eq!(json["status"], "queued");
        assert_eq!(json["value"], true);
        assert_eq!(json["source"], "mqtt");
        assert_eq!(json["expires_at"], "1970-01-01T00:01:00.000Z");
    }
}
