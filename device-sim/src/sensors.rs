//! Plausible sensor data for one simulated device.
//!
//! Five measuring sensors of all three value kinds, each moving the way the
//! real thing does (drift towards the setpoint, slow drain, monotonic
//! counter, rare flips), and three that report the actuators' state
//! (`relay_state`, `setpoint`, `led_state`; see [`crate::actuators`]), so
//! that a command's effect shows in the data. Readings go round-robin over
//! the sensors, and each sensor's timestamps strictly increase
//! (`max(now, last + 1)`): the hub keys readings by (device, sensor, time)
//! and ignores duplicates, so equal times would silently collapse.

use std::sync::Arc;

use firmware_client::SensorSpec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use schema::{Value, ValueKind};

use crate::actuators::ActuatorState;

/// Sensor id reporting whether the relay is on.
pub const RELAY_STATE: u16 = 6;
/// Sensor id reporting the temperature setpoint.
pub const SETPOINT: u16 = 7;
/// Sensor id reporting the LED mode.
pub const LED_STATE: u16 = 8;

/// The sensors every simulated device declares: (id, name, unit, kind).
/// Ids run from 1 without gaps.
pub const SENSORS: [(u16, &str, &str, ValueKind); 8] = [
    (1, "temperature", "°C", ValueKind::Float),
    (2, "humidity", "%", ValueKind::Float),
    (3, "battery", "%", ValueKind::Float),
    (4, "counter", "", ValueKind::Int),
    (5, "door", "", ValueKind::Bool),
    (RELAY_STATE, "relay_state", "", ValueKind::Bool),
    (SETPOINT, "setpoint", "°C", ValueKind::Float),
    (LED_STATE, "led_state", "", ValueKind::Int),
];

/// The declarations for a device configuration.
pub fn specs() -> Vec<SensorSpec> {
    SENSORS
        .iter()
        .map(|&(id, name, unit, kind)| SensorSpec::new(id, name, unit, kind))
        .collect()
}

/// The state of one device's sensors.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    rng: SmallRng,
    temperature: f64,
    /// What the actuators are set to, changed by commands.
    actuators: Arc<ActuatorState>,
    humidity: f64,
    battery: f64,
    counter: i64,
    door: bool,
    next: usize,
    last_time: [u64; SENSORS.len()],
}

