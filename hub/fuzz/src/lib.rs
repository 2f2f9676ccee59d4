//! The properties the fuzz targets check, as plain functions over bytes.
//!
//! Each function takes arbitrary input and panics only when a property of
//! the protocol code is broken: a decoder or validator panicked, a decoded
//! frame does not survive a re-encode, the hub accepted what it must refuse
//! (or refused with the wrong code), or the firmware client mishandled a
//! hostile hub's frame. The libFuzzer binaries in `fuzz_targets/` are
//! one-line wrappers; `hub/tests/fuzz_corpus.rs` includes this file and
//! replays every file of `corpus/` through the same functions, so the normal
//! test suite runs the corpus (and every crash once found) without a fuzzer.
//!
//! Targets that need several messages (a Hello, then frames) read their
//! input as a sequence of `[length: u16 little-endian][message]` records,
//! see [`split_messages`] and [`join_messages`].

use firmware_client::{
    ArrayStorage, CommandLog, Decision, Event, Outcome, SessionConfig, SessionError, SessionState,
};
use hub::gateway::session::{
    EARLIEST_READING_MS, HelloInfo, MAX_NAME_BYTES, MAX_UNIT_BYTES, Session, SessionLimits, Step,
};
use hub::store::ReadingRow;
use schema::{
    ActuatorDecl, Downlink, Hello, SensorDecl, Telemetry, Uplink, Value, ValueKind, close,
    error_code,
};

/// The hub's clock in [`hello_validation`]: one hour after the golden
/// Telemetry vector's base time, so all of its readings are in the window.
pub const NOW_MS: i64 = 1_700_003_600_000;

/// The device key the hub session of [`hello_validation`] runs for.
pub const DEVICE_PK: i64 = 7;

/// Session limits of [`hello_validation`]: small, so the fuzzer reaches them.
pub const LIMITS: SessionLimits = SessionLimits {
    max_readings_per_frame: 16,
    max_declared: 16,
    max_future_skew_ms: 60_000,
};

/// Most messages one input is split into, so one input stays cheap.
const MAX_MESSAGES: usize = 64;

/// Splits `data` into `[len: u16 LE][bytes]` records; a record longer than
/// what remains takes the rest, and a lone trailing byte is a record of its own.
pub fn split_messages(data: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && messages.len() < MAX_MESSAGES {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            messages.push(rest);
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (message, tail) = tail.split_at(len);
        messages.push(message);
        rest = tail;
    }
    messages
}

/// The inverse of [`split_messages`], for seeds and regression tests.
pub fn join_messages(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let len = u16::try_from(message.len()).expect("a seed message fits in 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(message);
    }
    out
}

// ---- decode_uplink ---------------------------------------------------------

/// Any bytes: both decoders answer without panicking, and whatever decodes
/// re-encodes (no longer than the input: the encoder is canonical, the input
/// may not be) to bytes that decode and re-encode to the same bytes, so the
/// value survives exactly, floats by bits. The fixed-buffer (firmware)
/// encoder agrees with the allocating one.
pub fn decode_uplink(data: &[u8]) {
    if let Ok(frame) = schema::decode_uplink(data) {
        let first = schema::encode_uplink_to_vec(&frame).expect("a decoded uplink frame encodes");
        assert!(first.len() <= data.len(), "re-encoding grew the frame");
        let again = schema::decode_uplink(&first).expect("a re-encoded uplink frame decodes");
        let second = schema::encode_uplink_to_vec(&again).expect("encodes again");
        assert_eq!(first, second, "uplink value changed through a round trip");
        let mut buf = vec![0u8; first.len()];
        let fixed = schema::encode_uplink(&frame, &mut buf).expect("fits its own length");
        assert_eq!(&*fixed, &first[..], "fixed-buffer encoder disagrees");
    }
    if let Ok(frame) = schema::decode_downlink(data) {
        let first =
            schema::encode_downlink_to_vec(&frame).expect("a decoded downlink frame encodes");
        assert!(first.len() <= data.len(), "re-encoding grew the frame");
        let again = schema::decode_downlink(&first).expect("a re-encoded downlink frame decodes");
        let second = schema::encode_downlink_to_vec(&again).expect("encodes again");
        assert_eq!(first, second, "downlink value changed through a round trip");
        let mut buf = vec![0u8; first.len()];
        let fixed = schema::encode_downlink(&frame, &mut buf).expect("fits its own length");
        assert_eq!(&*fixed, &first[..], "fixed-buffer encoder disagrees");
    }
}

// ---- hello_validation ------------------------------------------------------

