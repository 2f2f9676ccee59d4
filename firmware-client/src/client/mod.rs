//! The tokio transport (feature `std`).
//!
//! A [`Device`] is a cheap handle; one task per device owns the WebSocket
//! (like rumqttc's event loop) and drives the protocol [`Session`](crate::Session).
//! The handle and the task share the session behind a mutex: pushing a
//! reading is a short lock and a slot write, with a wake-up of the task only
//! when a frame's worth is ready or a linger timer must start, so a process
//! can run a thousand devices at hundreds of thousands of readings a second.
//!
//! - `config`: what a device is and how it connects ([`DeviceConfig`]).
//! - `device`: the handle ([`Device`]) and its states.
//! - `eventloop`: the task: connect, run a connection, back off, repeat.
//! - `connection`: one WebSocket connection's handshake and message loop.
//! - `commands`: actuator handlers ([`CommandCall`]) and the task that runs them.
//! - `tls`: rustls client configuration (webpki roots plus extra CAs, an
//!   optional client certificate).
//! - `stats`: counters and the ack observer's report.

mod commands;
mod config;
mod connection;
mod device;
mod error;
mod eventloop;
mod shared;
mod stats;
mod tls;

pub use commands::{Action, CommandCall, CommandHandler};
pub use config::{AckObserver, ActuatorSpec, DeviceConfig, SensorSpec};
pub use device::{ConnectionState, Device};
pub use error::{ConfigError, PushError};
pub use stats::{AckInfo, Stats};
