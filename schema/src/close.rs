//! WebSocket close codes the hub sends on the device socket.
//!
//! Standard codes where one fits, the private 4000-4999 range for the hub's
//! own reasons. `docs/PROTOCOL.md` lists what a device should do after each:
//! [`should_reconnect`] encodes the same rule.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The hub is shutting down; reconnect (perhaps to another hub) with backoff.
pub const GOING_AWAY: u16 = 1001;
/// Protocol violation, for example a second Hello or a downlink frame sent uplink.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text message; the protocol is binary only.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A binary message that is not a valid frame.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A frame not allowed in the current state, for example Telemetry before Hello.
pub const POLICY_VIOLATION: u16 = 1008;
/// A message larger than `Limits::max_message_bytes`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The hub failed internally; reconnect with backoff.
pub const INTERNAL_ERROR: u16 = 1011;
/// A newer connection of the same device replaced this one; do not reconnect
/// from this connection's context (the newer one is live).
pub const SESSION_REPLACED: u16 = 4000;
/// The device's credentials were revoked or rotated; stop until reprovisioned.
pub const CREDENTIALS_REVOKED: u16 = 4001;
/// Hello named a protocol version the hub does not speak; stop (update firmware).
pub const UNSUPPORTED_VERSION: u16 = 4002;
/// Nothing (not even a pong) arrived within the idle timeout; reconnect.
pub const IDLE_TIMEOUT: u16 = 4003;
/// No Hello arrived within the Hello timeout after the upgrade; reconnect.
pub const HELLO_TIMEOUT: u16 = 4004;
/// Hello was malformed (duplicate ids, bad names, too many entries); stop.
pub const INVALID_HELLO: u16 = 4005;
/// The device stopped reading: a downlink frame could not be written within
/// the hub's send timeout, so the connection was dropped rather than let its
/// queue grow; reconnect with backoff (and read what the hub sends).
pub const SLOW_CONSUMER: u16 = 4006;

/// Whether a device should reconnect (with backoff) after the hub closed with `code`.
///
/// Codes that mean "the same firmware will be refused again" (revoked
/// credentials, unsupported version, invalid Hello) say no, as does a
/// replacement (another connection of this device is live).
pub fn should_reconnect(code: u16) -> bool {
    !matches!(
        code,
        SESSION_REPLACED | CREDENTIALS_REVOKED | UNSUPPORTED_VERSION | INVALID_HELLO
    )
}
