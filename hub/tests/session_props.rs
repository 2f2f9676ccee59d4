//! Property tests of the hub's Hello and Telemetry validation (the device
//! session state machine, without a socket): valid frames are accepted as
//! they are, a frame with exactly one thing wrong is refused with exactly
//! that thing's code, and no bytes make the session panic.

use std::collections::BTreeMap;

use hub::gateway::session::{Session, SessionLimits, Step};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use schema::{
    ActuatorDecl, Hello, List, Reading, SensorDecl, Telemetry, Uplink, Value, ValueKind, close,
    error_code,
};

const NOW: i64 = 1_700_000_000_000;
const EARLIEST: u64 = 946_684_800_000;
const LIMITS: SessionLimits = SessionLimits {
    max_readings_per_frame: 16,
    max_declared: 16,
    max_future_skew_ms: 60_000,
};

fn any_kind() -> impl Strategy<Value = ValueKind> {
    prop_oneof![
        Just(ValueKind::Float),
        Just(ValueKind::Int),
        Just(ValueKind::Bool)
    ]
}

fn value_of(kind: ValueKind, seed: u64) -> Value {
    match kind {
        ValueKind::Float => Value::Float(seed as f64 / 7.0 - 1e6),
        ValueKind::Int => Value::Int(seed.cast_signed()),
        ValueKind::Bool => Value::Bool(seed.is_multiple_of(2)),
    }
}

/// A value of some kind other than `kind`.
fn other_kind(kind: ValueKind, seed: u64) -> Value {
    let others = match kind {
        ValueKind::Float => [ValueKind::Int, ValueKind::Bool],
        ValueKind::Int => [ValueKind::Float, ValueKind::Bool],
        ValueKind::Bool => [ValueKind::Float, ValueKind::Int],
    };
    value_of(others[(seed % 2) as usize], seed)
}

/// Declared sensors (always at least one float sensor) and a valid frame
/// of readings for them.
#[derive(Debug, Clone)]
struct Case {
    sensors: BTreeMap<u16, ValueKind>,
    seq: u64,
    base_time_ms: u64,
    readings: Vec<Reading>,
}

fn valid_case() -> impl Strategy<Value = Case> {
    (
        btree_map(any::<u16>(), any_kind(), 1..8),
        any::<u16>(),
        1..=u64::MAX,
        // Base times from 2000-01-01 to one minute before the hub's clock.
        EARLIEST..=(NOW as u64 - 60_000),
        vec(
            (any::<prop::sample::Index>(), 0..60_000u32, any::<u64>()),
            1..=16,
        ),
    )
        .prop_map(|(mut sensors, float_id, seq, base_time_ms, picks)| {
            if !sensors.values().any(|k| *k == ValueKind::Float) {
                sensors.insert(float_id, ValueKind::Float);
            }
            let ids: Vec<(u16, ValueKind)> = sensors.iter().map(|(i, k)| (*i, *k)).collect();
            let readings = picks
                .into_iter()
                .map(|(pick, offset_ms, seed)| {
                    let (sensor, kind) = ids[pick.index(ids.len())];
                    Reading {
                        sensor,
                        offset_ms,
                        value: value_of(kind, seed),
                    }
                })
                .collect();
            Case {
                sensors,
                seq,
                base_time_ms,
                readings,
            }
        })
}

/// One thing wrong with a valid frame, and the code it must get.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    UnknownSensor,
    WrongKind,
    NonFinite(u8),
    BeforeY2000,
    TooFarAhead,
    SeqZero,
    Empty,
    TooMany,
}

impl Mutation {
    fn code(self) -> u16 {
        match self {
            Mutation::UnknownSensor => error_code::UNKNOWN_SENSOR,
            Mutation::WrongKind => error_code::WRONG_VALUE_KIND,
            Mutation::NonFinite(_) => error_code::NON_FINITE_VALUE,
            Mutation::BeforeY2000 | Mutation::TooFarAhead => error_code::BAD_TIMESTAMP,
            Mutation::SeqZero => error_code::BAD_SEQUENCE,
            Mutation::Empty | Mutation::TooMany => error_code::BAD_BATCH_SIZE,
        }
    }

