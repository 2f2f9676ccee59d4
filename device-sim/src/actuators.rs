//! The simulated device's actuators, and the state their commands change.
//!
//! Every simulated device declares three actuators, each with a handler that
//! applies a `Set` command to the device and answers with the new state:
//!
//! - `relay` (bool): on or off;
//! - `setpoint` (float, °C, 10 to 30): the temperature the device regulates
//!   to; the temperature sensor drifts towards it;
//! - `led` (int): 0 off, 1 on, 2 blink.
//!
//! The state is reported in the telemetry as three more sensors
//! (`relay_state`, `setpoint`, `led_state`; see [`crate::sensors`]), so a
//! command's effect shows in the data. It is shared between the handlers
//! (on tokio's blocking pool) and the generator task as atomics, which keeps
//! the reading path free of locks.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use firmware_client::{Action, ActuatorSpec, DeviceConfig};
use schema::{Value, ValueKind};

/// Actuator id of the relay.
pub const RELAY: u16 = 1;
/// Actuator id of the temperature setpoint.
pub const SETPOINT: u16 = 2;
/// Actuator id of the status LED.
pub const LED: u16 = 3;

/// The actuators every simulated device declares: (id, name, kind).
pub const ACTUATORS: [(u16, &str, ValueKind); 3] = [
    (RELAY, "relay", ValueKind::Bool),
    (SETPOINT, "setpoint", ValueKind::Float),
    (LED, "led", ValueKind::Int),
];

/// Setpoints the device accepts, °C.
pub const SETPOINT_RANGE: RangeInclusive<f64> = 10.0..=30.0;

/// LED modes: 0 off, 1 on, 2 blink.
pub const LED_MODES: RangeInclusive<i64> = 0..=2;

/// The declarations for a device configuration.
pub fn specs() -> Vec<ActuatorSpec> {
    ACTUATORS
        .iter()
        .map(|&(id, name, kind)| ActuatorSpec::new(id, name, kind))
        .collect()
}

/// Declare the actuators on `config`, with handlers that drive `state`.
pub fn register(mut config: DeviceConfig, state: &Arc<ActuatorState>) -> DeviceConfig {
    config.actuators = specs();
    for (id, _, _) in ACTUATORS {
        let state = Arc::clone(state);
        config = config.on_command(id, move |call| state.apply(call.actuator, &call.action));
    }
    config
}

/// What the actuators are set to.
#[derive(Debug)]
pub struct ActuatorState {
    relay: AtomicBool,
    /// The setpoint's `f64` bits.
    setpoint: AtomicU64,
    led: AtomicI64,
}

impl ActuatorState {
    /// Relay off, LED off, the given setpoint.
    pub fn new(setpoint: f64) -> Self {
        ActuatorState {
            relay: AtomicBool::new(false),
            setpoint: AtomicU64::new(setpoint.to_bits()),
            led: AtomicI64::new(0),
        }
    }

    /// Whether the relay is on.
    pub fn relay(&self) -> bool {
        self.relay.load(Ordering::Relaxed)
    }

    /// The setpoint, °C.
    pub fn setpoint(&self) -> f64 {
        f64::from_bits(self.setpoint.load(Ordering::Relaxed))
    }

    /// The LED mode.
    pub fn led(&self) -> i64 {
        self.led.load(Ordering::Relaxed)
    }

    /// Apply one command for `actuator`: the new state, or why not (sent to
    /// the hub as `Failed(reason)`). The transport has already refused
    /// unknown actuators and `Set` values of the wrong kind.
    pub fn apply(&self, actuator: u16, action: &Action) -> Result<Option<Value>, String> {
        match (actuator, action) {
            (RELAY, Action::Set(Value::Bool(on))) => {
                self.relay.store(*on, Ordering::Relaxed);
                Ok(Some(Value::Bool(*on)))
            }
            (SETPOINT, Action::Set(Value::Float(celsius))) => {
                if !SETPOINT_RANGE.contains(celsius) {
                    return Err(format!(
                        "setpoint {celsius} °C is outside {} to {} °C",
                        SETPOINT_RANGE.start(),
                        SETPOINT_RANGE.end()
                    ));
                }
                self.setpoint.store(celsius.to_bits(), Ordering::Relaxed);
                Ok(Some(Value::Float(*celsius)))
            }
            (LED, Action::Set(Value::Int(mode))) => {
                if !LED_MODES.contains(mode) {
                    return Err(format!("led mode {mode}: use 0 (off), 1 (on) or 2 (blink)"));
                }
                self.led.store(*mode, Ordering::Relaxed);
                Ok(Some(Value::Int(*mode)))
            }
            (_, Action::Invoke { name, .. }) => Err(format!(
                "no action {name:?}: the simulated actuators only take Set"
            )),
            (id, other) => Err(format!("actuator {id} cannot do {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_commands_change_the_state_and_report_it() {
        let state = ActuatorState::new(21.0);
        assert_eq!(
            (state.relay(), state.setpoint(), state.led()),
            (false, 21.0, 0)
        );
        assert_eq!(
            state.apply(RELAY, &Action::Set(Value::Bool(true))),
            Ok(Some(Value::Bool(true)))
        );
        assert_eq!(
            state.apply(SETPOINT, &Action::Set(Value::Float(25.5))),
            Ok(Some(Value::Float(25.5)))
        );
        assert_eq!(
            state.apply(LED, &Action::Set(Value::Int(2))),
            Ok(Some(Value::Int(2)))
        );
        assert_eq!(
            (state.relay(), state.setpoint(), state.led()),
            (true, 25.5, 2)
        );
    }

    #[test]
    fn out_of_range_values_and_invokes_fail_and_change_nothing() {
        let state = ActuatorState::new(21.0);
        for (actuator, action, reason) in [
            (
                SETPOINT,
                Action::Set(Value::Float(45.0)),
                "setpoint 45 °C is outside 10 to 30 °C",
            ),
            (
                SETPOINT,
                Action::Set(Value::Float(f64::NAN)),
                "setpoint NaN °C is outside 10 to 30 °C",
            ),
            (
                LED,
                Action::Set(Value::Int(3)),
                "led mode 3: use 0 (off), 1 (on) or 2 (blink)",
            ),
            (
                RELAY,
                Action::Invoke {
                    name: "toggle".to_owned(),
                    args: Vec::new(),
                },
                "no action \"toggle\": the simulated actuators only take Set",
            ),
            (
                RELAY,
                Action::Set(Value::Int(1)),
                "actuator 1 cannot do Set(Int(1))",
            ),
        ] {
            assert_eq!(state.apply(actuator, &action), Err(reason.to_owned()));
        }
        assert_eq!(
            (state.relay(), state.setpoint(), state.led()),
            (false, 21.0, 0)
        );
    }

    #[test]
    fn registering_declares_all_three_with_handlers() {
        let state = Arc::new(ActuatorState::new(20.0));
        let config = register(
            DeviceConfig::new("ws://127.0.0.1:1/ws/device", "d.s"),
            &state,
        );
        let ids: Vec<u16> = config.actuators.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![RELAY, SETPOINT, LED]);
        assert_eq!(
            config.handlers.keys().copied().collect::<Vec<_>>(),
            vec![RELAY, SETPOINT, LED]
        );
        config.validate().expect("valid");
        // The handlers drive the shared state.
        let relay = config.handlers.get(&RELAY).expect("relay handler");
        let call = firmware_client::CommandCall::new(1, RELAY, Action::Set(Value::Bool(true)), 0);
        assert_eq!(relay(&call), Ok(Some(Value::Bool(true))));
        assert!(state.relay());
    }
}
