//! Simulated devices for the hub: a demo, a soak test and the benchmark load.
//!
//! Each simulated device is a real [`firmware_client::Device`] (the same code
//! firmware runs), fed by a cheap generator task that wakes every few tens of
//! milliseconds and pushes the readings due since its last tick. It declares
//! three actuators whose commands change what it reports.
//!
//! - [`args`]: command line, and the hub endpoints derived from `--hub`.
//! - [`provision`]: device credentials: tokens from a file or created through
//!   the HTTP API, or client certificates from a `hub dev-certs` folder.
//! - [`sensors`]: plausible sensor data with strictly increasing timestamps.
//! - [`actuators`]: relay, setpoint and LED, with their command handlers.
//! - [`driver`]: ramp-up, generation, chaos, drain.
//! - [`report`]: progress line, latency histogram, final summary.
//! - [`watch`]: browser-stream clients (`device-sim watch`), the console's
//!   load on a hub.
//! - [`connections`]: many idle authenticated connections and a reconnect
//!   storm (`device-sim connections`), the hub's connection-handling load.

pub mod actuators;
pub mod args;
pub mod connections;
pub mod driver;
pub mod provision;
pub mod report;
pub mod sensors;
pub mod watch;
