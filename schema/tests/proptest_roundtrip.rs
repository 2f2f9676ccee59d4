//! Property tests: every frame round-trips exactly, and no input makes a
//! decoder panic.
//!
//! Strategies generate owned models (strings, vectors) and the tests borrow
//! frames from them, because frames borrow their strings. Floats cover every
//! bit pattern, NaN payloads and infinities included; they are compared by
//! bits, since `NaN != NaN`.

// The decoders of uplink frames and the `_to_vec` encoders need `alloc`.
#![cfg(feature = "alloc")]

use proptest::collection::vec;
use proptest::prelude::*;
use schema::{
    Ack, ActuatorDecl, Command, CommandAction, CommandOutcome, CommandResult, DecodeError,
    Downlink, ErrorFrame, Hello, Limits, List, MAX_COMMAND_ARGS, MAX_REASON_BYTES, Reading,
    SensorDecl, Telemetry, Uplink, Value, ValueKind, Welcome, decode_downlink, decode_uplink,
    encode_downlink, encode_downlink_to_vec, encode_uplink, encode_uplink_to_vec,
};

// ---- strategies ---------------------------------------------------------

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        any::<f64>(),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_f64().prop_map(Value::Float),
        edge_i64().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn any_kind() -> impl Strategy<Value = ValueKind> {
    prop_oneof![
        Just(ValueKind::Float),
        Just(ValueKind::Int),
        Just(ValueKind::Bool)
    ]
}

/// Any Unicode text, including multi-byte characters and the empty string,
/// and often text at the protocol's length limits (64-byte names, 123-byte
/// reasons) or past them, with multi-byte characters across the boundary.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("n".repeat(64)),
        1 => Just("r".repeat(MAX_REASON_BYTES)),
        1 => Just(format!("{}é", "x".repeat(63))),
        1 => Just("€".repeat(200)),
    ]
}

// Numbers: mostly anything, often the extremes a hostile or long-lived
// device reaches (0, 1, MAX, MAX - 1; varints change length at powers of 128).

fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => any::<u64>(),
        1 => prop_oneof![
            Just(0),
            Just(1),
            Just(127),
            Just(128),
            Just(u64::MAX - 1),
            Just(u64::MAX)
        ],
    ]
}

fn edge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => any::<u32>(),
        1 => prop_oneof![Just(0), Just(1), Just(u32::MAX - 1), Just(u32::MAX)],
    ]
}

fn edge_u16() -> impl Strategy<Value = u16> {
    prop_oneof![
        2 => any::<u16>(),
        1 => prop_oneof![Just(0), Just(1), Just(127), Just(128), Just(u16::MAX)],
    ]
}

fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => any::<i64>(),
        1 => prop_oneof![Just(0), Just(-1), Just(i64::MIN), Just(i64::MAX)],
    ]
}

fn any_reading() -> impl Strategy<Value = Reading> {
    (edge_u16(), edge_u32(), any_value()).prop_map(|(sensor, offset_ms, value)| Reading {
        sensor,
        offset_ms,
        value,
    })
}

#[derive(Debug, Clone)]
enum OutcomeModel {
    Delivered,
    Succeeded(Option<Value>),
    Failed(String),
    Rejected(String),
}

#[derive(Debug, Clone)]
enum UplinkModel {
    Hello {
        version: u16,
        firmware: String,
        sensors: Vec<(u16, String, String, ValueKind)>,
        actuators: Vec<(u16, String, ValueKind)>,
    },
    Telemetry {
        seq: u64,
        base_time_ms: u64,
        readings: Vec<Reading>,
    },
    CommandResult {
        command_id: u64,
        outcome: OutcomeModel,
    },
}

#[derive(Debug, Clone)]
enum ActionModel {
    Set(Value),
    Invoke(String, Vec<Value>),
}

#[derive(Debug, Clone)]
enum DownlinkModel {
    Welcome {
        device_id: String,
        server_time_ms: u64,
        last_stored_seq: u64,
        limits: Limits,
    },
    Ack(u64),
    Command {
        id: u64,
        actuator: u16,
        action: ActionModel,
        expires_at_ms: u64,
    },
    Error {
        code: u16,
        reason: String,
        seq: Option<u64>,
    },
}

