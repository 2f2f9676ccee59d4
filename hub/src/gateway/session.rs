//! One device session's protocol state, kept apart from the socket.
//!
//! [`Session::on_frame`] takes one binary message and says what the connection
//! must do next ([`Step`]): open the session after a valid Hello, queue a
//! telemetry frame for the writer, answer with a frame, or close with a code.
//! Nothing here touches the network or the database, so every rule of
//! docs/PROTOCOL.md about frame order and validation is unit-tested below.

use schema::{CommandOutcome, Uplink, ValueKind, close, error_code};

use crate::store::{ActuatorInfo, DeviceOutcome, ReadingRow, SensorInfo};

/// Earliest reading time accepted: 2000-01-01T00:00:00Z, in ms.
pub const EARLIEST_READING_MS: i64 = 946_684_800_000;
/// Longest name of a sensor or actuator, and of the firmware string, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest unit string, in bytes.
pub const MAX_UNIT_BYTES: usize = 16;

/// Limits a session enforces, taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most readings per Telemetry frame.
    pub max_readings_per_frame: u32,
    /// Most sensors plus actuators in Hello.
    pub max_declared: u32,
    /// Largest accepted clock skew into the future, ms.
    pub max_future_skew_ms: i64,
}

/// What Hello declared, to be persisted before Welcome is sent.
#[derive(Debug, Clone)]
pub struct HelloInfo {
    /// Firmware version string.
    pub firmware: String,
    /// Declared sensors.
    pub sensors: Vec<SensorInfo>,
    /// Declared actuators.
    pub actuators: Vec<ActuatorInfo>,
}

/// A telemetry frame refused as a whole, reported with an Error frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// One of `schema::error_code`.
    pub code: u16,
    /// Human-readable reason.
    pub reason: String,
}

/// What the connection must do after a frame.
#[derive(Debug)]
pub enum Step {
    /// A valid Hello: persist it, open the session, send Welcome.
    Open(HelloInfo),
    /// Queue this frame for the writer. A rejected frame carries no readings,
    /// so its seq is still acked in order once earlier frames commit.
    Ingest {
        /// The frame's sequence number.
        seq: u64,
        /// Validated readings (empty when rejected).
        readings: Vec<ReadingRow>,
        /// Why the frame was refused, if it was.
        rejected: Option<Rejection>,
    },
    /// The device's answer about a command: record it (an unknown command
    /// gets an Error frame with `UNKNOWN_COMMAND`).
    CommandResult {
        /// The command's id.
        command_id: u64,
        /// What the device said.
        outcome: DeviceOutcome,
    },
    /// Send an Error frame and carry on.
    Report(Rejection),
    /// Close the connection with this code and reason.
    Close(u16, String),
}

enum State {
    AwaitingHello,
    /// Declared sensors sorted by id, for a binary search per reading.
    Open {
        sensors: Box<[(u16, ValueKind)]>,
    },
}

/// Protocol state of one connection.
pub struct Session {
    device_pk: i64,
    limits: SessionLimits,
    state: State,
}

impl Session {
    /// A session waiting for Hello.
    pub fn new(device_pk: i64, limits: SessionLimits) -> Self {
        Session {
            device_pk,
            limits,
            state: State::AwaitingHello,
        }
    }

