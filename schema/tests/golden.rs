//! Golden vectors: the exact bytes of every frame kind, pinned.
//!
//! Each file in `tests/golden/` holds one frame as lowercase hex. `#` starts a
//! comment that runs to the end of the line; whitespace is ignored. The second
//! line of every file is `# N bytes: <hex>`, the whole frame on one line.
//!
//! For every vector the tests check both directions (encode the Rust value and
//! compare with the file; decode the file and compare with the Rust value),
//! that every file has a vector and every vector a file, and that the worked
//! examples in `docs/PROTOCOL.md` are these files, byte for byte and comment
//! for comment.
//!
//! Changing a file here changes the wire protocol: devices in the field
//! encode exactly these bytes.

// The decoders of uplink frames and the `_to_vec` encoders need `alloc`.
#![cfg(feature = "alloc")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use schema::{
    Ack, ActuatorDecl, Command, CommandAction, CommandOutcome, CommandResult, DecodeError,
    Downlink, ErrorFrame, Hello, Limits, List, Reading, SensorDecl, Telemetry, Uplink, Value,
    ValueKind, Welcome, decode_downlink, decode_uplink, encode_downlink, encode_downlink_to_vec,
    encode_uplink, encode_uplink_to_vec, error_code,
};

/// A frame in either direction.
#[derive(Debug)]
enum Frame {
    Up(Uplink<'static>),
    Down(Downlink<'static>),
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The bytes of a golden file: comments and whitespace stripped, hex decoded.
fn parse_hex(name: &str, text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(
        digits
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{name}: only lowercase hex digits, whitespace and # comments are allowed"
    );
    hex::decode(&digits).unwrap_or_else(|err| panic!("{name}: bad hex: {err}"))
}

fn read_golden(name: &str) -> (String, Vec<u8>) {
    let path = golden_dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let bytes = parse_hex(name, &text);
    (text, bytes)
}

/// Re-borrows every list of an uplink frame, as firmware builds it (`no_std`).
fn borrowed<'a>(frame: &'a Uplink<'a>) -> Uplink<'a> {
    match frame {
        Uplink::Hello(h) => Uplink::Hello(Hello {
            version: h.version,
            firmware: h.firmware,
            sensors: List::Borrowed(&h.sensors),
            actuators: List::Borrowed(&h.actuators),
        }),
        Uplink::Telemetry(t) => Uplink::Telemetry(Telemetry {
            seq: t.seq,
            base_time_ms: t.base_time_ms,
            readings: List::Borrowed(&t.readings),
        }),
        Uplink::CommandResult(r) => Uplink::CommandResult(r.clone()),
    }
}

/// Checks one vector in both directions, plus truncation and trailing bytes.
fn check(name: &str, frame: &Frame) {
    let (text, golden) = read_golden(name);
    let header = format!("# {} bytes: {}", golden.len(), hex::encode(&golden));
    assert_eq!(
        text.lines().nth(1),
        Some(header.as_str()),
        "{name}: the second line must be the byte count and the whole frame"
    );

    let mut buf = [0u8; 256];
    match frame {
        Frame::Up(value) => {
            let encoded = encode_uplink_to_vec(value).expect("encodes");
            assert_eq!(
                hex::encode(&encoded),
                hex::encode(&golden),
                "{name}: encode(value) differs from the golden bytes"
            );
            let fixed = encode_uplink(&borrowed(value), &mut buf).expect("fits");
            assert_eq!(
                hex::encode(fixed),
                hex::encode(&golden),
                "{name}: the borrowed (no_std) form encodes differently"
            );
            let decoded = decode_uplink(&golden).expect("golden bytes decode");
            assert_eq!(
                &decoded, value,
                "{name}: decode(bytes) differs from the value"
            );
        }
        Frame::Down(value) => {
            let encoded = encode_downlink_to_vec(value).expect("encodes");
            assert_eq!(
                hex::encode(&encoded),
                hex::encode(&golden),
                "{name}: encode(value) differs from the golden bytes"
            );
            let fixed = encode_downlink(value, &mut buf).expect("fits");
            assert_eq!(hex::encode(fixed), hex::encode(&golden), "{name}: to_slice");
            let decoded = decode_downlink(&golden).expect("golden bytes decode");
            assert_eq!(
                &decoded, value,
                "{name}: decode(bytes) differs from the value"
            );
        }
    }

    // One message is exactly one frame: every strict prefix is truncated, and
    // a byte more is refused.
    let decode = |bytes: &[u8]| match frame {
        Frame::Up(_) => decode_uplink(bytes).map(drop),
        Frame::Down(_) => decode_downlink(bytes).map(drop),
    };
    for len in 0..golden.len() {
        assert_eq!(
            decode(&golden[..len]),
            Err(DecodeError::Truncated),
            "{name}: prefix of {len} bytes"
        );
    }
    let mut longer = golden.clone();
    longer.push(0);
    assert_eq!(decode(&longer), Err(DecodeError::TrailingBytes), "{name}");
}

/// One `#[test]` per vector, and the list of names for the coverage test.
macro_rules! golden_vectors {
    ($($name:ident => $frame:expr,)*) => {
        const VECTOR_NAMES: &[&str] = &[$(stringify!($name)),*];

        mod vector {
            use super::*;
            $(
                #[test]
                fn $name() {
                    check(stringify!($name), &$frame);
                }
            )*
        }
    };
}

const T0: u64 = 1_700_000_000_000;
const EXPIRES: u64 = T0 + 60_000;

golden_vectors! {
    hello => Frame::Up(Uplink::Hello(Hello {
        version: 1,
        firmware: "fw-1.2.0",
        sensors: List::Owned(vec![
            SensorDecl { id: 1, name: "temperature", unit: "°C", kind: ValueKind::Float },
            SensorDecl { id: 2, name: "door", unit: "", kind: ValueKind::Bool },
            SensorDecl { id: 300, name: "pulses", unit: "", kind: ValueKind::Int },
        ]),
        actuators: List::Owned(vec![
            ActuatorDecl { id: 1, name: "relay", kind: ValueKind::Bool },
            ActuatorDecl { id: 2, name: "led", kind: ValueKind::Int },
        ]),
    })),
    hello_minimal => Frame::Up(Uplink::Hello(Hello {
        version: 1,
        firmware: "",
        sensors: List::Owned(vec![]),
        actuators: List::Owned(vec![]),
    })),
    telemetry => Frame::Up(Uplink::Telemetry(Telemetry {
        seq: 42,
        base_time_ms: T0,
        readings: List::Owned(vec![
            Reading { sensor: 1, offset_ms: 0, value: Value::Float(21.5) },
            Reading { sensor: 2, offset_ms: 250, value: Value::Bool(true) },
            Reading { sensor: 300, offset_ms: 1_000, value: Value::Int(-3) },
            Reading { sensor: 300, offset_ms: 3_600_000, value: Value::Int(-1_000_000) },
        ]),
    })),
    telemetry_extremes => Frame::Up(Uplink::Telemetry(Telemetry {
        seq: u64::MAX,
        base_time_ms: 946_684_800_000,
        readings: List::Owned(vec![
            Reading { sensor: u16::MAX, offset_ms: u32::MAX, value: Value::Int(i64::MIN) },
            Reading { sensor: 0, offset_ms: 0, value: Value::Int(i64::MAX) },
        ]),
    })),
    command_result_delivered => Frame::Up(Uplink::CommandResult(CommandResult {
        command_id: 7,
        outcome: CommandOutcome::Delivered,
    })),
    command_result_succeeded => Frame::Up(Uplink::CommandResult(CommandResult {
        command_id: 7,
        outcome: CommandOutcome::Succeeded(Some(Value::Bool(true))),
    })),
    command_result_succeeded_none => Frame::Up(Uplink::CommandResult(CommandResult {
        command_id: 8,
        outcome: CommandOutcome::Succeeded(None),
    })),
    command_result_failed => Frame::Up(Uplink::CommandResult(CommandResult {
        command_id: 8,
        outcome: CommandOutcome::Failed("motor stalled"),
    })),
    command_result_rejected => Frame::Up(Uplink::CommandResult(CommandResult {
        command_id: 9,
        outcome: CommandOutcome::Rejected("expired"),
    })),
    welcome => Frame::Down(Downlink::Welcome(Welcome {
        device_id: "dev-0001",
        server_time_ms: T0 + 123,
        last_stored_seq: 41,
        limits: Limits {
            max_message_bytes: 65_536,
            max_readings_per_frame: 2_048,
            idle_timeout_ms: 60_000,
        },
    })),
    ack => Frame::Down(Downlink::Ack(Ack { seq: 42 })),
    command_set => Frame::Down(Downlink::Command(Command {
        id: 7,
        actuator: 1,
        action: CommandAction::Set(Value::Bool(true)),
        expires_at_ms: EXPIRES,
    })),
    command_invoke => Frame::Down(Downlink::Command(Command {
        id: 8,
        actuator: 2,
        action: CommandAction::Invoke {
            name: "blink",
            args: heapless::Vec::from_slice(&[Value::Int(3), Value::Float(0.5)])
                .expect("two arguments fit"),
        },
        expires_at_ms: EXPIRES,
    })),
    error => Frame::Down(Downlink::Error(ErrorFrame {
        code: error_code::WRONG_VALUE_KIND,
        reason: "sensor 2 expects bool",
        seq: Some(43),
    })),
    error_no_seq => Frame::Down(Downlink::Error(ErrorFrame {
        code: error_code::UNKNOWN_COMMAND,
        reason: "unknown command 99",
        seq: None,
    })),
}

fn golden_file_names() -> BTreeSet<String> {
    std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "hex"))
        .map(|path| {
            path.file_stem()
                .and_then(|stem| stem.to_str())
                .expect("UTF-8 file name")
                .to_owned()
        })
        .collect()
}

#[test]
fn every_golden_file_has_a_vector_and_every_vector_a_file() {
    let files = golden_file_names();
    let vectors: BTreeSet<String> = VECTOR_NAMES.iter().map(|n| n.to_string()).collect();
    let untested: Vec<_> = files.difference(&vectors).collect();
    let missing: Vec<_> = vectors.difference(&files).collect();
    assert!(
        untested.is_empty(),
        "golden files without a vector in golden.rs: {untested:?}"
    );
    assert!(
        missing.is_empty(),
        "vectors without a golden file: {missing:?}"
    );
}

#[test]
fn golden_folder_holds_only_hex_files() {
    for entry in std::fs::read_dir(golden_dir()).expect("tests/golden exists") {
        let path = entry.expect("readable entry").path();
        assert!(
            path.extension().is_some_and(|ext| ext == "hex"),
            "{} is not a .hex file; a misnamed vector would go untested",
            path.display()
        );
    }
}

/// The fenced blocks of PROTOCOL.md that start with `# golden: NAME.hex`.
fn doc_golden_blocks(doc: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("```") {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        if let Some(name) = body
            .first()
            .and_then(|first| first.strip_prefix("# golden: "))
            .and_then(|rest| rest.trim().strip_suffix(".hex"))
        {
            let text: Vec<&str> = body[1..].iter().map(|l| l.trim_end()).collect();
            blocks.push((name.to_owned(), text.join("\n")));
        }
    }
    blocks
}

#[test]
fn protocol_md_worked_examples_are_the_golden_files() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let blocks = doc_golden_blocks(&doc);
    let mut shown = BTreeSet::new();
    for (name, text) in &blocks {
        let (file, _) = read_golden(name);
        let file: Vec<&str> = file.lines().map(str::trim_end).collect();
        assert_eq!(
            text,
            &file.join("\n"),
            "PROTOCOL.md's example for {name}.hex differs from tests/golden/{name}.hex"
        );
        shown.insert(name.clone());
    }
    let not_shown: Vec<_> = golden_file_names().difference(&shown).cloned().collect();
    assert!(
        not_shown.is_empty(),
        "golden vectors without a worked example in PROTOCOL.md: {not_shown:?}"
    );
}

