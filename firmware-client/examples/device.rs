//! A minimal device: one temperature sensor, one relay, a reading a second.
//!
//! The relay takes `Set(Bool)` commands from the hub; its handler switches it
//! (here: a flag and a log line) and reports the new state, which the hub
//! stores as the command's result.
//!
//! ```sh
//! HUB_URL=ws://127.0.0.1:8080/ws/device HUB_TOKEN=<device-id>.<secret> \
//!     cargo run -p firmware-client --example device
//! ```
//!
//! Ctrl-C flushes what is unacknowledged (up to 5 s) and closes the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use firmware_client::schema::{Value, ValueKind};
use firmware_client::{Action, ConnectionState, Device, DeviceConfig};

const TEMPERATURE: u16 = 1;
const RELAY: u16 = 1;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url =
        std::env::var("HUB_URL").context("set HUB_URL, e.g. ws://127.0.0.1:8080/ws/device")?;
    let token = std::env::var("HUB_TOKEN").context("set HUB_TOKEN to <device-id>.<secret>")?;

    // The relay's state; a real device would drive a GPIO pin here.
    let relay = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&relay);
    let mut config = DeviceConfig::new(url, token)
        .sensor(TEMPERATURE, "temperature", "°C", ValueKind::Float)
        .actuator(RELAY, "relay", ValueKind::Bool)
        // Called at most once per command id, off the socket task. The kind
        // of a Set value was already checked against the declaration.
        .on_command(RELAY, move |call| match call.action {
            Action::Set(Value::Bool(on)) => {
                switch.store(on, Ordering::SeqCst);
                tracing::info!(command = call.id, on, "relay switched");
                Ok(Some(Value::Bool(on)))
            }
            _ => Err("the relay only takes Set(bool)".to_owned()),
        });
    config.firmware = concat!("example-device/", env!("CARGO_PKG_VERSION")).to_owned();
    let device = Device::start(config)?;

    let mut state = device.state();
    tokio::spawn(async move {
        loop {
            let current = state.borrow_and_update().clone();
            match &current {
                ConnectionState::Connected { device_id } => {
                    tracing::info!(device_id, "connected")
                }
                ConnectionState::Stopped { reason } => {
                    tracing::error!(%reason, "stopped");
                    break;
                }
                other => tracing::info!(state = ?other, "connection state"),
            }
            if state.changed().await.is_err() {
                break;
            }
        }
    });

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_ms = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        // Strictly increasing per sensor: the hub ignores duplicate times.
        let time_ms = now_ms().max(last_ms + 1);
        // A slow daily-looking swing around 21 °C.
        let temperature = 21.0 + 2.0 * (time_ms as f64 / 600_000.0).sin();
        last_ms = time_ms;
        if let Err(err) = device
            .push(TEMPERATURE, time_ms, Value::Float(temperature))
            .await
        {
            tracing::error!(%err, "cannot push");
            break;
        }
        let stats = device.stats();
        tracing::debug!(
            pushed = stats.readings_pushed,
            acked = stats.readings_acked,
            commands = stats.commands_applied,
            relay = relay.load(Ordering::SeqCst),
            "stats"
        );
    }
    let flushed = device.flush(Duration::from_secs(5)).await;
    let unacked = device.shutdown().await;
    tracing::info!(flushed, unacked, "bye");
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
