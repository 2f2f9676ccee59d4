//! The hostile-input suite: malformed and malicious frames against a real
//! hub, each with its documented outcome (a close code, or an Error frame
//! whose telemetry `seq` is still acked), while an honest device streams
//! throughout and loses nothing that was acked.
//!
//! Covered here: truncated frames (every prefix), wrong enum tags, varints
//! with absurd lengths, NaN and infinite values, timestamps before 2000 or
//! far ahead, a Hello declaring 100,000 sensors, downlink frames sent
//! uplink, text messages, a second Hello, and a device answering another
//! device's command. Slowloris, connection caps, bad-token floods, rate
//! limits and a client that never reads have their own suites.
//!
//! Memory: the absurd length claims are refused before anything of the
//! claimed size is reserved (`schema/tests/alloc_bounds.rs` counts the
//! bytes); the big Hello never reaches the decoder (over
//! `max_message_bytes`, the WebSocket layer refuses it while reading).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use hub::store::{CommandAction, CommandStatus, Created, NewCommand, ReadingQuery};
use schema::{
    ActuatorDecl, CommandOutcome, CommandResult, Downlink, Hello, List, Reading, SensorDecl,
    Telemetry, Uplink, Value, ValueKind, close, error_code,
};
use tokio_tungstenite::tungstenite::Message;

/// 2000-01-01T00:00:00Z in ms, the earliest reading time the hub accepts.
const Y2000_MS: u64 = 946_684_800_000;

/// A postcard varint.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn telemetry(seq: u64, base_time_ms: u64, readings: &[Reading]) -> Vec<u8> {
    schema::encode_uplink_to_vec(&Uplink::Telemetry(Telemetry {
        seq,
        base_time_ms,
        readings: List::Borrowed(readings),
    }))
    .unwrap()
}

fn reading(sensor: u16, offset_ms: u32, value: Value) -> Reading {
    Reading {
        sensor,
        offset_ms,
        value,
    }
}

fn temperature(value: f64) -> Reading {
    reading(1, 0, Value::Float(value))
}

/// The close code the hub documents for a binary message that is not a
/// valid uplink frame: 1002 when it is a downlink frame, else 1007.
fn undecodable_code(bytes: &[u8]) -> u16 {
    assert!(schema::decode_uplink(bytes).is_err());
    if schema::decode_downlink(bytes).is_ok() {
        close::PROTOCOL_ERROR
    } else {
        close::INVALID_PAYLOAD
    }
}

/// Reads past Acks to the next Error frame and checks its code and seq.
async fn expect_error(socket: &mut RawSocket, code: u16, seq: Option<u64>) -> String {
    loop {
        match expect_frame(socket).await {
            DownFrame::Ack(_) => continue,
            DownFrame::Error {
                code: got,
                seq: got_seq,
                reason,
            } => {
                assert_eq!((got, got_seq), (code, seq), "Error frame: {reason}");
                return reason;
            }
            other => panic!("expected Error {code}, got {other:?}"),
        }
    }
}

/// This process's resident set size (the hub runs in it), in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends a message over `max_message_bytes` as the first frame. The hub
/// refuses it from the frame header, without reading the payload: it
/// closes with 1009, but may drop the connection while the client is still
/// writing, so the client can also see a reset instead of the close frame.
/// Returns which of the two happened.
async fn refused_as_too_big(hub: &TestHub, token: &str, bytes: Vec<u8>) -> &'static str {
    let mut socket = connect_raw(hub, Some(token), true).await.unwrap();
    let sent = socket.send(Message::Binary(bytes.into())).await;
    match receive(&mut socket).await {
        Received::Closed(code, reason) => {
            assert_eq!(code, close::MESSAGE_TOO_BIG, "{reason}");
            "close 1009"
        }
        Received::Gone if sent.is_err() => "reset while sending",
        other => panic!("expected close 1009, got {other:?} (send: {sent:?})"),
    }
}

