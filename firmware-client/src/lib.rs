//! Device-side library for the hub.
//!
//! Two layers, as in the postcard and rumqttc crates this project takes as
//! models:
//!
//! - **The protocol core** (always available, `no_std`, no allocator, no
//!   I/O): the [`Outbox`] of unacknowledged readings over a [`Storage`], the
//!   [`Session`] state machine that turns received frames into outbox updates
//!   and frames to send, the [`CommandLog`] that decides how to answer each
//!   command and remembers the answer so the device acts at most once per
//!   command id, and the [`Backoff`] between connection attempts. Firmware
//!   with its own network stack drives these directly.
//! - **The tokio transport** (feature `std`, on by default): [`Device`] runs
//!   one connection task over tokio-tungstenite (ws:// or wss:// through
//!   rustls) that reconnects with backoff, resends what was not acknowledged,
//!   runs the application's actuator handlers for commands
//!   ([`DeviceConfig::on_command`]), and reports its [`ConnectionState`].
//!
//! The durability contract: a reading stays in the outbox until the hub
//! acknowledges the frame that carries it; a full outbox is an error the
//! application sees (or, with `Device::push`, waits out), never a silent drop.
//!
//! # With tokio
//!
//! ```no_run
//! # #[cfg(feature = "std")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use firmware_client::schema::{Value, ValueKind};
//! use firmware_client::{Device, DeviceConfig};
//!
//! let config = DeviceConfig::new("wss://hub.example/ws/device", "dev-1.secret")
//!     .sensor(1, "temperature", "°C", ValueKind::Float);
//! let device = Device::start(config)?;
//! device.push(1, 1_700_000_000_000, Value::Float(21.5)).await?;
//! device.flush(Duration::from_secs(5)).await;
//! let unacked = device.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Without an allocator
//!
//! The firmware owns the socket; the session says what to write.
//!
//! ```
//! use firmware_client::schema::{SensorDecl, Value, ValueKind};
//! use firmware_client::{ArrayStorage, Event, Session, SessionConfig};
//! # use firmware_client::schema::{Downlink, Limits, Welcome, encode_downlink};
//!
//! const SENSORS: [SensorDecl<'static>; 1] =
//!     [SensorDecl { id: 1, name: "temperature", unit: "°C", kind: ValueKind::Float }];
//! // 256 readings, 4 frames in flight, 32 readings per frame: about 9 KiB.
//! let mut session = Session::new(ArrayStorage::<256, 4, 32>::new(), SessionConfig::new());
//! let mut buf = [0u8; 1024];
//!
//! session.push(1, 1_700_000_000_000, Value::Float(21.5)).expect("room");
//! // Connected: write Hello first.
//! let hello = session.connected("fw 1.0", &SENSORS, &[], &mut buf).expect("fits");
//! # let mut wbuf = [0u8; 64];
//! # let welcome = Downlink::Welcome(Welcome { device_id: "dev-1", server_time_ms: 0,
//! #     last_stored_seq: 0, limits: Limits { max_message_bytes: 65536,
//! #     max_readings_per_frame: 2048, idle_timeout_ms: 60000 } });
//! # let message = encode_downlink(&welcome, &mut wbuf).expect("fits");
//! // For every binary message received:
//! match session.handle_downlink(message, |acked| { /* acked.seq, acked.readings */ }) {
//!     Ok(Event::Welcome { device_id, .. }) => assert_eq!(device_id, "dev-1"),
//!     Ok(_other) => {}
//!     Err(_malformed) => {}
//! }
//! // After every event and timer: write what the window allows (`now` is
//! // any monotonic clock; partial frames after a linger of your choice).
//! let now = 0;
//! while let Some(frame) = session.poll_transmit(now, true, &mut buf).expect("fits") {
//!     assert_eq!((frame.seq, frame.readings), (1, 1));
//!     // write frame.bytes as one binary WebSocket message
//! }
//! ```
//!
//! # Commands without an allocator
//!
//! A [`CommandLog`] applies the protocol's rules (expiry, declared actuator,
//! value kind) and remembers each id's outcome; the firmware runs what it
//! says to run. Command results are small and never wait for the telemetry
//! window; they are not kept in the outbox (after a lost connection the hub
//! resends the command and the log answers it).
//!
//! ```
//! use firmware_client::schema::{ActuatorDecl, Command, CommandAction, Value, ValueKind};
//! use firmware_client::{CommandLog, Decision, Outcome, encode_command_result};
//!
//! const ACTUATORS: [ActuatorDecl<'static>; 1] =
//!     [ActuatorDecl { id: 1, name: "relay", kind: ValueKind::Bool }];
//! // The last 32 command ids with their outcomes (about 4.5 KiB; a `static`
//! // in firmware, and worth persisting if commands must not repeat across
//! // a reboot).
//! let mut log = CommandLog::<[_; 32]>::new_inline();
//! let mut buf = [0u8; firmware_client::MAX_COMMAND_RESULT_BYTES];
//! # let command = Command { id: 7, actuator: 1, action: CommandAction::Set(Value::Bool(true)),
//! #     expires_at_ms: 0 };
//! # let now_ms = 1_700_000_000_000;
//! // On `Event::Command(command)`, with the device clock in ms since the epoch:
//! let decision = log.receive(&command, &ACTUATORS[..], now_ms);
//! let reply = encode_command_result(command.id, &decision.reply(), &mut buf).expect("fits");
//! // write `reply` (Delivered, a refusal, or a repeated outcome), then:
//! if decision == Decision::Run {
//!     let outcome = match command.action {
//!         CommandAction::Set(Value::Bool(on)) => Outcome::Succeeded(Some(Value::Bool(on))),
//!         _ => Outcome::from_result(Err("the relay only takes Set")),
//!     };
//!     log.finish(command.id, outcome);
//!     let result = encode_command_result(command.id, &outcome, &mut buf).expect("fits");
//!     // write `result`
//! #   assert_eq!(result, [2, 7, 1, 1, 2, 1]);
//! }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod backoff;
mod command;
mod command_log;
mod error;
mod outbox;
mod session;
mod storage;

#[cfg(feature = "std")]
mod client;

pub use backoff::Backoff;
pub use command::{
    ActuatorTable, MAX_COMMAND_RESULT_BYTES, Outcome, Reason, Rejection, check_command,
    encode_command_result, is_expired, truncate_reason,
};
pub use command_log::{CommandLog, Decision, LogFull, Remembered};
pub use error::SessionError;
pub use outbox::{
    AckSummary, AckedFrame, MAX_READING_BYTES, MAX_TELEMETRY_OVERHEAD_BYTES, Outbox, OutboxFull,
    Transmit, max_telemetry_bytes, readings_within,
};
pub use session::{Disconnect, Event, Next, Session, SessionConfig, SessionState, StopReason};
#[cfg(feature = "std")]
pub use storage::HeapStorage;
pub use storage::{ArrayStorage, EMPTY_READING, Entry, FrameSlot, Parts, Storage};

#[cfg(feature = "std")]
pub use client::{
    AckInfo, AckObserver, Action, ActuatorSpec, CommandCall, CommandHandler, ConfigError,
    ConnectionState, Device, DeviceConfig, PushError, SensorSpec, Stats,
};

/// The wire protocol crate, re-exported so applications name one dependency.
pub use schema;