    fn apply(self, case: &mut Case, at: prop::sample::Index, seed: u64) {
        let i = at.index(case.readings.len());
        match self {
            Mutation::UnknownSensor => {
                let unknown = (0..=u16::MAX)
                    .map(|d| (seed as u16).wrapping_add(d))
                    .find(|id| !case.sensors.contains_key(id))
                    .expect("fewer than 65536 sensors");
                case.readings[i].sensor = unknown;
            }
            Mutation::WrongKind => {
                let kind = case.sensors[&case.readings[i].sensor];
                case.readings[i].value = other_kind(kind, seed);
            }
            Mutation::NonFinite(which) => {
                let (&float, _) = case
                    .sensors
                    .iter()
                    .find(|(_, k)| **k == ValueKind::Float)
                    .expect("a float sensor is always declared");
                case.readings[i].sensor = float;
                case.readings[i].value = Value::Float(match which % 3 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    _ => f64::NEG_INFINITY,
                });
            }
            Mutation::BeforeY2000 => {
                // Every reading of the frame moves before 2000 at most this far.
                case.base_time_ms = seed % (EARLIEST - 60_000);
                for r in &mut case.readings {
                    r.offset_ms %= 60_000;
                }
            }
            Mutation::TooFarAhead => {
                case.base_time_ms = NOW as u64 + 60_001 + seed % (1 << 50);
            }
            Mutation::SeqZero => case.seq = 0,
            Mutation::Empty => case.readings.clear(),
            Mutation::TooMany => {
                let first = case.readings[0];
                case.readings
                    .resize(LIMITS.max_readings_per_frame as usize + 1, first);
            }
        }
    }
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::UnknownSensor),
        Just(Mutation::WrongKind),
        any::<u8>().prop_map(Mutation::NonFinite),
        Just(Mutation::BeforeY2000),
        Just(Mutation::TooFarAhead),
        Just(Mutation::SeqZero),
        Just(Mutation::Empty),
        Just(Mutation::TooMany),
    ]
}

/// A session opened with a Hello declaring `sensors` (named `s<id>`).
fn opened(sensors: &BTreeMap<u16, ValueKind>) -> Session {
    let names: Vec<String> = sensors.keys().map(|id| format!("s{id}")).collect();
    let decls: Vec<SensorDecl<'_>> = sensors
        .iter()
        .zip(&names)
        .map(|((id, kind), name)| SensorDecl {
            id: *id,
            name,
            unit: "",
            kind: *kind,
        })
        .collect();
    let hello = schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
        version: 1,
        firmware: "prop",
        sensors: List::Borrowed(&decls),
        actuators: List::Borrowed(&[]),
    }))
    .expect("encodes");
    let mut session = Session::new(5, LIMITS);
    match session.on_frame(&hello, NOW) {
        Step::Open(info) => assert_eq!(info.sensors.len(), sensors.len()),
        other => panic!("Hello refused: {other:?}"),
    }
    session
}

fn frame(case: &Case) -> Vec<u8> {
    schema::encode_uplink_to_vec(&Uplink::Telemetry(Telemetry {
        seq: case.seq,
        base_time_ms: case.base_time_ms,
        readings: List::Borrowed(&case.readings),
    }))
    .expect("encodes")
}

/// A valid Hello as owned parts, for mutation.
#[derive(Debug, Clone)]
struct HelloModel {
    firmware: String,
    sensors: Vec<(u16, String, String, ValueKind)>,
    actuators: Vec<(u16, String, ValueKind)>,
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ °µ€-]{1,16}"
}