fn any_uplink() -> impl Strategy<Value = UplinkModel> {
    let outcome = prop_oneof![
        Just(OutcomeModel::Delivered),
        proptest::option::of(any_value()).prop_map(OutcomeModel::Succeeded),
        any_text().prop_map(OutcomeModel::Failed),
        any_text().prop_map(OutcomeModel::Rejected),
    ];
    prop_oneof![
        (
            edge_u16(),
            any_text(),
            vec((edge_u16(), any_text(), any_text(), any_kind()), 0..8),
            vec((edge_u16(), any_text(), any_kind()), 0..8),
        )
            .prop_map(|(version, firmware, sensors, actuators)| {
                UplinkModel::Hello {
                    version,
                    firmware,
                    sensors,
                    actuators,
                }
            }),
        (edge_u64(), edge_u64(), vec(any_reading(), 0..40)).prop_map(
            |(seq, base_time_ms, readings)| UplinkModel::Telemetry {
                seq,
                base_time_ms,
                readings,
            }
        ),
        (edge_u64(), outcome).prop_map(|(command_id, outcome)| UplinkModel::CommandResult {
            command_id,
            outcome
        }),
    ]
}

fn any_downlink() -> impl Strategy<Value = DownlinkModel> {
    let limits = (edge_u32(), edge_u32(), edge_u32()).prop_map(|(a, b, c)| Limits {
        max_message_bytes: a,
        max_readings_per_frame: b,
        idle_timeout_ms: c,
    });
    let action = prop_oneof![
        any_value().prop_map(ActionModel::Set),
        (any_text(), vec(any_value(), 0..=MAX_COMMAND_ARGS))
            .prop_map(|(name, args)| ActionModel::Invoke(name, args)),
    ];
    prop_oneof![
        (any_text(), edge_u64(), edge_u64(), limits).prop_map(
            |(device_id, server_time_ms, last_stored_seq, limits)| DownlinkModel::Welcome {
                device_id,
                server_time_ms,
                last_stored_seq,
                limits,
            }
        ),
        edge_u64().prop_map(DownlinkModel::Ack),
        (edge_u64(), edge_u16(), action, edge_u64()).prop_map(
            |(id, actuator, action, expires_at_ms)| DownlinkModel::Command {
                id,
                actuator,
                action,
                expires_at_ms,
            }
        ),
        (edge_u16(), any_text(), proptest::option::of(edge_u64()))
            .prop_map(|(code, reason, seq)| DownlinkModel::Error { code, reason, seq }),
    ]
}

// ---- models to frames ---------------------------------------------------

impl UplinkModel {
    /// The frame, with owned lists (what the hub's decoder produces).
    fn frame(&self) -> Uplink<'_> {
        match self {
            UplinkModel::Hello {
                version,
                firmware,
                sensors,
                actuators,
            } => Uplink::Hello(Hello {
                version: *version,
                firmware,
                sensors: List::Owned(
                    sensors
                        .iter()
                        .map(|(id, name, unit, kind)| SensorDecl {
                            id: *id,
                            name,
                            unit,
                            kind: *kind,
                        })
                        .collect(),
                ),
                actuators: List::Owned(
                    actuators
                        .iter()
                        .map(|(id, name, kind)| ActuatorDecl {
                            id: *id,
                            name,
                            kind: *kind,
                        })
                        .collect(),
                ),
            }),
            UplinkModel::Telemetry {
                seq,
                base_time_ms,
                readings,
            } => Uplink::Telemetry(Telemetry {
                seq: *seq,
                base_time_ms: *base_time_ms,
                // Borrowed here, as firmware builds it; the decoder returns Owned.
                readings: List::Borrowed(readings),
            }),
            UplinkModel::CommandResult {
                command_id,
                outcome,
            } => Uplink::CommandResult(CommandResult {
                command_id: *command_id,
                outcome: match outcome {
                    OutcomeModel::Delivered => CommandOutcome::Delivered,
                    OutcomeModel::Succeeded(v) => CommandOutcome::Succeeded(*v),
                    OutcomeModel::Failed(r) => CommandOutcome::Failed(r),
                    OutcomeModel::Rejected(r) => CommandOutcome::Rejected(r),
                },
            }),
        }
    }
}

