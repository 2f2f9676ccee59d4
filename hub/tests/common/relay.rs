//! A firmware-client device with a relay actuator whose handler records
//! every call, for tests that send commands end to end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use firmware_client::{Action, CommandCall, ConnectionState, Device, DeviceConfig};
use schema::ValueKind;

use super::api::WAIT;

/// The relay's actuator id (and the temperature sensor's id).
pub const RELAY: u16 = 1;

/// Every call the relay handler saw.
pub type Calls = Arc<Mutex<Vec<CommandCall>>>;

/// A device at `url` with a temperature sensor and a relay whose handler
/// records its calls and reports the new state; it reconnects quickly.
pub fn relay_device(url: String, token: &str, calls: &Calls) -> Device {
    let seen = Arc::clone(calls);
    let mut config = DeviceConfig::new(url, token)
        .sensor(1, "temperature", "°C", ValueKind::Float)
        .actuator(RELAY, "relay", ValueKind::Bool)
        .on_command(RELAY, move |call| {
            seen.lock().unwrap().push(call.clone());
            match call.action {
                Action::Set(value) => Ok(Some(value)),
                _ => Err("the relay only takes Set".to_owned()),
            }
        });
    config.backoff_base = Duration::from_millis(50);
    config.backoff_cap = Duration::from_millis(300);
    Device::start(config).unwrap()
}

/// Waits (at most [`WAIT`]) until `device` is connected.
pub async fn connected(device: &Device) {
    let mut state = device.state();
    let reached = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await;
    assert!(matches!(reached, Ok(Ok(_))), "device never connected");
}