/// One line of the outcome table the suite prints (`--nocapture`).
fn outcome(case: &str, outcome: &str) {
    eprintln!("| {case} | {outcome} |");
}

/// The honest device: streams 5-reading frames, each awaited until acked,
/// until told to stop; returns how many readings were acked.
fn stream_honestly(mut socket: RawSocket, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let base = now_ms();
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            send_binary(&mut socket, telemetry_frame(seq, base + seq * 10, 5)).await;
            wait_ack(&mut socket, seq).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seq * 5
    })
}

/// The hostile device's sessions: each opens with the test Hello and
/// numbers frames on from what the hub stored.
struct Mallory {
    token: String,
    next_seq: u64,
}

impl Mallory {
    async fn open(&mut self, hub: &TestHub) -> RawSocket {
        let (socket, last_stored) = open_session(hub, &self.token).await;
        self.next_seq = self.next_seq.max(last_stored + 1);
        socket
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// Sends `bytes` on a new connection (after Hello when `after_hello`) and
/// expects the hub to close with `code`.
async fn closes_with(
    hub: &TestHub,
    mallory: &mut Mallory,
    after_hello: bool,
    bytes: Vec<u8>,
    code: u16,
) -> String {
    let mut socket = if after_hello {
        mallory.open(hub).await
    } else {
        connect_raw(hub, Some(&mallory.token), true).await.unwrap()
    };
    send_binary(&mut socket, bytes).await;
    expect_close(&mut socket, code).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_as_documented_while_an_honest_device_loses_nothing() {
    let hub = TestHub::start().await;
    let (honest_id, honest_token) = hub.add_device("honest").await;
    let (mallory_id, mallory_token) = hub.add_device("mallory").await;
    let (victim_id, victim_token) = hub.add_device("victim").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (honest_socket, _) = open_session(&hub, &honest_token).await;
    let honest = stream_honestly(honest_socket, Arc::clone(&stop));
    let mut mallory = Mallory {
        token: mallory_token,
        next_seq: 1,
    };
    let now = now_ms();

    // ---- truncated frames: every prefix of a Hello and of a Telemetry frame.
    let hello = hello_frame(1);
    for len in 0..hello.len() {
        let cut = hello[..len].to_vec();
        let code = undecodable_code(&cut);
        closes_with(&hub, &mut mallory, false, cut, code).await;
    }
    outcome(
        &format!("truncated Hello (all {} prefixes)", hello.len()),
        "close 1007 (1002 where the prefix is a downlink frame)",
    );
    let frame = telemetry(
        1_000,
        now,
        &[temperature(1.5), reading(2, 5, Value::Int(-7))],
    );
    for len in 0..frame.len() {
        let cut = frame[..len].to_vec();
        let code = undecodable_code(&cut);
        closes_with(&hub, &mut mallory, true, cut, code).await;
    }
    outcome(
        &format!("truncated Telemetry (all {} prefixes)", frame.len()),
        "close 1007 (1002 for [1, seq]: a valid Ack)",
    );

    // ---- wrong enum tags.
    let mut wrong_value_tag = vec![1];
    wrong_value_tag.extend(varint(mallory.next_seq));
    wrong_value_tag.extend(varint(now));
    wrong_value_tag.extend([1, 1, 0, 3]); // one reading, sensor 1, offset 0, Value tag 3
    wrong_value_tag.extend([0; 8]);
    let mut wrong_bool = vec![1];
    wrong_bool.extend(varint(mallory.next_seq));
    wrong_bool.extend(varint(now));
    wrong_bool.extend([1, 3, 0, 2, 2]); // sensor 3, Value::Bool with byte 2
    let bad_kind_hello = {
        let mut bytes = hello_frame(1);
        // The first sensor's kind byte follows its unit "°C" (c2 b0 43).
        let at = bytes
            .windows(3)
            .position(|w| w == [0xc2, 0xb0, 0x43])
            .unwrap()
            + 3;
        assert_eq!(bytes[at], 0, "Float kind tag");
        bytes[at] = 7;
        bytes
    };
    let cases: [(&str, bool, Vec<u8>); 6] = [
        ("frame tag 0x7f", false, vec![0x7f, 1, 2, 3]),
        (
            "frame tag 3 with junk",
            true,
            vec![3, 0xff, 0xff, 0xff, 0xff],
        ),
        ("Value tag 3", true, wrong_value_tag),
        ("bool byte 2", true, wrong_bool),
        ("ValueKind tag 7 in Hello", false, bad_kind_hello),
        ("CommandOutcome tag 9", true, vec![2, 1, 9]),
    ];
    for (case, after_hello, bytes) in cases {
        let code = undecodable_code(&bytes);
        assert_eq!(code, close::INVALID_PAYLOAD, "{case}");
        closes_with(&hub, &mut mallory, after_hello, bytes, code).await;
        outcome(&format!("wrong tag: {case}"), "close 1007");
    }

    // ---- varints with absurd lengths.
    let mut readings_2_60 = vec![1];
    readings_2_60.extend(varint(mallory.next_seq));
    readings_2_60.extend(varint(now));
    readings_2_60.extend(varint(1 << 60));
    readings_2_60.extend([1, 0, 0]);
    let mut sensors_2_60 = vec![0, 1, 0];
    sensors_2_60.extend(varint(1 << 60));
    let mut firmware_2_60 = vec![0, 1];
    firmware_2_60.extend(varint(1 << 60));
    firmware_2_60.extend(b"fw");
    let mut overlong_seq = vec![1];
    overlong_seq.extend([0xff; 11]);
    overlong_seq.extend([0; 4]);
    // As many readings claimed as bytes follow, inside max_message_bytes:
    // plausible to the decoder, junk from the first element on.
    let mut readings_60k = vec![1];
    readings_60k.extend(varint(mallory.next_seq));
    readings_60k.extend(varint(now));
    readings_60k.extend(varint(60_000));
    readings_60k.extend(vec![0xff; 60_000]);
    let cases: [(&str, bool, Vec<u8>); 6] = [
        ("Telemetry with 2^60 readings", true, readings_2_60),
        ("Hello with 2^60 sensors", false, sensors_2_60),
        ("firmware string of 2^60 bytes", false, firmware_2_60),
        ("11-byte varint seq", true, overlong_seq),
        ("60,000 readings claimed, 60 KB of junk", true, readings_60k),
        ("u16 sensor id of 3 x 0xff", true, {
            let mut bytes = vec![1, 1];
            bytes.extend(varint(now));
            bytes.extend([1, 0xff, 0xff, 0xff, 0x7f, 0, 1, 0]);
            bytes
        }),
    ];
    for (case, after_hello, bytes) in cases {
        let code = undecodable_code(&bytes);
        assert_eq!(code, close::INVALID_PAYLOAD, "{case}");
        let started = std::time::Instant::now();
        closes_with(&hub, &mut mallory, after_hello, bytes, code).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{case} was slow"
        );
        outcome(&format!("absurd varint: {case}"), "close 1007");
    }

    // ---- a Hello declaring 100,000 sensors (about 700 KB): over
    // max_message_bytes, refused by the WebSocket layer while reading.
    let names: Vec<String> = (0..100_000u32).map(|i| format!("s{i}")).collect();
    let sensors: Vec<SensorDecl<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| SensorDecl {
            id: u16::try_from(i % 65_536).unwrap(),
            name,
            unit: "",
            kind: ValueKind::Float,
        })
        .collect();
    let big_hello = schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
        version: 1,
        firmware: "big",
        sensors: List::Borrowed(&sensors),
        actuators: List::Borrowed(&[]),
    }))
    .unwrap();
    let size = big_hello.len();
    let seen = refused_as_too_big(&hub, &mallory.token, big_hello.clone()).await;
    outcome(
        &format!("Hello declaring 100,000 sensors ({size} bytes)"),
        &format!("close 1009 or a reset while sending; here: {seen}"),
    );
    // Repeated, with the 60 KB junk claim, the hub's memory stays put. The
    // hub runs in this process, so this is the process's resident size:
    // noisy (the client's buffers count too), hence the generous bound,
    // far below the ~35 MB the big Hellos alone would hold if kept.
    let mut junk = vec![1, 1];
    junk.extend(varint(now));
    junk.extend(varint(60_000));
    junk.extend(vec![0xff; 60_000]);
    let rounds = |n: usize| {
        let (hub, big_hello, junk) = (&hub, &big_hello, &junk);
        let token = mallory.token.clone();
        async move {
            let mut m = Mallory { token, next_seq: 1 };
            let mut resets = 0;
            for _ in 0..n {
                if refused_as_too_big(hub, &m.token, big_hello.clone()).await != "close 1009" {
                    resets += 1;
                }
                closes_with(hub, &mut m, true, junk.clone(), close::INVALID_PAYLOAD).await;
            }
            resets
        }
    };
    rounds(5).await;
    let before = resident_kib();
    let resets = rounds(30).await;
    let grown = resident_kib().saturating_sub(before);
    assert!(grown < 24 * 1024, "resident size grew by {grown} KiB");
    outcome(
        "30 more big Hellos and 60 KB junk claims",
        &format!("1009 ({resets} resets instead) and 1007; resident size grew {grown} KiB"),
    );
    // One that fits the message size but exceeds max_declared (256): 4005.
    let many = schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
        version: 1,
        firmware: "many",
        sensors: List::Borrowed(&sensors[..300]),
        actuators: List::Borrowed(&[]),
    }))
    .unwrap();
    let reason = closes_with(&hub, &mut mallory, false, many, close::INVALID_HELLO).await;
    assert!(reason.contains("300"), "{reason}");
    outcome(
        "Hello declaring 300 sensors (fits the size limit)",
        "close 4005",
    );
    // Duplicate ids and control characters are refused too.
    let dup = [
        SensorDecl {
            id: 1,
            name: "a",
            unit: "",
            kind: ValueKind::Int,
        },
        SensorDecl {
            id: 1,
            name: "b\u{7}",
            unit: "",
            kind: ValueKind::Int,
        },
    ];
    let dup = schema::encode_uplink_to_vec(&Uplink::Hello(Hello {
        version: 1,
        firmware: "dup",
        sensors: List::Borrowed(&dup),
        actuators: List::Borrowed(&[ActuatorDecl {
            id: 1,
            name: "relay\n",
            kind: ValueKind::Bool,
        }]),
    }))
    .unwrap();
    closes_with(&hub, &mut mallory, false, dup, close::INVALID_HELLO).await;
    outcome(
        "Hello with a duplicate id and control characters",
        "close 4005",
    );

    // ---- downlink frames sent uplink, text, a second Hello.
    let ack = schema::encode_downlink_to_vec(&Downlink::Ack(schema::Ack { seq: 5 })).unwrap();
    closes_with(&hub, &mut mallory, true, ack, close::PROTOCOL_ERROR).await;
    outcome("Ack sent uplink", "close 1002");
    let welcome = schema::encode_downlink_to_vec(&Downlink::Welcome(schema::Welcome {
        device_id: &mallory_id,
        server_time_ms: now,
        last_stored_seq: 0,
        limits: schema::Limits {
            max_message_bytes: 1,
            max_readings_per_frame: 1,
            idle_timeout_ms: 1,
        },
    }))
    .unwrap();
    let code = undecodable_code(&welcome);
    closes_with(&hub, &mut mallory, false, welcome, code).await;
    outcome(
        "Welcome sent uplink as the first frame",
        &format!("close {code}"),
    );
    let error = schema::encode_downlink_to_vec(&Downlink::Error(schema::ErrorFrame {
        code: 1,
        reason: "no",
        seq: None,
    }))
    .unwrap();
    closes_with(&hub, &mut mallory, true, error, close::PROTOCOL_ERROR).await;
    outcome("Error frame sent uplink", "close 1002");
    let mut socket = mallory.open(&hub).await;
    socket
        .send(Message::Text("{\"hello\":1}".into()))
        .await
        .unwrap();
    expect_close(&mut socket, close::UNSUPPORTED_DATA).await;
    outcome("text message", "close 1003");
    closes_with(
        &hub,
        &mut mallory,
        true,
        hello_frame(1),
        close::PROTOCOL_ERROR,
    )
    .await;
    outcome("second Hello", "close 1002");

    // ---- values and times: an Error frame, the frame rejected whole, its
    // seq acked, the connection kept.
    let mut socket = mallory.open(&hub).await;
    let day: u64 = 86_400_000;
    let cases: Vec<(&str, u64, Vec<Reading>, u16)> = vec![
        (
            "NaN",
            now,
            vec![temperature(f64::NAN)],
            error_code::NON_FINITE_VALUE,
        ),
        (
            "+inf among valid readings",
            now,
            vec![temperature(1.0), temperature(f64::INFINITY)],
            error_code::NON_FINITE_VALUE,
        ),
        (
            "-inf",
            now,
            vec![temperature(f64::NEG_INFINITY)],
            error_code::NON_FINITE_VALUE,
        ),
        (
            "a year ahead",
            now + 365 * day,
            vec![temperature(1.0)],
            error_code::BAD_TIMESTAMP,
        ),
        (
            "at the Unix epoch (1970)",
            0,
            vec![temperature(1.0)],
            error_code::BAD_TIMESTAMP,
        ),
        (
            "1 ms before 2000",
            Y2000_MS - 1,
            vec![temperature(1.0)],
            error_code::BAD_TIMESTAMP,
        ),
        (
            "base time u64::MAX",
            u64::MAX,
            vec![temperature(1.0)],
            error_code::BAD_TIMESTAMP,
        ),
        (
            "offset u32::MAX past a valid base",
            now,
            vec![reading(1, u32::MAX, Value::Float(1.0))],
            error_code::BAD_TIMESTAMP,
        ),
        (
            "undeclared sensor 9",
            now,
            vec![reading(9, 0, Value::Int(1))],
            error_code::UNKNOWN_SENSOR,
        ),
        (
            "int for a float sensor",
            now,
            vec![reading(1, 0, Value::Int(1))],
            error_code::WRONG_VALUE_KIND,
        ),
        ("no readings", now, vec![], error_code::BAD_BATCH_SIZE),
        (
            "2049 readings (max 2048)",
            now,
            vec![reading(3, 0, Value::Bool(true)); 2049],
            error_code::BAD_BATCH_SIZE,
        ),
    ];
    for (case, base, readings, code) in cases {
        let seq = mallory.seq();
        send_binary(&mut socket, telemetry(seq, base, &readings)).await;
        expect_error(&mut socket, code, Some(seq)).await;
        wait_ack(&mut socket, seq).await;
        outcome(
            case,
            &format!("Error {code} (seq {seq}), acked, connection kept"),
        );
    }
    // Seq 0 is reserved: Error 7 (nothing to ack).
    send_binary(&mut socket, telemetry(0, now, &[temperature(1.0)])).await;
    expect_error(&mut socket, error_code::BAD_SEQUENCE, Some(0)).await;
    outcome("seq 0", "Error 7, connection kept");

    // ---- another device's command: Error 6, the command unchanged.
    // Created while the victim is offline, so it stays queued (the hub
    // sends it when the victim connects).
    let victim_pk = hub.store.get_device(&victim_id).await.unwrap().unwrap().pk;
    let created = hub
        .store
        .create_command(&NewCommand {
            device_pk: victim_pk,
            actuator_id: 1,
            actuator_name: "relay".into(),
            action: CommandAction::Set(Value::Bool(true)),
            idempotency_key: None,
            source: "test".into(),
            created_ms: i64::try_from(now).unwrap(),
            expires_ms: i64::try_from(now + day).unwrap(),
            reply: None,
        })
        .await
        .unwrap();
    let Created::New(command) = created else {
        panic!("a new command");
    };
    let before = hub.store.command(command.id).await.unwrap().unwrap();
    for outcome_sent in [
        CommandOutcome::Delivered,
        CommandOutcome::Succeeded(Some(Value::Bool(true))),
        CommandOutcome::Failed("stolen"),
    ] {
        let result = schema::encode_uplink_to_vec(&Uplink::CommandResult(CommandResult {
            command_id: u64::try_from(command.id).unwrap(),
            outcome: outcome_sent,
        }))
        .unwrap();
        send_binary(&mut socket, result).await;
        expect_error(&mut socket, error_code::UNKNOWN_COMMAND, None).await;
    }
    let after = hub.store.command(command.id).await.unwrap().unwrap();
    assert_eq!(after, before, "another device's answer changed the command");
    assert_eq!(after.status, CommandStatus::Queued);
    outcome(
        "CommandResult for another device's command",
        "Error 6, the command unchanged",
    );
    let unknown = schema::encode_uplink_to_vec(&Uplink::CommandResult(CommandResult {
        command_id: u64::MAX,
        outcome: CommandOutcome::Rejected("?"),
    }))
    .unwrap();
    send_binary(&mut socket, unknown).await;
    expect_error(&mut socket, error_code::UNKNOWN_COMMAND, None).await;
    outcome("CommandResult for command id u64::MAX", "Error 6");
    // The victim still gets its command.
    let (mut victim_socket, _) = open_session(&hub, &victim_token).await;
    assert_eq!(
        expect_frame(&mut victim_socket).await,
        DownFrame::Command(u64::try_from(command.id).unwrap())
    );

    // ---- after all that, the hostile connection still stores valid data,
    // under its own device only.
    let seq = mallory.seq();
    let valid: Vec<Reading> = (0..7)
        .map(|i| reading(1, i, Value::Float(f64::from(i))))
        .collect();
    send_binary(&mut socket, telemetry(seq, now, &valid)).await;
    wait_ack(&mut socket, seq).await;

    stop.store(true, Ordering::Relaxed);
    let honest_acked = tokio::time::timeout(Duration::from_secs(30), honest)
        .await
        .expect("the honest device keeps being served")
        .expect("the honest device's task did not panic");
    assert!(honest_acked > 0);
    let stored = |id: String| {
        let store = hub.store.clone();
        async move {
            let pk = store.get_device(&id).await.unwrap().unwrap().pk;
            let query = ReadingQuery {
                from_ms: 0,
                to_ms: i64::MAX,
                after_ms: None,
                limit: 100_000,
            };
            let mut total = 0;
            for sensor in [1, 2, 3, 9] {
                total += store
                    .readings(pk, sensor, &query)
                    .await
                    .unwrap()
                    .readings
                    .len();
            }
            total as u64
        }
    };
    assert_eq!(
        stored(honest_id).await,
        honest_acked,
        "honest readings lost"
    );
    assert_eq!(
        stored(mallory_id).await,
        7,
        "only mallory's valid frame is stored"
    );
    assert_eq!(stored(victim_id).await, 0, "nothing stored for the victim");
    assert_eq!(
        u64::try_from(hub.stored_readings().await).unwrap(),
        honest_acked + 7
    );
    outcome(
        "honest device throughout",
        &format!("{honest_acked} readings acked, all stored"),
    );
}
