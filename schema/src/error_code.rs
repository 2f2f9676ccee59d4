//! Codes carried by the `Error` downlink frame.
//!
//! An Error frame reports a problem that does not end the connection. Codes
//! are plain `u16`s so a device tolerates codes added by newer hubs.

/// A Telemetry frame named a sensor id that Hello did not declare; the whole
/// frame was rejected (nothing of it stored) and its `seq` is still acked.
pub const UNKNOWN_SENSOR: u16 = 1;
/// A reading's value kind differs from its sensor's declared kind; frame rejected.
pub const WRONG_VALUE_KIND: u16 = 2;
/// A float reading was NaN or infinite; frame rejected.
pub const NON_FINITE_VALUE: u16 = 3;
/// A reading's time is before 2000-01-01 or too far in the future; frame rejected.
pub const BAD_TIMESTAMP: u16 = 4;
/// A Telemetry frame carried more readings than `Limits::max_readings_per_frame`
/// or none at all; frame rejected.
pub const BAD_BATCH_SIZE: u16 = 5;
/// A CommandResult named a command this device does not have.
pub const UNKNOWN_COMMAND: u16 = 6;
/// A Telemetry frame used sequence number 0, which is reserved; frame rejected.
pub const BAD_SEQUENCE: u16 = 7;
/// The device sends faster than its rate limit (frames/s or readings/s).
/// Informational (no `seq`): nothing was dropped, the hub slows its reading of
/// the socket; if the device keeps exceeding the limit the hub closes with
/// 1008 and unacked frames are resent after the reconnect.
pub const RATE_LIMITED: u16 = 8;
