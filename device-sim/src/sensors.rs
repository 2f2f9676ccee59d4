//! Plausible sensor data for one simulated device.
//!
//! Five sensors of all three value kinds, each moving the way the real thing
//! does (slow drift, slow drain, monotonic counter, rare flips). Readings go
//! round-robin over the sensors, and each sensor's timestamps strictly
//! increase (`max(now, last + 1)`): the hub keys readings by (device, sensor,
//! time) and ignores duplicates, so equal times would silently collapse.

use firmware_client::SensorSpec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use schema::{Value, ValueKind};

/// The sensors every simulated device declares: (id, name, unit, kind).
pub const SENSORS: [(u16, &str, &str, ValueKind); 5] = [
    (1, "temperature", "°C", ValueKind::Float),
    (2, "humidity", "%", ValueKind::Float),
    (3, "battery", "%", ValueKind::Float),
    (4, "counter", "", ValueKind::Int),
    (5, "door", "", ValueKind::Bool),
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
    temperature_target: f64,
    humidity: f64,
    battery: f64,
    counter: i64,
    door: bool,
    next: usize,
    last_time: [u64; SENSORS.len()],
}

impl DeviceModel {
    /// A device whose starting values and noise follow from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let temperature_target = rng.random_range(18.0..24.0);
        DeviceModel {
            temperature: temperature_target + rng.random_range(-1.0..1.0),
            temperature_target,
            humidity: rng.random_range(35.0..60.0),
            battery: rng.random_range(70.0..100.0),
            counter: rng.random_range(0..1_000),
            door: false,
            next: rng.random_range(0..SENSORS.len()),
            last_time: [0; SENSORS.len()],
            rng,
        }
    }

    /// The next reading at wall-clock `now_ms`: (sensor id, time, value).
    pub fn next_reading(&mut self, now_ms: u64) -> (u16, u64, Value) {
        let index = self.next;
        self.next = (self.next + 1) % SENSORS.len();
        let time = now_ms.max(self.last_time[index] + 1);
        self.last_time[index] = time;
        let value = match index {
            0 => {
                // Mean-reverting random walk around a per-device set point.
                let pull = 0.02 * (self.temperature_target - self.temperature);
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
            _ => {
                if self.rng.random_bool(0.02) {
                    self.door = !self.door;
                }
                Value::Bool(self.door)
            }
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
                other => panic!("{other:?}"),
            }
        }
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