impl DownlinkModel {
    fn frame(&self) -> Downlink<'_> {
        match self {
            DownlinkModel::Welcome {
                device_id,
                server_time_ms,
                last_stored_seq,
                limits,
            } => Downlink::Welcome(Welcome {
                device_id,
                server_time_ms: *server_time_ms,
                last_stored_seq: *last_stored_seq,
                limits: *limits,
            }),
            DownlinkModel::Ack(seq) => Downlink::Ack(Ack { seq: *seq }),
            DownlinkModel::Command {
                id,
                actuator,
                action,
                expires_at_ms,
            } => Downlink::Command(Command {
                id: *id,
                actuator: *actuator,
                action: match action {
                    ActionModel::Set(v) => CommandAction::Set(*v),
                    ActionModel::Invoke(name, args) => CommandAction::Invoke {
                        name,
                        args: heapless::Vec::from_slice(args).expect("at most MAX_COMMAND_ARGS"),
                    },
                },
                expires_at_ms: *expires_at_ms,
            }),
            DownlinkModel::Error { code, reason, seq } => Downlink::Error(ErrorFrame {
                code: *code,
                reason,
                seq: *seq,
            }),
        }
    }
}

// ---- exact comparison (floats by bits) ------------------------------------

/// A value with floats replaced by their bits, so NaN compares equal to itself.
#[derive(Debug, PartialEq)]
enum Exact {
    Float(u64),
    Int(i64),
    Bool(bool),
}

fn exact(value: &Value) -> Exact {
    match *value {
        Value::Float(f) => Exact::Float(f.to_bits()),
        Value::Int(i) => Exact::Int(i),
        Value::Bool(b) => Exact::Bool(b),
    }
}

fn exact_readings(readings: &[Reading]) -> Vec<(u16, u32, Exact)> {
    readings
        .iter()
        .map(|r| (r.sensor, r.offset_ms, exact(&r.value)))
        .collect()
}

fn assert_same_uplink(decoded: &Uplink<'_>, original: &Uplink<'_>) -> Result<(), TestCaseError> {
    match (decoded, original) {
        (Uplink::Hello(a), Uplink::Hello(b)) => {
            prop_assert_eq!(a.version, b.version);
            prop_assert_eq!(a.firmware, b.firmware);
            prop_assert_eq!(&*a.sensors, &*b.sensors);
            prop_assert_eq!(&*a.actuators, &*b.actuators);
        }
        (Uplink::Telemetry(a), Uplink::Telemetry(b)) => {
            prop_assert_eq!(a.seq, b.seq);
            prop_assert_eq!(a.base_time_ms, b.base_time_ms);
            prop_assert_eq!(exact_readings(&a.readings), exact_readings(&b.readings));
        }
        (Uplink::CommandResult(a), Uplink::CommandResult(b)) => {
            prop_assert_eq!(a.command_id, b.command_id);
            match (&a.outcome, &b.outcome) {
                (CommandOutcome::Delivered, CommandOutcome::Delivered) => {}
                (CommandOutcome::Succeeded(x), CommandOutcome::Succeeded(y)) => {
                    prop_assert_eq!(x.as_ref().map(exact), y.as_ref().map(exact));
                }
                (CommandOutcome::Failed(x), CommandOutcome::Failed(y))
                | (CommandOutcome::Rejected(x), CommandOutcome::Rejected(y)) => {
                    prop_assert_eq!(x, y);
                }
                (x, y) => prop_assert!(false, "outcome {:?} decoded as {:?}", y, x),
            }
        }
        (a, b) => prop_assert!(false, "{:?} decoded as {:?}", b, a),
    }
    Ok(())
}

fn assert_same_downlink(
    decoded: &Downlink<'_>,
    original: &Downlink<'_>,
) -> Result<(), TestCaseError> {
    match (decoded, original) {
        (Downlink::Command(a), Downlink::Command(b)) => {
            prop_assert_eq!(a.id, b.id);
            prop_assert_eq!(a.actuator, b.actuator);
            prop_assert_eq!(a.expires_at_ms, b.expires_at_ms);
            match (&a.action, &b.action) {
                (CommandAction::Set(x), CommandAction::Set(y)) => {
                    prop_assert_eq!(exact(x), exact(y));
                }
                (
                    CommandAction::Invoke { name: n1, args: a1 },
                    CommandAction::Invoke { name: n2, args: a2 },
                ) => {
                    prop_assert_eq!(n1, n2);
                    let a1: Vec<_> = a1.iter().map(exact).collect();
                    let a2: Vec<_> = a2.iter().map(exact).collect();
                    prop_assert_eq!(a1, a2);
                }
                (x, y) => prop_assert!(false, "action {:?} decoded as {:?}", y, x),
            }
        }
        // No floats in the other frames: plain equality is exact.
        (a, b) => prop_assert_eq!(a, b),
    }
    Ok(())
}

