//! The hub's browser-stream messages (`GET /api/v1/stream`), as a browser
//! would read them.
//!
//! `watch` is a load generator for the stream, so it must cost the hub what
//! a real console costs it: every text frame is parsed into these types
//! (every reading's fields included), not counted and dropped unread. The
//! types follow the contract of docs/API.md; fields a newer hub may add are
//! ignored, and a message of a type this build does not know is
//! [`ServerMessage::Unknown`] rather than an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Messages the client sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage<'a> {
    /// The first message: the API key (browsers cannot set headers on a
    /// WebSocket).
    Auth {
        /// The API key.
        key: &'a str,
    },
    /// Replace the set of devices whose telemetry this client receives.
    Subscribe {
        /// Device ids (at most 1,000).
        devices: &'a [String],
    },
}

impl ClientMessage<'_> {
    /// The message as the JSON text frame to send.
    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Messages the hub sends; every one has a `"type"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Right after a good auth.
    Welcome {
        /// Stream protocol version.
        #[serde(default)]
        protocol: u32,
        /// The key's role.
        #[serde(default)]
        role: String,
        /// The hub instance serving this connection.
        #[serde(default)]
        instance: String,
        /// The key's id.
        #[serde(default)]
        key_id: String,
    },
    /// The whole fleet's state: after welcome, and after this client fell
    /// behind and lost messages.
    Snapshot {
        /// `start` or `lagged`.
        reason: String,
        /// When the snapshot was taken (ms since the epoch).
        #[serde(default)]
        at_ms: u64,
        /// Up to 10,000 devices.
        #[serde(default)]
        devices: Vec<SnapshotDevice>,
        /// More devices exist than were sent.
        #[serde(default)]
        truncated: bool,
    },
    /// A device connected or disconnected.
    Presence {
        /// Device id.
        device: String,
        /// Connected now.
        online: bool,
        /// Sessions the device has had.
        #[serde(default)]
        session_counter: Option<u64>,
        /// When (ms since the epoch).
        #[serde(default)]
        at_ms: u64,
    },
    /// Stored readings of a subscribed device.
    Telemetry {
        /// Device id.
        device: String,
        /// The readings, in the order the device sent them.
        readings: Vec<Reading>,
    },
    /// A command changed status; the object `GET …/commands/{id}` returns.
    Command {
        /// The command as the REST API shows it.
        command: serde_json::Value,
    },
    /// Hub-wide rates, every second.
    Stats {
        /// When (ms since the epoch).
        #[serde(default)]
        at_ms: u64,
        /// Devices connected to this hub.
        #[serde(default)]
        connected_devices: u64,
        /// Readings stored per second.
        #[serde(default)]
        readings_per_sec: f64,
        /// Telemetry frames per second.
        #[serde(default)]
        frames_per_sec: f64,
        /// Commands by status.
        #[serde(default)]
        commands: BTreeMap<String, u64>,
    },
    /// Something the client sent was refused; the connection stays open.
    Error {
        /// What went wrong.
        #[serde(default)]
        message: String,
    },
    /// A type this build does not know.
    #[serde(other)]
    Unknown,
}

/// A device in a snapshot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnapshotDevice {
    /// Device id.
    pub id: String,
    /// Its name, if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// Connected now.
    #[serde(default)]
    pub online: bool,
    /// Last frame or heartbeat (ms since the epoch).
    #[serde(default)]
    pub last_seen_ms: Option<u64>,
}

/// One reading of a telemetry message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reading {
    /// Sensor id, as declared in the device's Hello.
    pub sensor: u16,
    /// Sensor name.
    #[serde(default)]
    pub name: Option<String>,
    /// Unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Timestamp (ms since the epoch, the device's clock).
    pub t: u64,
    /// The value.
    pub v: ReadingValue,
}

/// A reading's value: a number for float and int sensors, a boolean for
/// bool sensors.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ReadingValue {
    /// Float or int.
    Number(f64),
    /// Bool.
    Bool(bool),
}

/// Parses one text frame.
pub fn parse(text: &str) -> serde_json::Result<ServerMessage> {
    serde_json::from_str(text)
}

/// The kinds of [`ServerMessage`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// [`ServerMessage::Welcome`].
    Welcome,
    /// [`ServerMessage::Snapshot`].
    Snapshot,
    /// [`ServerMessage::Presence`].
    Presence,
    /// [`ServerMessage::Telemetry`].
    Telemetry,
    /// [`ServerMessage::Command`].
    Command,
    /// [`ServerMessage::Stats`].
    Stats,
    /// [`ServerMessage::Error`].
    Error,
    /// [`ServerMessage::Unknown`].
    Unknown,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; 8] = [
        Kind::Welcome,
        Kind::Snapshot,
        Kind::Presence,
        Kind::Telemetry,
        Kind::Command,
        Kind::Stats,
        Kind::Error,
        Kind::Unknown,
    ];

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `type` as the hub spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::Snapshot => "snapshot",
            Kind::Presence => "presence",
            Kind::Telemetry => "telemetry",
            Kind::Command => "command",
            Kind::Stats => "stats",
            Kind::Error => "error",
            Kind::Unknown => "unknown",
        }
    }
}

impl ServerMessage {
    /// Which kind of message this is.
    pub fn kind(&self) -> Kind {
        match self {
            ServerMessage::Welcome { .. } => Kind::Welcome,
            ServerMessage::Snapshot { .. } => Kind::Snapshot,
            ServerMessage::Presence { .. } => Kind::Presence,
            ServerMessage::Telemetry { .. } => Kind::Telemetry,
            ServerMessage::Command { .. } => Kind::Command,
            ServerMessage::Stats { .. } => Kind::Stats,
            ServerMessage::Error { .. } => Kind::Error,
            ServerMessage::Unknown => Kind::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_are_the_contracts_json() {
        assert_eq!(
            ClientMessage::Auth { key: "k.1" }.to_json(),
            r#"{"type":"auth","key":"k.1"}"#
        );
        let ids = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            ClientMessage::Subscribe { devices: &ids }.to_json(),
            r#"{"type":"subscribe","devices":["a","b"]}"#
        );
    }

    #[test]
    fn every_server_message_of_the_contract_parses() -> serde_json::Result<()> {
        let welcome = parse(
            r#"{"type":"welcome","protocol":1,"role":"operator","instance":"i-1","key_id":"abc"}"#,
        )?;
        assert_eq!(welcome.kind(), Kind::Welcome);
        let snapshot = parse(
            r#"{"type":"snapshot","reason":"lagged","at_ms":5,"truncated":false,
                "devices":[{"id":"d1","name":null,"online":true,"last_seen_ms":null},
                           {"id":"d2","name":"pump","online":false,"last_seen_ms":7}]}"#,
        )?;
        match snapshot {
            ServerMessage::Snapshot {
                reason, devices, ..
            } => {
                assert_eq!(reason, "lagged");
                assert_eq!(devices.len(), 2);
                assert_eq!(devices[1].name.as_deref(), Some("pump"));
                assert_eq!(devices[1].last_seen_ms, Some(7));
            }
            other => panic!("not a snapshot: {other:?}"),
        }
        let telemetry = parse(
            r#"{"type":"telemetry","device":"d1","readings":[
                {"sensor":1,"name":"temperature","unit":"°C","t":1700000000000,"v":20.5},
                {"sensor":2,"name":"count","unit":"","t":1700000000001,"v":3},
                {"sensor":3,"name":"relay","unit":"","t":1700000000002,"v":true}]}"#,
        )?;
        match telemetry {
            ServerMessage::Telemetry { device, readings } => {
                assert_eq!(device, "d1");
                let values: Vec<ReadingValue> = readings.iter().map(|r| r.v).collect();
                assert_eq!(
                    values,
                    [
                        ReadingValue::Number(20.5),
                        ReadingValue::Number(3.0),
                        ReadingValue::Bool(true)
                    ]
                );
                assert_eq!(readings[0].unit.as_deref(), Some("°C"));
            }
            other => panic!("not telemetry: {other:?}"),
        }
        for (text, kind) in [
            (
                r#"{"type":"presence","device":"d1","online":true,"session_counter":7,"at_ms":1}"#,
                Kind::Presence,
            ),
            (
                r#"{"type":"command","command":{"id":"c1","status":"sent"}}"#,
                Kind::Command,
            ),
            (
                r#"{"type":"stats","at_ms":1,"connected_devices":1000,"readings_per_sec":3.2e5,
                    "frames_per_sec":6400,"commands":{"queued":0,"sent":1,"delivered":0,
                    "succeeded":4,"failed":0,"rejected":0,"expired":0}}"#,
                Kind::Stats,
            ),
            (r#"{"type":"error","message":"too many ids"}"#, Kind::Error),
            (r#"{"type":"from_the_future","x":1}"#, Kind::Unknown),
        ] {
            assert_eq!(parse(text)?.kind(), kind, "{text}");
        }
        Ok(())
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"no":"type"}"#).is_err());
        assert!(parse(r#"{"type":"telemetry","device":"d1","readings":[{"sensor":1}]}"#).is_err());
        assert!(
            parse(r#"{"type":"telemetry","device":"d","readings":[{"sensor":1,"t":1,"v":"x"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn kinds_index_their_table() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
