//! Errors of the protocol core.
//!
//! Plain enums with a hand-written `Display`, so they work without `std` and
//! without `thiserror`; the tokio transport wraps them in its own types.

use crate::session::StopReason;
use schema::{DecodeError, EncodeError};

/// Why the session could not process an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// A frame did not fit in the buffer given (make it at least
    /// [`Session::telemetry_buffer_len`](crate::Session::telemetry_buffer_len)
    /// bytes, and large enough for Hello).
    Encode(EncodeError),
    /// A received message is not a valid downlink frame; it was ignored.
    Decode(DecodeError),
    /// There is no connection (call `connected` first).
    NotConnected,
    /// The session stopped and will not reconnect.
    Stopped(StopReason),
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionError::Encode(err) => write!(f, "cannot encode frame: {err}"),
            SessionError::Decode(err) => write!(f, "invalid downlink frame: {err}"),
            SessionError::NotConnected => f.write_str("no connection"),
            SessionError::Stopped(reason) => write!(f, "session stopped: {reason}"),
        }
    }
}

impl core::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            SessionError::Encode(err) => Some(err),
            SessionError::Decode(err) => Some(err),
            SessionError::NotConnected | SessionError::Stopped(_) => None,
        }
    }
}