// ---- properties ---------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn uplink_round_trips_exactly(model in any_uplink()) {
        let frame = model.frame();
        let bytes = encode_uplink_to_vec(&frame).expect("encodes");
        let decoded = decode_uplink(&bytes).expect("decodes");
        assert_same_uplink(&decoded, &frame)?;
        // Re-encoding gives the same bytes, and the fixed-buffer (no_std)
        // encoder agrees with the allocating one.
        prop_assert_eq!(&encode_uplink_to_vec(&decoded).expect("re-encodes"), &bytes);
        let mut buf = vec![0u8; bytes.len()];
        prop_assert_eq!(&*encode_uplink(&frame, &mut buf).expect("fits"), &bytes[..]);
        if !bytes.is_empty() {
            let mut short = vec![0u8; bytes.len() - 1];
            prop_assert!(encode_uplink(&frame, &mut short).is_err());
        }
    }

    #[test]
    fn downlink_round_trips_exactly(model in any_downlink()) {
        let frame = model.frame();
        let bytes = encode_downlink_to_vec(&frame).expect("encodes");
        let decoded = decode_downlink(&bytes).expect("decodes");
        assert_same_downlink(&decoded, &frame)?;
        prop_assert_eq!(&encode_downlink_to_vec(&decoded).expect("re-encodes"), &bytes);
        let mut buf = vec![0u8; bytes.len()];
        prop_assert_eq!(&*encode_downlink(&frame, &mut buf).expect("fits"), &bytes[..]);
    }

    #[test]
    fn truncated_or_extended_frames_are_refused(
        up in any_uplink(),
        down in any_downlink(),
        cut in any::<prop::sample::Index>(),
        extra in vec(any::<u8>(), 1..4),
    ) {
        let up = encode_uplink_to_vec(&up.frame()).expect("encodes");
        let down = encode_downlink_to_vec(&down.frame()).expect("encodes");
        let up_cut = cut.index(up.len());
        let down_cut = cut.index(down.len());
        prop_assert_eq!(decode_uplink(&up[..up_cut]).map(drop), Err(DecodeError::Truncated));
        prop_assert_eq!(decode_downlink(&down[..down_cut]).map(drop), Err(DecodeError::Truncated));
        let up_long = [&up[..], &extra[..]].concat();
        let down_long = [&down[..], &extra[..]].concat();
        prop_assert_eq!(decode_uplink(&up_long).map(drop), Err(DecodeError::TrailingBytes));
        prop_assert_eq!(decode_downlink(&down_long).map(drop), Err(DecodeError::TrailingBytes));
    }

    /// Any bytes at all: a decoder answers Ok or Err, never panics.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode_uplink(&bytes);
        let _ = decode_downlink(&bytes);
    }

    /// Bytes close to valid frames reach deeper into the decoders than
    /// random ones: flip, overwrite or drop bytes of real frames.
    #[test]
    fn decoding_mutated_frames_never_panics(
        up in any_uplink(),
        down in any_downlink(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        for mut bytes in [
            encode_uplink_to_vec(&up.frame()).expect("encodes"),
            encode_downlink_to_vec(&down.frame()).expect("encodes"),
        ] {
            for (at, byte, op) in &edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = *byte,
                    1 => bytes[i] ^= 1 << (byte % 8),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            let _ = decode_uplink(&bytes);
            let _ = decode_downlink(&bytes);
        }
    }
}

// ---- every variant at its extremes -------------------------------------

/// Round-trips a frame model, as the properties above do.
fn round_trip_uplink(model: &UplinkModel) {
    let frame = model.frame();
    let bytes = encode_uplink_to_vec(&frame).expect("encodes");
    let decoded = decode_uplink(&bytes).expect("decodes");
    assert_same_uplink(&decoded, &frame).expect("same frame");
    assert_eq!(encode_uplink_to_vec(&decoded).expect("re-encodes"), bytes);
}

fn round_trip_downlink(model: &DownlinkModel) {
    let frame = model.frame();
    let bytes = encode_downlink_to_vec(&frame).expect("encodes");
    let decoded = decode_downlink(&bytes).expect("decodes");
    assert_same_downlink(&decoded, &frame).expect("same frame");
    assert_eq!(encode_downlink_to_vec(&decoded).expect("re-encodes"), bytes);
}

