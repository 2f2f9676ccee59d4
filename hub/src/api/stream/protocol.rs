//! The JSON text messages of the live stream (`GET /api/v1/stream`), both
//! ways, and its close codes; docs/API.md ("Live stream") is the reference.
//!
//! Only types and their encoding live here, no I/O: the connection task
//! ([`super::client`]) parses what a browser sends with [`parse`], and the
//! dispatcher ([`super::fanout`]) renders each event once with
//! [`ServerMessage::render`] and shares the text among every client that
//! wants it.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::commands::view::{CommandView, value_json};
use crate::events::{PresenceEvent, TelemetryEvent};

/// The protocol version `welcome` announces.
pub const PROTOCOL: u32 = 1;

/// Most device ids one `subscribe` may name.
pub const MAX_SUBSCRIBED: usize = 1000;

/// Most devices a snapshot lists (then `truncated: true`).
pub const MAX_SNAPSHOT_DEVICES: usize = 10_000;

/// Close code: the `auth` message carried a key that is unknown, wrong or revoked.
pub const CLOSE_INVALID_KEY: u16 = 4001;
/// Close code: no `auth` message within the handshake timeout.
pub const CLOSE_AUTH_TIMEOUT: u16 = 4008;

/// What a browser may send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The API key; must be the first message.
    Auth {
        /// `<key-id>.<secret>`, as in `Authorization: Bearer`.
        key: String,
    },
    /// Replaces the set of devices whose telemetry this client receives.
    Subscribe {
        /// Device ids (at most [`MAX_SUBSCRIBED`]); empty: no telemetry.
        devices: Vec<String>,
    },
}

/// Parses one text message; the error is the text of the `error` answer.
pub fn parse(text: &str) -> Result<ClientMessage, String> {
    let message: ClientMessage =
        serde_json::from_str(text).map_err(|err| format!("bad message: {err}"))?;
    if let ClientMessage::Subscribe { devices } = &message
        && devices.len() > MAX_SUBSCRIBED
    {
        return Err(format!(
            "subscribe names {} devices; at most {MAX_SUBSCRIBED} are allowed (subscription unchanged)",
            devices.len()
        ));
    }
    Ok(message)
}

/// Why a snapshot was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// Right after `welcome`.
    Start,
    /// The client's queue overflowed; what it missed was dropped.
    Lagged,
}

/// One device in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceState {
    /// Public id.
    pub id: String,
    /// Name (null when unknown).
    pub name: Option<String>,
    /// Connected to a hub now.
    pub online: bool,
    /// Last frame or heartbeat, ms since the epoch; null if it never connected.
    pub last_seen_ms: Option<i64>,
}

/// One reading of a `telemetry` message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingJson<'a> {
    /// Sensor id.
    pub sensor: u16,
    /// Declared sensor name (null if the sensor was not declared).
    pub name: Option<&'a str>,
    /// Declared unit (null if the sensor was not declared).
    pub unit: Option<&'a str>,
    /// Time, ms since the epoch.
    pub t: i64,
    /// A number, or `true`/`false`.
    pub v: serde_json::Value,
}

/// The `stats` numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Devices with a live session on this hub.
    pub connected_devices: usize,
    /// Readings received per second, recent window.
    pub readings_per_sec: f64,
    /// Telemetry frames received per second, recent window.
    pub frames_per_sec: f64,
    /// Command status changes since start, by status.
    pub commands: BTreeMap<&'static str, u64>,
}

