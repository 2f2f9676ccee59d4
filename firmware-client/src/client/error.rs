//! Errors of the tokio transport.

use crate::session::StopReason;
use schema::ValueKind;

/// A [`DeviceConfig`](crate::DeviceConfig) that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The hub URL is not a `ws://` or `wss://` URL with a host.
    #[error("invalid hub URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as named in `DeviceConfig`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration (extra CA certificates, client certificate or
    /// key) is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// `Device::start` was called outside a tokio runtime.
    #[error("Device::start must be called from within a tokio runtime")]
    NoRuntime,
}

/// Why a reading was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The outbox is full of unacknowledged readings (`try_push` only;
    /// `push` waits instead).
    #[error("outbox full")]
    Full,
    /// The sensor id was not declared in the configuration: the hub would
    /// reject the whole frame carrying it.
    #[error("sensor {0} is not declared")]
    UnknownSensor(u16),
    /// The value's kind differs from the sensor's declared kind.
    #[error("sensor {sensor} reports {expected:?} values, got {got:?}")]
    WrongKind {
        /// The sensor id.
        sensor: u16,
        /// Its declared kind.
        expected: ValueKind,
        /// The kind pushed.
        got: ValueKind,
    },
    /// A NaN or infinite float, which the hub refuses to store.
    #[error("sensor {0}: value is NaN or infinite")]
    NonFinite(u16),
    /// The device stopped (credentials refused, a no-reconnect close code, or
    /// shutdown) and will not send anything any more.
    #[error("device stopped: {0}")]
    Stopped(StopReason),
}