/// Every frame variant and every enum variant inside one, at the edges:
/// empty and largest lists the hub allows (2048 readings, 256
/// declarations), longest names and reasons, `u64::MAX` sequence numbers
/// and times, integer and float extremes.
#[test]
fn every_variant_round_trips_at_its_extremes() {
    let name = "n".repeat(64);
    let unit = "u".repeat(16);
    let reason = "é".repeat(MAX_REASON_BYTES / 2);
    let values = [
        Value::Float(f64::MAX),
        Value::Float(f64::MIN_POSITIVE),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Float(f64::NEG_INFINITY),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Bool(false),
        Value::Bool(true),
    ];
    let kinds = [ValueKind::Float, ValueKind::Int, ValueKind::Bool];
    let mut uplinks = vec![
        UplinkModel::Hello {
            version: 0,
            firmware: String::new(),
            sensors: vec![],
            actuators: vec![],
        },
        UplinkModel::Hello {
            version: u16::MAX,
            firmware: name.clone(),
            sensors: (0..256u16)
                .map(|i| {
                    (
                        u16::MAX - i,
                        name.clone(),
                        unit.clone(),
                        kinds[usize::from(i % 3)],
                    )
                })
                .collect(),
            actuators: (0..256u16)
                .map(|i| (i, name.clone(), kinds[usize::from(i % 3)]))
                .collect(),
        },
        UplinkModel::Telemetry {
            seq: u64::MAX,
            base_time_ms: u64::MAX,
            readings: vec![],
        },
        UplinkModel::Telemetry {
            seq: 1,
            base_time_ms: 0,
            readings: (0..2048u32)
                .map(|i| Reading {
                    sensor: u16::MAX,
                    offset_ms: u32::MAX - i,
                    value: values[i as usize % values.len()],
                })
                .collect(),
        },
        UplinkModel::CommandResult {
            command_id: u64::MAX,
            outcome: OutcomeModel::Delivered,
        },
        UplinkModel::CommandResult {
            command_id: 0,
            outcome: OutcomeModel::Succeeded(None),
        },
        UplinkModel::CommandResult {
            command_id: 1,
            outcome: OutcomeModel::Failed(reason.clone()),
        },
        UplinkModel::CommandResult {
            command_id: 1,
            outcome: OutcomeModel::Rejected(String::new()),
        },
    ];
    uplinks.extend(values.iter().map(|v| UplinkModel::CommandResult {
        command_id: u64::MAX,
        outcome: OutcomeModel::Succeeded(Some(*v)),
    }));
    for model in &uplinks {
        round_trip_uplink(model);
    }

    let mut downlinks = vec![
        DownlinkModel::Welcome {
            device_id: String::new(),
            server_time_ms: 0,
            last_stored_seq: 0,
            limits: Limits {
                max_message_bytes: 0,
                max_readings_per_frame: 0,
                idle_timeout_ms: 0,
            },
        },
        DownlinkModel::Welcome {
            device_id: "f".repeat(16),
            server_time_ms: u64::MAX,
            last_stored_seq: u64::MAX,
            limits: Limits {
                max_message_bytes: u32::MAX,
                max_readings_per_frame: u32::MAX,
                idle_timeout_ms: u32::MAX,
            },
        },
        DownlinkModel::Ack(0),
        DownlinkModel::Ack(u64::MAX),
        DownlinkModel::Command {
            id: u64::MAX,
            actuator: u16::MAX,
            action: ActionModel::Invoke(String::new(), vec![]),
            expires_at_ms: 0,
        },
        DownlinkModel::Command {
            id: 1,
            actuator: 0,
            action: ActionModel::Invoke(name.clone(), values[..MAX_COMMAND_ARGS].to_vec()),
            expires_at_ms: u64::MAX,
        },
        DownlinkModel::Error {
            code: u16::MAX,
            reason: reason.clone(),
            seq: Some(u64::MAX),
        },
        DownlinkModel::Error {
            code: 0,
            reason: String::new(),
            seq: None,
        },
    ];
    downlinks.extend(values.iter().map(|v| DownlinkModel::Command {
        id: 0,
        actuator: 1,
        action: ActionModel::Set(*v),
        expires_at_ms: 1,
    }));
    for model in &downlinks {
        round_trip_downlink(model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Lists as long as the hub's limits allow round-trip (the decoder
    /// grows its vectors past its preallocation cap).
    #[test]
    fn long_lists_round_trip(
        readings in vec(any_reading(), 1000..=2048),
        sensors in vec((edge_u16(), any_text(), any_text(), any_kind()), 100..=256),
    ) {
        round_trip_uplink(&UplinkModel::Telemetry { seq: u64::MAX, base_time_ms: 0, readings });
        round_trip_uplink(&UplinkModel::Hello {
            version: 1,
            firmware: String::new(),
            sensors,
            actuators: vec![],
        });
    }
}