impl DeviceModel {
    /// A device whose starting values and noise follow from `seed`: relay
    /// and LED off, a setpoint between 18 and 24 °C.
    pub fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let setpoint = round2(rng.random_range(18.0..24.0));
        DeviceModel {
            temperature: setpoint + rng.random_range(-1.0..1.0),
            actuators: Arc::new(ActuatorState::new(setpoint)),
            humidity: rng.random_range(35.0..60.0),
            battery: rng.random_range(70.0..100.0),
            counter: rng.random_range(0..1_000),
            door: false,
            next: rng.random_range(0..SENSORS.len()),
            last_time: [0; SENSORS.len()],
            rng,
        }
    }

    /// The actuator state this model reports; give it to the command
    /// handlers ([`crate::actuators::register`]).
    pub fn actuators(&self) -> &Arc<ActuatorState> {
        &self.actuators
    }

    /// The next reading at wall-clock `now_ms`: (sensor id, time, value).
    pub fn next_reading(&mut self, now_ms: u64) -> (u16, u64, Value) {
        let index = self.next;
        self.next = (self.next + 1) % SENSORS.len();
        let time = now_ms.max(self.last_time[index] + 1);
        self.last_time[index] = time;
        let value = match index {
            0 => {
                // Mean-reverting random walk around the setpoint.
                let pull = 0.02 * (self.actuators.setpoint() - self.temperature);
                self.temperature += pull + self.rng.random_range(-0.05..0.05);
                Value::Float(round2(self.temperature))
            }
            1 => {
                self.humidity = (self.humidity + self.rng.random_range(-0.2..0.2)).clamp(5.0, 95.0);
                Value::Float(round2(self.humidity))
            }
            2 => {
                self.battery -= self.rng.random_range(0.0..0.002);
                if self.battery < 5.0 {
                    // Someone swapped the batteries.
                    self.battery = 100.0;
                }
                Value::Float(round2(self.battery))
            }
            3 => {
                self.counter += self.rng.random_range(1..=3);
                Value::Int(self.counter)
            }
            4 => {
                if self.rng.random_bool(0.02) {
                    self.door = !self.door;
                }
                Value::Bool(self.door)
            }
            5 => Value::Bool(self.actuators.relay()),
            6 => Value::Float(self.actuators.setpoint()),
            _ => Value::Int(self.actuators.led()),
        };
        (SENSORS[index].0, time, value)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_strictly_increase_per_sensor_even_within_one_millisecond() {
        let mut model = DeviceModel::new(1);
        let mut last = std::collections::HashMap::new();
        for i in 0..10_000u64 {
            let now = 1_700_000_000_000 + i / 100; // 100 readings per ms
            let (sensor, time, _) = model.next_reading(now);
            if let Some(previous) = last.insert(sensor, time) {
                assert!(time > previous, "sensor {sensor}: {time} after {previous}");
            }
            assert!(time >= now);
        }
    }

    #[test]
    fn values_are_plausible_and_of_the_declared_kind() {
        let mut model = DeviceModel::new(7);
        let mut previous_counter = None;
        for i in 0..50_000 {
            let (sensor, _, value) = model.next_reading(i);
            let (_, name, _, kind) = SENSORS[usize::from(sensor) - 1];
            assert_eq!(value.kind(), kind, "{name}");
            match (name, value) {
                ("temperature", Value::Float(t)) => assert!((10.0..32.0).contains(&t), "{t}"),
                ("humidity", Value::Float(h)) => assert!((5.0..=95.0).contains(&h)),
                ("battery", Value::Float(b)) => assert!((5.0..=100.0).contains(&b)),
                ("counter", Value::Int(c)) => {
                    assert!(previous_counter.is_none_or(|p| c > p));
                    previous_counter = Some(c);
                }
                ("door", Value::Bool(_)) => {}
                ("relay_state", Value::Bool(on)) => assert!(!on, "relay starts off"),
                ("setpoint", Value::Float(s)) => assert!((18.0..24.0).contains(&s), "{s}"),
                ("led_state", Value::Int(mode)) => assert_eq!(mode, 0, "led starts off"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn commands_show_in_the_following_readings() {
        use crate::actuators::{LED, RELAY, SETPOINT as SETPOINT_ACTUATOR};
        use firmware_client::Action;

        let mut model = DeviceModel::new(3);
        let latest = |model: &mut DeviceModel, from: u64| {
            let mut seen = std::collections::BTreeMap::new();
            for i in from..from + 2 * SENSORS.len() as u64 {
                let (sensor, _, value) = model.next_reading(i);
                seen.insert(sensor, value);
            }
            seen
        };
        let before = latest(&mut model, 0);
        assert_eq!(before[&RELAY_STATE], Value::Bool(false));
        assert_eq!(before[&LED_STATE], Value::Int(0));

        let state = Arc::clone(model.actuators());
        state
            .apply(RELAY, &Action::Set(Value::Bool(true)))
            .expect("applies");
        state
            .apply(SETPOINT_ACTUATOR, &Action::Set(Value::Float(29.5)))
            .expect("applies");
        state
            .apply(LED, &Action::Set(Value::Int(2)))
            .expect("applies");
        let after = latest(&mut model, 100);
        assert_eq!(after[&RELAY_STATE], Value::Bool(true));
        assert_eq!(after[&SETPOINT], Value::Float(29.5));
        assert_eq!(after[&LED_STATE], Value::Int(2));

        // The temperature follows the new setpoint.
        let mut temperature = 0.0;
        for i in 0..8_000 {
            if let (1, _, Value::Float(t)) = model.next_reading(200 + i) {
                temperature = t;
            }
        }
        assert!((28.5..30.5).contains(&temperature), "{temperature}");
    }

    #[test]
    fn devices_differ() {
        let mut a_model = DeviceModel::new(1);
        let a: Vec<_> = (0..10).map(|i| a_model.next_reading(i)).collect();
        let mut b_model = DeviceModel::new(2);
        let b: Vec<_> = (0..10).map(|i| b_model.next_reading(i)).collect();
        assert_ne!(a, b);
    }
}
