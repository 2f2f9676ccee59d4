//! Replays the committed fuzz corpus (`hub/fuzz/corpus/<target>/`) through
//! the fuzz targets' own check functions, so the normal test suite runs
//! every seed, every input the fuzzer kept and every crash once found,
//! without libFuzzer or a nightly toolchain. `scripts/fuzz.sh` fuzzes.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn decode_uplink_corpus_holds() {
    replay("decode_uplink", checks::decode_uplink);
}

#[test]
fn hello_validation_corpus_holds() {
    replay("hello_validation", checks::hello_validation);
}

#[test]
fn downlink_decode_corpus_holds() {
    replay("downlink_decode", checks::downlink_decode);
}

#[test]
fn messages_split_as_they_were_joined() {
    let messages: [&[u8]; 3] = [b"hello", b"", &[0xff; 300]];
    let joined = checks::join_messages(&messages);
    assert_eq!(checks::split_messages(&joined), messages);
    // A record longer than what remains takes the rest; a lone byte is a record.
    assert_eq!(checks::split_messages(&[9, 0, 1, 2]), [&[1u8, 2][..]]);
    assert_eq!(checks::split_messages(&[7]), [&[7u8][..]]);
}

/// Found by `downlink_decode`: a hostile Welcome with
/// `last_stored_seq = u64::MAX` makes the firmware's sequence counter
/// saturate, so new frames share seq u64::MAX. Documented as harmless (the
/// hub stores readings by device, sensor and time, not by seq); the check
/// now allows it and this pins the input.
#[test]
fn regression_welcome_with_u64_max_last_stored_seq() {
    let welcome = schema::encode_downlink_to_vec(&schema::Downlink::Welcome(schema::Welcome {
        device_id: "dev-0001",
        server_time_ms: 2768,
        last_stored_seq: u64::MAX,
        limits: schema::Limits {
            max_message_bytes: 0,
            max_readings_per_frame: 0,
            idle_timeout_ms: 0,
        },
    }))
    .expect("encodes");
    let input = [checks::join_messages(&[&welcome]), vec![0x80]].concat();
    checks::downlink_decode(&input);
}