/// Why Hello must be refused with 4005, by the rules of docs/PROTOCOL.md,
/// written independently of the hub's code; `None` when it is valid.
pub fn hello_problem(hello: &Hello<'_>, max_declared: u32) -> Option<&'static str> {
    let name_ok = |text: &str, max: usize, allow_empty: bool| {
        (allow_empty || !text.is_empty())
            && text.len() <= max
            && !text.chars().any(char::is_control)
    };
    if hello.sensors.len() + hello.actuators.len() > max_declared as usize {
        return Some("too many declarations");
    }
    if !name_ok(hello.firmware, MAX_NAME_BYTES, true) {
        return Some("bad firmware string");
    }
    let mut ids: Vec<u16> = hello.sensors.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Some("duplicate sensor id");
    }
    let mut ids: Vec<u16> = hello.actuators.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Some("duplicate actuator id");
    }
    if hello
        .sensors
        .iter()
        .any(|s| !name_ok(s.name, MAX_NAME_BYTES, false) || !name_ok(s.unit, MAX_UNIT_BYTES, true))
    {
        return Some("bad sensor name or unit");
    }
    if hello
        .actuators
        .iter()
        .any(|a| !name_ok(a.name, MAX_NAME_BYTES, false))
    {
        return Some("bad actuator name");
    }
    None
}

/// The error code a Telemetry frame must be rejected with, or `None` if it
/// must be accepted: the rules of docs/PROTOCOL.md in the hub's order (seq,
/// batch size, then per reading: declared sensor, kind, finite, time window),
/// written independently of the hub's code.
pub fn telemetry_problem(
    sensors: &[(u16, ValueKind)],
    telemetry: &Telemetry<'_>,
    limits: SessionLimits,
    now_ms: i64,
) -> Option<u16> {
    if telemetry.seq == 0 {
        return Some(error_code::BAD_SEQUENCE);
    }
    let count = telemetry.readings.len();
    if count == 0 || count > limits.max_readings_per_frame as usize {
        return Some(error_code::BAD_BATCH_SIZE);
    }
    let earliest = i128::from(EARLIEST_READING_MS);
    let latest = i128::from(now_ms) + i128::from(limits.max_future_skew_ms);
    for reading in telemetry.readings.iter() {
        let Some(&(_, kind)) = sensors.iter().find(|(id, _)| *id == reading.sensor) else {
            return Some(error_code::UNKNOWN_SENSOR);
        };
        if reading.value.kind() != kind {
            return Some(error_code::WRONG_VALUE_KIND);
        }
        if let Value::Float(f) = reading.value
            && !f.is_finite()
        {
            return Some(error_code::NON_FINITE_VALUE);
        }
        let time = i128::from(telemetry.base_time_ms) + i128::from(reading.offset_ms);
        if time < earliest || time > latest {
            return Some(error_code::BAD_TIMESTAMP);
        }
    }
    None
}

/// The accepted Hello's declarations are exactly what it said.
fn check_opened(hello: &Hello<'_>, info: &HelloInfo) {
    assert_eq!(info.firmware, hello.firmware);
    assert_eq!(info.sensors.len(), hello.sensors.len());
    for (stored, declared) in info.sensors.iter().zip(hello.sensors.iter()) {
        assert_eq!(stored.id, declared.id);
        assert_eq!(stored.name, declared.name);
        assert_eq!(stored.unit, declared.unit);
        assert_eq!(stored.kind, declared.kind);
    }
    assert_eq!(info.actuators.len(), hello.actuators.len());
    for (stored, declared) in info.actuators.iter().zip(hello.actuators.iter()) {
        assert_eq!(stored.id, declared.id);
        assert_eq!(stored.name, declared.name);
        assert_eq!(stored.kind, declared.kind);
    }
}

/// Accepted rows are the frame's readings, one for one, each of a declared
/// sensor of its kind, finite, inside the time window, for this device.
fn check_rows(
    sensors: &[(u16, ValueKind)],
    telemetry: &Telemetry<'_>,
    rows: &[ReadingRow],
    now_ms: i64,
) {
    assert_eq!(
        rows.len(),
        telemetry.readings.len(),
        "readings lost or added"
    );
    for (row, reading) in rows.iter().zip(telemetry.readings.iter()) {
        assert_eq!(
            row.device_pk, DEVICE_PK,
            "reading stored for another device"
        );
        assert_eq!(row.sensor, reading.sensor);
        let declared = sensors.iter().find(|(id, _)| *id == row.sensor);
        assert_eq!(
            declared.map(|(_, kind)| *kind),
            Some(row.value.kind()),
            "undeclared sensor or wrong kind accepted"
        );
        assert!(row.value.is_finite(), "non-finite value accepted");
        assert_eq!(exact(&row.value), exact(&reading.value));
        let time = i128::from(telemetry.base_time_ms) + i128::from(reading.offset_ms);
        assert_eq!(i128::from(row.time_ms), time);
        assert!(
            row.time_ms >= EARLIEST_READING_MS,
            "time before 2000 accepted"
        );
        assert!(
            row.time_ms <= now_ms + LIMITS.max_future_skew_ms,
            "time too far ahead accepted"
        );
    }
}

