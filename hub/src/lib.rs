//! The hub: device WebSocket gateway, durable ingest and HTTP API.
//!
//! `main.rs` only parses the command line; everything testable lives here.
//! [`server::run`] wires the parts together on a listener the caller bound, so
//! tests start a real hub on port 0 and stop it with a cancellation token.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod coalesce;
pub mod commands;
pub mod config;
pub mod console;
pub mod events;
pub mod fd_limit;
pub mod gateway;
pub mod ingest;
pub mod listener;
pub mod liveness;
pub mod metrics;
pub mod mqtt;
pub mod presence;
pub mod registry;
pub mod retention;
pub mod server;
pub mod state;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod ws_close;
