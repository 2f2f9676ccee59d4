//! Frames a device sends to the hub.
//!
//! Decoding these needs the `alloc` feature (the hub side), because their
//! lists arrive with a length only known at run time. Firmware only encodes
//! them, from borrowed slices, which works in `no_std` without an allocator.

use crate::{List, Value, ValueKind};
use serde::Serialize;

/// A frame from device to hub. Postcard enum tag: `Hello` = 0,
/// `Telemetry` = 1, `CommandResult` = 2.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub enum Uplink<'a> {
    /// First frame of every connection: who the device is and what it has.
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// A batch of readings under one sequence number.
    #[serde(borrow)]
    Telemetry(Telemetry<'a>),
    /// The device's answer to a [`crate::Command`].
    #[serde(borrow)]
    CommandResult(CommandResult<'a>),
}

/// Sent once, first, on every connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub struct Hello<'a> {
    /// Protocol version the device speaks; must equal [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// Free-form firmware version string, stored for operators (at most 64
    /// bytes, no control characters).
    pub firmware: &'a str,
    /// Every sensor the device may report, with a compact id used in readings.
    #[serde(borrow)]
    pub sensors: List<'a, SensorDecl<'a>>,
    /// Every actuator the device accepts commands for.
    #[serde(borrow)]
    pub actuators: List<'a, ActuatorDecl<'a>>,
}

/// A sensor declared in [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub struct SensorDecl<'a> {
    /// Compact id used by [`Reading::sensor`]; unique within the device.
    pub id: u16,
    /// Human name, for example `temperature` (1 to 64 bytes, no control characters).
    pub name: &'a str,
    /// Unit, for example `°C` (at most 16 bytes, may be empty, no control characters).
    pub unit: &'a str,
    /// Kind of every value this sensor reports.
    pub kind: ValueKind,
}

/// An actuator declared in [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub struct ActuatorDecl<'a> {
    /// Compact id used by [`crate::Command::actuator`]; unique within the device.
    pub id: u16,
    /// Human name, for example `relay` (1 to 64 bytes, no control characters).
    pub name: &'a str,
    /// Kind of value a `Set` command carries for this actuator.
    pub kind: ValueKind,
}

/// A batch of readings. The hub answers with [`crate::Ack`] once the batch is
/// committed to its database.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub struct Telemetry<'a> {
    /// Per-device sequence number, starting at 1 and strictly increasing across
    /// the device's lifetime (also across reconnects); resent frames keep their
    /// number. 0 is reserved ("nothing stored" in Welcome) and refused.
    pub seq: u64,
    /// Base time of the batch, milliseconds since the Unix epoch.
    pub base_time_ms: u64,
    /// The readings; each time is `base_time_ms + offset_ms`.
    #[serde(borrow)]
    pub readings: List<'a, Reading>,
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub struct Reading {
    /// A sensor id declared in [`Hello`].
    pub sensor: u16,
    /// Milliseconds after [`Telemetry::base_time_ms`].
    pub offset_ms: u32,
    /// The value, of the sensor's declared kind.
    pub value: Value,
}

/// The device's report on a command.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub struct CommandResult<'a> {
    /// The id from [`crate::Command::id`].
    pub command_id: u64,
    /// What became of it.
    #[serde(borrow)]
    pub outcome: CommandOutcome<'a>,
}

/// What became of a command on the device. Postcard enum tag: `Delivered` = 0,
/// `Succeeded` = 1, `Failed` = 2, `Rejected` = 3.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "alloc", derive(serde::Deserialize))]
pub enum CommandOutcome<'a> {
    /// Received and about to be applied (not final).
    Delivered,
    /// Applied; optionally the actuator's new value.
    Succeeded(Option<Value>),
    /// Tried and failed, with the reason (at most [`crate::MAX_REASON_BYTES`]).
    Failed(&'a str),
    /// Refused without trying (unknown actuator, invalid value...), with the
    /// reason (at most [`crate::MAX_REASON_BYTES`]).
    Rejected(&'a str),
}