/// A value with its float as bits, so NaN compares equal to itself.
fn exact(value: &Value) -> (u8, u64) {
    match *value {
        Value::Float(f) => (0, f.to_bits()),
        Value::Int(i) => (1, i.cast_unsigned()),
        Value::Bool(b) => (2, u64::from(b)),
    }
}

/// A hub session fed the messages of `data` ([`split_messages`]): the first
/// is meant as Hello, the rest as Telemetry and CommandResult frames. Every
/// step must be the one docs/PROTOCOL.md prescribes: Hello accepted exactly
/// when valid (else 4002/4005), frames before Hello closed with 1008, a
/// second Hello with 1002, undecodable bytes with 1007 (1002 for a downlink
/// frame), and each Telemetry frame accepted exactly when valid, else
/// rejected with the right error code and nothing of it kept.
pub fn hello_validation(data: &[u8]) {
    let mut session = Session::new(DEVICE_PK, LIMITS);
    let mut declared: Option<Vec<(u16, ValueKind)>> = None;
    for message in split_messages(data) {
        let step = session.on_frame(message, NOW_MS);
        let decoded = schema::decode_uplink(message);
        match step {
            Step::Open(info) => {
                assert!(declared.is_none(), "a second Hello opened the session");
                let Ok(Uplink::Hello(hello)) = &decoded else {
                    panic!("session opened by {decoded:?}");
                };
                assert_eq!(hello.version, schema::PROTOCOL_VERSION);
                assert_eq!(hello_problem(hello, LIMITS.max_declared), None);
                check_opened(hello, &info);
                declared = Some(hello.sensors.iter().map(|s| (s.id, s.kind)).collect());
                assert!(session.is_open());
            }
            Step::Ingest {
                seq,
                readings,
                rejected,
            } => {
                let sensors = declared.as_deref().expect("telemetry before Hello");
                let Ok(Uplink::Telemetry(telemetry)) = &decoded else {
                    panic!("ingested {decoded:?}");
                };
                assert_eq!(seq, telemetry.seq);
                let expected = telemetry_problem(sensors, telemetry, LIMITS, NOW_MS);
                match rejected {
                    None => {
                        assert_eq!(expected, None, "invalid frame accepted");
                        check_rows(sensors, telemetry, &readings, NOW_MS);
                    }
                    Some(rejection) => {
                        assert!(readings.is_empty(), "a rejected frame kept readings");
                        assert_eq!(Some(rejection.code), expected, "{}", rejection.reason);
                    }
                }
            }
            Step::CommandResult { command_id, .. } => {
                assert!(declared.is_some(), "command result before Hello");
                let Ok(Uplink::CommandResult(result)) = &decoded else {
                    panic!("command result from {decoded:?}");
                };
                assert_eq!(command_id, result.command_id);
            }
            Step::Report(rejection) => {
                panic!("on_frame reported {rejection:?}; it never does");
            }
            Step::Close(code, _) => {
                let expected = match (&decoded, declared.is_some()) {
                    (Err(_), _) if schema::decode_downlink(message).is_ok() => {
                        close::PROTOCOL_ERROR
                    }
                    (Err(_), _) => close::INVALID_PAYLOAD,
                    (Ok(Uplink::Hello(_)), true) => close::PROTOCOL_ERROR,
                    (Ok(Uplink::Hello(hello)), false)
                        if hello.version != schema::PROTOCOL_VERSION =>
                    {
                        close::UNSUPPORTED_VERSION
                    }
                    (Ok(Uplink::Hello(hello)), false) => {
                        assert!(
                            hello_problem(hello, LIMITS.max_declared).is_some(),
                            "valid Hello refused"
                        );
                        close::INVALID_HELLO
                    }
                    (Ok(_), false) => close::POLICY_VIOLATION,
                    (Ok(frame), true) => panic!("closed on {frame:?}"),
                };
                assert_eq!(code, expected);
                // The connection ends here.
                return;
            }
        }
    }
}

// ---- downlink_decode -------------------------------------------------------

/// The firmware's declarations in [`downlink_decode`].
const SENSORS: [SensorDecl<'static>; 2] = [
    SensorDecl {
        id: 1,
        name: "temperature",
        unit: "°C",
        kind: ValueKind::Float,
    },
    SensorDecl {
        id: 2,
        name: "door",
        unit: "",
        kind: ValueKind::Bool,
    },
];