    /// Whether Hello has been accepted.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Handles one binary message received at `now_ms`.
    pub fn on_frame(&mut self, bytes: &[u8], now_ms: i64) -> Step {
        let frame = match schema::decode_uplink(bytes) {
            Ok(frame) => frame,
            // Tags overlap, so this only catches downlink frames that are not
            // also valid uplink frames; those are handled as what they decode to.
            Err(_) if schema::decode_downlink(bytes).is_ok() => {
                return Step::Close(close::PROTOCOL_ERROR, "downlink frame sent uplink".into());
            }
            Err(err) => {
                return Step::Close(close::INVALID_PAYLOAD, format!("invalid frame: {err}"));
            }
        };
        match (&self.state, frame) {
            (State::AwaitingHello, Uplink::Hello(hello)) => {
                if hello.version != schema::PROTOCOL_VERSION {
                    return Step::Close(
                        close::UNSUPPORTED_VERSION,
                        format!(
                            "protocol version {} unsupported; this hub speaks {}",
                            hello.version,
                            schema::PROTOCOL_VERSION
                        ),
                    );
                }
                match validate_hello(&hello, self.limits.max_declared) {
                    Ok(info) => {
                        let mut sensors: Vec<(u16, ValueKind)> =
                            info.sensors.iter().map(|s| (s.id, s.kind)).collect();
                        sensors.sort_unstable_by_key(|(id, _)| *id);
                        self.state = State::Open {
                            sensors: sensors.into_boxed_slice(),
                        };
                        Step::Open(info)
                    }
                    Err(reason) => Step::Close(close::INVALID_HELLO, reason),
                }
            }
            (State::AwaitingHello, _) => Step::Close(
                close::POLICY_VIOLATION,
                "Hello must be the first frame".into(),
            ),
            (State::Open { .. }, Uplink::Hello(_)) => {
                Step::Close(close::PROTOCOL_ERROR, "Hello sent twice".into())
            }
            (State::Open { sensors }, Uplink::Telemetry(telemetry)) => {
                let seq = telemetry.seq;
                match self.validate_telemetry(sensors, &telemetry, now_ms) {
                    Ok(readings) => Step::Ingest {
                        seq,
                        readings,
                        rejected: None,
                    },
                    Err(rejection) => Step::Ingest {
                        seq,
                        readings: Vec::new(),
                        rejected: Some(rejection),
                    },
                }
            }
            (State::Open { .. }, Uplink::CommandResult(result)) => Step::CommandResult {
                command_id: result.command_id,
                outcome: device_outcome(result.outcome),
            },
        }
    }

    fn validate_telemetry(
        &self,
        sensors: &[(u16, ValueKind)],
        telemetry: &schema::Telemetry<'_>,
        now_ms: i64,
    ) -> Result<Vec<ReadingRow>, Rejection> {
        if telemetry.seq == 0 {
            return Err(Rejection {
                code: error_code::BAD_SEQUENCE,
                reason: "seq 0 is reserved; sequence numbers start at 1".into(),
            });
        }
        let count = telemetry.readings.len();
        if count == 0 || count > self.limits.max_readings_per_frame as usize {
            return Err(Rejection {
                code: error_code::BAD_BATCH_SIZE,
                reason: format!(
                    "{count} readings; a frame carries 1 to {}",
                    self.limits.max_readings_per_frame
                ),
            });
        }
        let latest = now_ms.saturating_add(self.limits.max_future_skew_ms);
        let mut rows = Vec::with_capacity(count);
        for reading in telemetry.readings.iter() {
            let kind = match sensors.binary_search_by_key(&reading.sensor, |(id, _)| *id) {
                Ok(index) => sensors[index].1,
                Err(_) => {
                    return Err(Rejection {
                        code: error_code::UNKNOWN_SENSOR,
                        reason: format!("sensor {} was not declared in Hello", reading.sensor),
                    });
                }
            };
            if reading.value.kind() != kind {
                return Err(Rejection {
                    code: error_code::WRONG_VALUE_KIND,
                    reason: format!(
                        "sensor {} is {}, got {}",
                        reading.sensor,
                        kind.as_str(),
                        reading.value.kind().as_str()
                    ),
                });
            }
            if !reading.value.is_finite() {
                return Err(Rejection {
                    code: error_code::NON_FINITE_VALUE,
                    reason: format!("sensor {} value is not finite", reading.sensor),
                });
            }
            let time_ms = telemetry
                .base_time_ms
                .checked_add(u64::from(reading.offset_ms))
                .and_then(|t| i64::try_from(t).ok())
                .filter(|t| (EARLIEST_READING_MS..=latest).contains(t));
            let Some(time_ms) = time_ms else {
                return Err(Rejection {
                    code: error_code::BAD_TIMESTAMP,
                    reason: format!(
                        "sensor {} time is before 2000-01-01 or more than {} s ahead",
                        reading.sensor,
                        self.limits.max_future_skew_ms / 1000
                    ),
                });
            };
            rows.push(ReadingRow {
                device_pk: self.device_pk,
                sensor: reading.sensor,
                time_ms,
                value: reading.value,
            });
        }
        Ok(rows)
    }
}

