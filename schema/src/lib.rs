//! Wire protocol between devices and the hub.
//!
//! One WebSocket binary message carries exactly one frame, encoded with
//! [postcard](https://docs.rs/postcard). Devices send [`Uplink`] frames and
//! receive [`Downlink`] frames. The crate is `no_std` and allocation-free by
//! default so the same types compile into firmware; the `alloc` feature adds
//! the ability to *decode* uplink frames (which carry variable-length lists),
//! which only the hub needs.
//!
//! The byte-level encoding of every frame is specified in `docs/PROTOCOL.md`
//! and pinned by golden vectors in `tests/golden.rs`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod close;
mod codec;
mod downlink;
pub mod error_code;
mod list;
mod uplink;
mod value;

pub use codec::{DecodeError, EncodeError, decode_downlink, encode_downlink, encode_uplink};
#[cfg(feature = "alloc")]
pub use codec::{decode_uplink, encode_downlink_to_vec, encode_uplink_to_vec};
pub use downlink::{
    Ack, Command, CommandAction, Downlink, ErrorFrame, Limits, MAX_COMMAND_ARGS, Welcome,
};
pub use list::List;
pub use uplink::{
    ActuatorDecl, CommandOutcome, CommandResult, Hello, Reading, SensorDecl, Telemetry, Uplink,
};
pub use value::{Value, ValueKind};

/// The protocol version this crate speaks; repeated in [`Hello::version`].
pub const PROTOCOL_VERSION: u16 = 1;

/// The WebSocket subprotocol (`Sec-WebSocket-Protocol`) for [`PROTOCOL_VERSION`].
pub const SUBPROTOCOL: &str = "iothub.v1";

/// Longest reason text in an Error frame, a command outcome or a close frame,
/// in bytes of UTF-8 (the WebSocket close frame's limit).
pub const MAX_REASON_BYTES: usize = 123;

/// Path of the device endpoint on the hub.
pub const DEVICE_PATH: &str = "/ws/device";