/// The Python client sketch in PROTOCOL.md, run against these files.
#[test]
fn python_client_sketch_matches_golden_vectors() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client_check.py");
    let output = match std::process::Command::new("python3").arg(&script).output() {
        Ok(output) => output,
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: python3 not runnable ({err}); CI=true makes this a failure");
            return;
        }
        Err(err) => panic!("python3 is required when CI=true: {err}"),
    };
    assert!(
        output.status.success(),
        "python_client_check.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn decode_errors_are_classified() {
    // Unknown frame tags.
    assert_eq!(decode_uplink(&[3]), Err(DecodeError::Invalid));
    assert_eq!(decode_downlink(&[4]), Err(DecodeError::Invalid));
    // Bool other than 0/1: CommandResult 7, Succeeded(Some(Bool(2))).
    assert_eq!(
        decode_uplink(&[2, 7, 1, 1, 2, 2]),
        Err(DecodeError::Invalid)
    );
    // Option tag other than 0/1: Error frame, code 6, reason "", seq tag 2.
    assert_eq!(decode_downlink(&[3, 6, 0, 2]), Err(DecodeError::Invalid));
    // Invalid UTF-8 in a string: Error frame with reason [0xff].
    assert_eq!(
        decode_downlink(&[3, 6, 1, 0xff, 0]),
        Err(DecodeError::Invalid)
    );
    // A u16 varint longer than 3 bytes, and one over 65535 (Ack is u64: use
    // Command.actuator, a u16).
    assert_eq!(
        decode_downlink(&[2, 1, 0x80, 0x80, 0x80, 0x00, 0, 2, 0, 0]),
        Err(DecodeError::Invalid)
    );
    assert_eq!(
        decode_downlink(&[2, 1, 0xff, 0xff, 0x04, 0, 2, 0, 0]),
        Err(DecodeError::Invalid)
    );
    // A u64 varint whose 10th byte carries more than one bit.
    let mut ack = vec![1];
    ack.extend([0xff; 9]);
    ack.push(0x02);
    assert_eq!(decode_downlink(&ack), Err(DecodeError::Invalid));
    // Non-minimal varints within the type's length are accepted (postcard
    // does not enforce canonical form): Ack 42 as 0xaa 0x00.
    assert_eq!(
        decode_downlink(&[1, 0xaa, 0x00]),
        Ok(Downlink::Ack(Ack { seq: 42 }))
    );
}