/// The firmware's actuators in [`downlink_decode`].
const ACTUATORS: [ActuatorDecl<'static>; 2] = [
    ActuatorDecl {
        id: 1,
        name: "relay",
        kind: ValueKind::Bool,
    },
    ActuatorDecl {
        id: 2,
        name: "setpoint",
        kind: ValueKind::Float,
    },
];

/// A firmware client session (no_std core, inline storage) fed the messages
/// of `data` as if from a compromised hub, between pushes of readings and
/// transmits: it never panics, an Ack or Welcome only removes frames it
/// covers, every transmitted frame is a valid Telemetry frame, commands go
/// through the command log, and answers always fit their buffer.
pub fn downlink_decode(data: &[u8]) {
    let mut config = SessionConfig::new();
    config.max_batch = 4;
    config.max_in_flight = 3;
    let mut session = firmware_client::Session::new(ArrayStorage::<32, 4, 8>::new(), config);
    let mut log = CommandLog::<[_; 4]>::new_inline();
    let mut now: u64 = 1_700_000_000_000;
    for i in 0..6u32 {
        let _ = session.push(1, now + u64::from(i), Value::Float(f64::from(i)));
    }
    let mut hello = [0u8; 256];
    if session
        .connected("fuzz-1.0", &SENSORS, &ACTUATORS, &mut hello)
        .is_err()
    {
        panic!("Hello of the fixed declarations does not fit 256 bytes");
    }
    let mut out = vec![0u8; session.telemetry_buffer_len()];
    let mut answer = [0u8; firmware_client::MAX_COMMAND_RESULT_BYTES];
    let mut last_transmitted: Option<u64> = None;
    for message in split_messages(data) {
        let mut removed = Vec::new();
        let event = session.handle_downlink(message, |frame| removed.push(frame));
        let decoded = schema::decode_downlink(message);
        match event {
            Ok(Event::Welcome {
                last_stored_seq, ..
            }) => {
                assert!(removed.iter().all(|f| f.seq <= last_stored_seq));
                assert_eq!(session.state(), SessionState::Active);
            }
            Ok(Event::Acked(_)) => {
                let Ok(Downlink::Ack(ack)) = decoded else {
                    panic!("acked by {decoded:?}");
                };
                assert!(
                    removed.iter().all(|f| f.seq <= ack.seq),
                    "an Ack removed a frame it does not cover"
                );
            }
            Ok(Event::Command(command)) => {
                assert!(removed.is_empty());
                // Every reply, a rejection's reason included, fits
                // MAX_COMMAND_RESULT_BYTES.
                let decision = log.receive(&command, &ACTUATORS[..], now);
                let reply = decision.reply();
                let bytes = session
                    .command_result(command.id, reply.as_wire(), &mut answer)
                    .expect("an answer fits its buffer");
                assert!(schema::decode_uplink(bytes).is_ok());
                if decision == Decision::Run {
                    log.finish(command.id, Outcome::from_result(Ok(None)));
                }
            }
            Ok(Event::Error(_)) => assert!(removed.is_empty()),
            Ok(_) => {}
            Err(SessionError::Decode(_)) => {
                assert!(decoded.is_err());
                assert!(removed.is_empty());
            }
            Err(other) => panic!("unexpected session error {other:?}"),
        }
        // Send what is due, as the transport would, a bounded number of times.
        for _ in 0..4 {
            match session.poll_transmit(now, true, &mut out) {
                Ok(Some(transmit)) => {
                    let Ok(Uplink::Telemetry(t)) = schema::decode_uplink(transmit.bytes) else {
                        panic!("transmitted an invalid frame");
                    };
                    assert_eq!(t.seq, transmit.seq);
                    assert_ne!(t.seq, 0, "sequence number 0 sent");
                    assert_eq!(t.readings.len(), transmit.readings as usize);
                    // New frames take increasing numbers; the counter
                    // saturates at u64::MAX (reached only through a hostile
                    // Welcome), where frames share the number: harmless,
                    // since the hub stores by (device, sensor, time).
                    if !transmit.resend
                        && let Some(last) = last_transmitted
                    {
                        assert!(
                            t.seq > last || t.seq == u64::MAX,
                            "sequence numbers went backwards"
                        );
                    }
                    last_transmitted = Some(last_transmitted.map_or(t.seq, |l| l.max(t.seq)));
                }
                Ok(None) => break,
                Err(err) => panic!("transmit failed: {err:?}"),
            }
        }
        now += 250;
        let _ = session.push(2, now, Value::Bool(now.is_multiple_of(500)));
    }
}