fn valid_hello() -> impl Strategy<Value = HelloModel> {
    (
        "[ -~]{0,64}",
        btree_map(any::<u16>(), (name(), "[a-z°%/]{0,4}", any_kind()), 0..8),
        btree_map(any::<u16>(), (name(), any_kind()), 0..8),
    )
        .prop_map(|(firmware, sensors, actuators)| HelloModel {
            firmware,
            sensors: sensors
                .into_iter()
                .map(|(id, (n, u, k))| (id, n, u, k))
                .collect(),
            actuators: actuators
                .into_iter()
                .map(|(id, (n, k))| (id, n, k))
                .collect(),
        })
}

/// One thing wrong with a valid Hello; all close with 4005.
#[derive(Debug, Clone, Copy)]
enum HelloMutation {
    DuplicateSensor,
    DuplicateActuator,
    EmptyName,
    LongName,
    LongUnit,
    LongFirmware,
    ControlCharacter(char),
    TooMany,
}

fn any_hello_mutation() -> impl Strategy<Value = HelloMutation> {
    prop_oneof![
        Just(HelloMutation::DuplicateSensor),
        Just(HelloMutation::DuplicateActuator),
        Just(HelloMutation::EmptyName),
        Just(HelloMutation::LongName),
        Just(HelloMutation::LongUnit),
        Just(HelloMutation::LongFirmware),
        prop_oneof![Just('\0'), Just('\n'), Just('\u{7f}'), Just('\u{85}')]
            .prop_map(HelloMutation::ControlCharacter),
        Just(HelloMutation::TooMany),
    ]
}

impl HelloModel {
    fn apply(&mut self, mutation: HelloMutation) {
        if self.sensors.is_empty() {
            self.sensors
                .push((0, "base".into(), String::new(), ValueKind::Int));
        }
        if self.actuators.is_empty() {
            self.actuators.push((0, "base".into(), ValueKind::Bool));
        }
        match mutation {
            HelloMutation::DuplicateSensor => {
                let copy = self.sensors[0].clone();
                self.sensors.push((copy.0, "other".into(), copy.2, copy.3));
            }
            HelloMutation::DuplicateActuator => {
                let copy = self.actuators[0].clone();
                self.actuators.push((copy.0, "other".into(), copy.2));
            }
            HelloMutation::EmptyName => self.actuators[0].1.clear(),
            HelloMutation::LongName => self.sensors[0].1 = "é".repeat(33),
            HelloMutation::LongUnit => self.sensors[0].2 = "u".repeat(17),
            HelloMutation::LongFirmware => self.firmware = "f".repeat(65),
            HelloMutation::ControlCharacter(c) => self.sensors[0].2 = format!("°{c}"),
            HelloMutation::TooMany => {
                let used: Vec<u16> = self.sensors.iter().map(|s| s.0).collect();
                let mut id = 0u16;
                while self.sensors.len() + self.actuators.len() <= LIMITS.max_declared as usize {
                    if !used.contains(&id) {
                        self.sensors
                            .push((id, "x".into(), String::new(), ValueKind::Int));
                    }
                    id += 1;
                }
            }
        }
    }

