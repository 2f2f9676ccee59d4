//! Frames the hub sends to a device.
//!
//! These decode without an allocator, so firmware can read them in `no_std`:
//! strings borrow from the received message and command arguments use a
//! fixed-capacity vector.

use crate::Value;
use serde::{Deserialize, Serialize};

/// The most arguments a [`CommandAction::Invoke`] may carry.
pub const MAX_COMMAND_ARGS: usize = 8;

/// A frame from hub to device. Postcard enum tag: `Welcome` = 0, `Ack` = 1,
/// `Command` = 2, `Error` = 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Downlink<'a> {
    /// The hub's answer to Hello: the session is open.
    #[serde(borrow)]
    Welcome(Welcome<'a>),
    /// Every telemetry frame up to this sequence number is durably stored.
    Ack(Ack),
    /// Something for an actuator to do.
    #[serde(borrow)]
    Command(Command<'a>),
    /// A problem with something the device sent; the connection stays open.
    #[serde(borrow)]
    Error(ErrorFrame<'a>),
}

/// Answer to Hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome<'a> {
    /// The device id the hub authenticated (the part of the token before the dot).
    pub device_id: &'a str,
    /// The hub's clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// Highest telemetry sequence number settled for this device (0: none):
    /// every frame up to it is committed to the database, or was rejected with
    /// an Error frame and will never be stored. The device drops every outbox
    /// frame up to it and resends the rest.
    pub last_stored_seq: u64,
    /// Limits the device must respect.
    pub limits: Limits,
}

/// Limits announced in [`Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest WebSocket message the hub accepts, in bytes.
    pub max_message_bytes: u32,
    /// Most readings one Telemetry frame may carry.
    pub max_readings_per_frame: u32,
    /// The hub closes a connection silent for longer than this (ms); any frame or
    /// pong counts. The hub pings well within it.
    pub idle_timeout_ms: u32,
}

/// Cumulative acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Every telemetry frame with `seq <= this` is committed to the database.
    pub seq: u64,
}

/// A command for one of the device's actuators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command<'a> {
    /// Hub-wide command id; the device reports on it with `CommandResult` and
    /// must act at most once per id (the same id may arrive again after a reconnect).
    pub id: u64,
    /// An actuator id declared in Hello.
    pub actuator: u16,
    /// What to do.
    #[serde(borrow)]
    pub action: CommandAction<'a>,
    /// After this time (ms since the Unix epoch) the command must not be applied.
    pub expires_at_ms: u64,
}

/// What a command asks for. Postcard enum tag: `Set` = 0, `Invoke` = 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandAction<'a> {
    /// Set the actuator to this value (of its declared kind).
    Set(Value),
    /// Run a named action with arguments.
    Invoke {
        /// Action name (at most 64 bytes).
        name: &'a str,
        /// Arguments, at most [`MAX_COMMAND_ARGS`].
        args: heapless::Vec<Value, MAX_COMMAND_ARGS>,
    },
}

/// A non-fatal error report; see [`crate::error_code`] for the codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame<'a> {
    /// One of [`crate::error_code`]; unknown codes must be tolerated.
    pub code: u16,
    /// Human-readable reason (at most [`crate::MAX_REASON_BYTES`]).
    pub reason: &'a str,
    /// The telemetry sequence number concerned, if any.
    pub seq: Option<u64>,
}