/// What the hub sends; every message has a `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// After a good `auth`.
    Welcome {
        /// [`PROTOCOL`].
        protocol: u32,
        /// The key's role.
        role: &'a str,
        /// This hub's instance name.
        instance: &'a str,
        /// The key's public id.
        key_id: &'a str,
    },
    /// Every device's presence, after `welcome` and after a lag.
    Snapshot {
        /// Why it was sent.
        reason: SnapshotReason,
        /// When it was read, ms since the epoch.
        at_ms: i64,
        /// Devices in creation order, at most [`MAX_SNAPSHOT_DEVICES`].
        devices: Vec<DeviceState>,
        /// More devices exist than were listed.
        truncated: bool,
    },
    /// A device came online or went offline (every device).
    Presence {
        /// Its public id.
        device: &'a str,
        /// Online now.
        online: bool,
        /// The session's counter: the highest one wins.
        session_counter: i64,
        /// When, ms since the epoch.
        at_ms: i64,
    },
    /// Stored readings of a subscribed device.
    Telemetry {
        /// Its public id.
        device: &'a str,
        /// The frame's readings.
        readings: Vec<ReadingJson<'a>>,
    },
    /// A command changed status (every device).
    Command {
        /// As `GET /devices/{id}/commands/{command_id}` shows it.
        command: Box<CommandView>,
    },
    /// Once a second.
    Stats(Stats),
    /// A message that could not be used; the connection stays open.
    Error {
        /// What was wrong.
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The message as a WebSocket text payload, shareable among clients.
    pub fn render(&self) -> Utf8Bytes {
        // Only strings, numbers and string-keyed maps: encoding cannot fail.
        // An empty text would be a bug; it is logged rather than panicking.
        match serde_json::to_string(self) {
            Ok(text) => Utf8Bytes::from(text),
            Err(err) => {
                tracing::error!(%err, "could not encode a stream message");
                Utf8Bytes::from_static("{\"type\":\"error\",\"message\":\"internal error\"}")
            }
        }
    }

    /// A `presence` message for `event`.
    pub fn presence(event: &PresenceEvent) -> ServerMessage<'_> {
        ServerMessage::Presence {
            device: &event.device_id,
            online: event.online,
            session_counter: event.session_counter,
            at_ms: event.at_ms,
        }
    }

    /// A `telemetry` message for `event`.
    pub fn telemetry(event: &TelemetryEvent) -> ServerMessage<'_> {
        let device = &event.device;
        ServerMessage::Telemetry {
            device: &device.id,
            readings: event
                .readings
                .iter()
                .map(|r| {
                    let (name, unit) = device.sensor(r.sensor).unzip();
                    ReadingJson {
                        sensor: r.sensor,
                        name,
                        unit,
                        t: r.time_ms,
                        v: value_json(r.value),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::DeviceLabel;
    use crate::store::ReadingRow;
    use schema::Value;

    #[test]
    fn client_messages_parse_and_refuse_the_rest() {
        assert_eq!(
            parse(r#"{"type":"auth","key":"a.b"}"#),
            Ok(ClientMessage::Auth { key: "a.b".into() })
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","devices":["x","y"]}"#),
            Ok(ClientMessage::Subscribe {
                devices: vec!["x".into(), "y".into()]
            })
        );
        for bad in [
            "not json",
            r#"{"type":"hello"}"#,
            r#"{"devices":[]}"#,
            r#"{"type":"subscribe","devices":"x"}"#,
            r#"{"type":"auth","key":"k","extra":1}"#,
            "[]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_SUBSCRIBED).map(|i| format!("d{i}")).collect();
        let text = serde_json::json!({"type": "subscribe", "devices": many}).to_string();
        let err = parse(&text).expect_err("too many");
        assert!(err.contains("at most 1000"), "{err}");
    }

    #[test]
    fn server_messages_carry_their_type() {
        let label = Arc::new(DeviceLabel {
            id: "dev".into(),
            sensors: vec![(1, "temperature".into(), "°C".into())],
        });
        let event = TelemetryEvent {
            device: label,
            seq: 1,
            readings: vec![
                ReadingRow {
                    device_pk: 1,
                    sensor: 1,
                    time_ms: 5,
                    value: Value::Float(20.5),
                },
                ReadingRow {
                    device_pk: 1,
                    sensor: 9,
                    time_ms: 6,
                    value: Value::Bool(true),
                },
            ],
        };
        let text = ServerMessage::telemetry(&event).render();
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "telemetry", "device": "dev", "readings": [
                {"sensor": 1, "name": "temperature", "unit": "°C", "t": 5, "v": 20.5},
                {"sensor": 9, "name": null, "unit": null, "t": 6, "v": true},
            ]})
        );
        let text = ServerMessage::Snapshot {
            reason: SnapshotReason::Lagged,
            at_ms: 1,
            devices: vec![],
            truncated: false,
        }
        .render();
        assert_eq!(
            &*text,
            r#"{"type":"snapshot","reason":"lagged","at_ms":1,"devices":[],"truncated":false}"#
        );
        let text = ServerMessage::Stats(Stats {
            at_ms: 1,
            connected_devices: 2,
            readings_per_sec: 0.5,
            frames_per_sec: 0.25,
            commands: BTreeMap::from([("queued", 3)]),
        })
        .render();
        assert_eq!(
            &*text,
            r#"{"type":"stats","at_ms":1,"connected_devices":2,"readings_per_sec":0.5,"frames_per_sec":0.25,"commands":{"queued":3}}"#
        );
    }
}