    fn encode(&self, version: u16) -> Vec<u8> {
        let sensors: Vec<SensorDecl<'_>> = self
            .sensors
            .iter()
            .map(|(id, name, unit, kind)| SensorDecl {
                id: *id,
                name,
                unit,
                kind: *kind,
            })
            .collect();
        let actuators: Vec<ActuatorDecl<'_>> = self
            .actuators
            .iter()
            .map(|(id, name, kind)| ActuatorDecl {
                id: *id,
                name,
                kind: *kind,
            })
            .collect();
        schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
            version,
            firmware: &self.firmware,
            sensors: List::Borrowed(&sensors),
            actuators: List::Borrowed(&actuators),
        }))
        .expect("encodes")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A valid frame is accepted whole: every reading, at its own time,
    /// for this device.
    #[test]
    fn valid_telemetry_is_accepted_as_sent(case in valid_case()) {
        let mut session = opened(&case.sensors);
        match session.on_frame(&frame(&case), NOW) {
            Step::Ingest { seq, readings, rejected: None } => {
                prop_assert_eq!(seq, case.seq);
                prop_assert_eq!(readings.len(), case.readings.len());
                for (row, sent) in readings.iter().zip(&case.readings) {
                    prop_assert_eq!(row.device_pk, 5);
                    prop_assert_eq!(row.sensor, sent.sensor);
                    prop_assert_eq!(row.value, sent.value);
                    prop_assert_eq!(
                        row.time_ms,
                        i64::try_from(case.base_time_ms).unwrap_or(i64::MAX)
                            + i64::from(sent.offset_ms)
                    );
                }
            }
            other => prop_assert!(false, "valid frame not accepted: {:?}", other),
        }
    }

    /// One thing wrong: the whole frame is refused with that thing's code,
    /// nothing of it kept, its seq still queued for the ack.
    #[test]
    fn one_bad_field_rejects_the_frame_with_its_code(
        mut case in valid_case(),
        mutation in any_mutation(),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        mutation.apply(&mut case, at, seed);
        let mut session = opened(&case.sensors);
        match session.on_frame(&frame(&case), NOW) {
            Step::Ingest { seq, readings, rejected: Some(rejection) } => {
                prop_assert_eq!(seq, case.seq);
                prop_assert!(readings.is_empty());
                prop_assert_eq!(rejection.code, mutation.code(), "{}", rejection.reason);
            }
            other => prop_assert!(false, "{:?} not rejected: {:?}", mutation, other),
        }
        // The session stays open and takes the next valid frame.
        prop_assert!(session.is_open());
    }

    /// Valid Hellos open the session with what they declared; one thing
    /// wrong closes with 4005; a wrong version with 4002.
    #[test]
    fn hello_is_accepted_exactly_when_valid(
        hello in valid_hello(),
        mutation in proptest::option::of(any_hello_mutation()),
        version in prop_oneof![4 => Just(1u16), 1 => any::<u16>()],
    ) {
        let mut hello = hello;
        if let Some(mutation) = mutation {
            hello.apply(mutation);
        }
        let mut session = Session::new(5, LIMITS);
        let step = session.on_frame(&hello.encode(version), NOW);
        match (version, mutation, step) {
            (v, _, Step::Close(code, _)) if v != 1 => {
                prop_assert_eq!(code, close::UNSUPPORTED_VERSION);
            }
            (1, None, Step::Open(info)) => {
                prop_assert_eq!(&info.firmware, &hello.firmware);
                prop_assert_eq!(info.sensors.len(), hello.sensors.len());
                prop_assert_eq!(info.actuators.len(), hello.actuators.len());
            }
            (1, Some(_), Step::Close(code, reason)) => {
                prop_assert_eq!(code, close::INVALID_HELLO, "{}", reason);
            }
            (_, mutation, step) => {
                prop_assert!(false, "{:?} with {:?} gave {:?}", hello, mutation, step);
            }
        }
    }

    /// Arbitrary bytes, before or after Hello: a step, never a panic, and
    /// never readings from something that is not a valid Telemetry frame.
    #[test]
    fn arbitrary_frames_never_panic(
        case in valid_case(),
        frames in vec(vec(any::<u8>(), 0..64), 1..8),
        hello_first in any::<bool>(),
    ) {
        let mut session = if hello_first { opened(&case.sensors) } else { Session::new(5, LIMITS) };
        for bytes in &frames {
            match session.on_frame(bytes, NOW) {
                Step::Ingest { readings, .. } if !readings.is_empty() => {
                    let decoded = schema::decode_uplink(bytes);
                    prop_assert!(matches!(decoded, Ok(Uplink::Telemetry(_))));
                }
                Step::Close(..) => break,
                _ => {}
            }
        }
    }
}