/// The device's outcome as the store keeps it. Reasons are cut to
/// [`schema::MAX_REASON_BYTES`] (on a character boundary) rather than
/// refused: the answer matters more than its wording. A non-finite value
/// reported with success is dropped (JSON, where results are shown, has no
/// NaN); the success itself stands.
fn device_outcome(outcome: CommandOutcome<'_>) -> DeviceOutcome {
    let reason = |text: &str| {
        let mut end = text.len().min(schema::MAX_REASON_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    match outcome {
        CommandOutcome::Delivered => DeviceOutcome::Delivered,
        CommandOutcome::Succeeded(value) => {
            DeviceOutcome::Succeeded(value.filter(schema::Value::is_finite))
        }
        CommandOutcome::Failed(text) => DeviceOutcome::Failed(reason(text)),
        CommandOutcome::Rejected(text) => DeviceOutcome::Rejected(reason(text)),
    }
}

fn check_name(
    what: &str,
    id: u16,
    name: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), String> {
    if (!allow_empty && name.is_empty()) || name.len() > max {
        let least = if allow_empty { 0 } else { 1 };
        return Err(format!("{what} {id}: must be {least} to {max} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} {id}: control characters are not allowed"));
    }
    Ok(())
}

/// Checks Hello's declarations; the error is the close reason.
fn validate_hello(hello: &schema::Hello<'_>, max_declared: u32) -> Result<HelloInfo, String> {
    let declared = hello.sensors.len() + hello.actuators.len();
    if declared > max_declared as usize {
        return Err(format!(
            "{declared} sensors and actuators; at most {max_declared}"
        ));
    }
    check_name("firmware", 0, hello.firmware, MAX_NAME_BYTES, true)?;
    let mut sensor_ids: Vec<u16> = hello.sensors.iter().map(|s| s.id).collect();
    sensor_ids.sort_unstable();
    if let Some(dup) = sensor_ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("sensor id {} declared twice", dup[0]));
    }
    let mut actuator_ids: Vec<u16> = hello.actuators.iter().map(|a| a.id).collect();
    actuator_ids.sort_unstable();
    if let Some(dup) = actuator_ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("actuator id {} declared twice", dup[0]));
    }
    let mut sensors = Vec::with_capacity(hello.sensors.len());
    for s in hello.sensors.iter() {
        check_name("sensor name", s.id, s.name, MAX_NAME_BYTES, false)?;
        check_name("sensor unit", s.id, s.unit, MAX_UNIT_BYTES, true)?;
        sensors.push(SensorInfo {
            id: s.id,
            name: s.name.into(),
            unit: s.unit.into(),
            kind: s.kind,
        });
    }
    let mut actuators = Vec::with_capacity(hello.actuators.len());
    for a in hello.actuators.iter() {
        check_name("actuator name", a.id, a.name, MAX_NAME_BYTES, false)?;
        actuators.push(ActuatorInfo {
            id: a.id,
            name: a.name.into(),
            kind: a.kind,
        });
    }
    Ok(HelloInfo {
        firmware: hello.firmware.into(),
        sensors,
        actuators,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{ActuatorDecl, Hello, List, Reading, SensorDecl, Telemetry, Value};

    const NOW: i64 = 1_700_000_000_000;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_readings_per_frame: 4,
            max_declared: 8,
            max_future_skew_ms: 60_000,
        }
    }

    fn encode(frame: &Uplink<'_>) -> Vec<u8> {
        schema::encode_uplink_to_vec(frame).expect("encodable")
    }

    fn hello_bytes(sensors: &[SensorDecl<'_>], version: u16) -> Vec<u8> {
        let actuators = [ActuatorDecl {
            id: 1,
            name: "relay",
            kind: ValueKind::Bool,
        }];
        encode(&Uplink::Hello(Hello {
            version,
            firmware: "1.0.0",
            sensors: List::Borrowed(sensors),
            actuators: List::Borrowed(&actuators),
        }))
    }

    fn temp() -> SensorDecl<'static> {
        SensorDecl {
            id: 3,
            name: "temperature",
            unit: "°C",
            kind: ValueKind::Float,
        }
    }

    fn telemetry(seq: u64, base: u64, readings: &[Reading]) -> Vec<u8> {
        encode(&Uplink::Telemetry(Telemetry {
            seq,
            base_time_ms: base,
            readings: List::Borrowed(readings),
        }))
    }

    fn open_session() -> Session {
        let mut session = Session::new(42, limits());
        let step = session.on_frame(&hello_bytes(&[temp()], 1), NOW);
        assert!(matches!(step, Step::Open(_)), "{step:?}");
        session
    }

    fn code_of(step: Step) -> u16 {
        match step {
            Step::Close(code, _) => code,
            Step::Ingest {
                rejected: Some(r), ..
            }
            | Step::Report(r) => r.code,
            other => panic!("expected a close or rejection, got {other:?}"),
        }
    }

    #[test]
    fn hello_opens_with_declarations() {
        let mut session = Session::new(42, limits());
        match session.on_frame(&hello_bytes(&[temp()], 1), NOW) {
            Step::Open(info) => {
                assert_eq!(info.firmware, "1.0.0");
                assert_eq!(info.sensors[0].name, "temperature");
                assert_eq!(info.actuators[0].name, "relay");
            }
            other => panic!("{other:?}"),
        }
        assert!(session.is_open());
    }

    #[test]
    fn telemetry_is_validated_into_rows() {
        let mut session = open_session();
        let r = [
            Reading {
                sensor: 3,
                offset_ms: 0,
                value: Value::Float(20.5),
            },
            Reading {
                sensor: 3,
                offset_ms: 10,
                value: Value::Float(20.6),
            },
        ];
        match session.on_frame(&telemetry(9, NOW as u64, &r), NOW) {
            Step::Ingest {
                seq,
                readings,
                rejected: None,
            } => {
                assert_eq!(seq, 9);
                assert_eq!(readings.len(), 2);
                assert_eq!(readings[1].time_ms, NOW + 10);
                assert_eq!(readings[1].device_pk, 42);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frame_order_rules_close_with_documented_codes() {
        let r = [Reading {
            sensor: 3,
            offset_ms: 0,
            value: Value::Float(1.0),
        }];
        let mut fresh = Session::new(1, limits());
        assert_eq!(
            code_of(fresh.on_frame(&telemetry(1, NOW as u64, &r), NOW)),
            close::POLICY_VIOLATION
        );
        let mut open = open_session();
        assert_eq!(
            code_of(open.on_frame(&hello_bytes(&[temp()], 1), NOW)),
            close::PROTOCOL_ERROR
        );
        let mut fresh = Session::new(1, limits());
        assert_eq!(
            code_of(fresh.on_frame(&hello_bytes(&[temp()], 2), NOW)),
            close::UNSUPPORTED_VERSION
        );
        let mut fresh = Session::new(1, limits());
        assert_eq!(
            code_of(fresh.on_frame(&[0xff, 0x01], NOW)),
            close::INVALID_PAYLOAD
        );
        // An Ack (downlink tag 1) is not a valid uplink Telemetry frame.
        let ack = schema::encode_downlink_to_vec(&schema::Downlink::Ack(schema::Ack { seq: 5 }))
            .expect("encodable");
        let mut open = open_session();
        assert_eq!(code_of(open.on_frame(&ack, NOW)), close::PROTOCOL_ERROR);
    }

    #[test]
    fn invalid_hello_is_refused() {
        let dup = [temp(), temp()];
        let mut s = Session::new(1, limits());
        assert_eq!(
            code_of(s.on_frame(&hello_bytes(&dup, 1), NOW)),
            close::INVALID_HELLO
        );
        let unnamed = [SensorDecl {
            id: 1,
            name: "",
            unit: "",
            kind: ValueKind::Int,
        }];
        let mut s = Session::new(1, limits());
        assert_eq!(
            code_of(s.on_frame(&hello_bytes(&unnamed, 1), NOW)),
            close::INVALID_HELLO
        );
        let many: Vec<SensorDecl<'_>> = (0..8)
            .map(|id| SensorDecl {
                id,
                name: "x",
                unit: "",
                kind: ValueKind::Int,
            })
            .collect();
        let mut s = Session::new(1, limits());
        assert_eq!(
            code_of(s.on_frame(&hello_bytes(&many, 1), NOW)),
            close::INVALID_HELLO
        );
    }

    #[test]
    fn bad_readings_reject_the_whole_frame() {
        let base = NOW as u64;
        let mut session = open_session();
        let one = [Reading {
            sensor: 3,
            offset_ms: 0,
            value: Value::Float(1.0),
        }];
        assert_eq!(
            code_of(session.on_frame(&telemetry(0, base, &one), NOW)),
            error_code::BAD_SEQUENCE
        );
        let cases: [(&[Reading], u16); 6] = [
            (
                &[Reading {
                    sensor: 9,
                    offset_ms: 0,
                    value: Value::Float(1.0),
                }],
                error_code::UNKNOWN_SENSOR,
            ),
            (
                &[Reading {
                    sensor: 3,
                    offset_ms: 0,
                    value: Value::Int(1),
                }],
                error_code::WRONG_VALUE_KIND,
            ),
            (
                &[Reading {
                    sensor: 3,
                    offset_ms: 0,
                    value: Value::Float(f64::NAN),
                }],
                error_code::NON_FINITE_VALUE,
            ),
            (
                &[Reading {
                    sensor: 3,
                    offset_ms: 3_600_000,
                    value: Value::Float(1.0),
                }],
                error_code::BAD_TIMESTAMP,
            ),
            (&[], error_code::BAD_BATCH_SIZE),
            (
                &[Reading {
                    sensor: 3,
                    offset_ms: 0,
                    value: Value::Float(1.0),
                }; 5],
                error_code::BAD_BATCH_SIZE,
            ),
        ];
        for (readings, code) in cases {
            let mut session = open_session();
            match session.on_frame(&telemetry(5, base, readings), NOW) {
                Step::Ingest {
                    seq: 5,
                    readings,
                    rejected: Some(r),
                } => {
                    assert!(readings.is_empty());
                    assert_eq!(r.code, code, "{}", r.reason);
                }
                other => panic!("{other:?}"),
            }
        }
        let mut session = open_session();
        let old = [Reading {
            sensor: 3,
            offset_ms: 0,
            value: Value::Float(1.0),
        }];
        assert_eq!(
            code_of(session.on_frame(&telemetry(1, 1_000, &old), NOW)),
            error_code::BAD_TIMESTAMP
        );
        assert_eq!(
            code_of(session.on_frame(&telemetry(2, u64::MAX, &old[..]), NOW)),
            error_code::BAD_TIMESTAMP
        );
    }

    #[test]
    fn command_results_are_passed_on_with_reasons_cut_and_bad_values_dropped() {
        let mut session = Session::new(1, limits());
        assert!(matches!(
            session.on_frame(&hello_bytes(&[temp()], 1), NOW),
            Step::Open(_)
        ));
        let long = "é".repeat(100); // 200 bytes
        let result = |outcome| {
            encode(&Uplink::CommandResult(schema::CommandResult {
                command_id: 42,
                outcome,
            }))
        };
        match session.on_frame(&result(CommandOutcome::Failed(&long)), NOW) {
            Step::CommandResult {
                command_id: 42,
                outcome: DeviceOutcome::Failed(reason),
            } => {
                assert!(reason.len() <= schema::MAX_REASON_BYTES);
                assert!(reason.chars().all(|c| c == 'é'), "cut on a boundary");
            }
            other => panic!("expected a failed result, got {other:?}"),
        }
        match session.on_frame(
            &result(CommandOutcome::Succeeded(Some(Value::Float(f64::NAN)))),
            NOW,
        ) {
            Step::CommandResult {
                outcome: DeviceOutcome::Succeeded(None),
                ..
            } => {}
            other => panic!("expected success without the NaN, got {other:?}"),
        }
        match session.on_frame(&result(CommandOutcome::Delivered), NOW) {
            Step::CommandResult {
                outcome: DeviceOutcome::Delivered,
                ..
            } => {}
            other => panic!("expected delivered, got {other:?}"),
        }
    }
}
