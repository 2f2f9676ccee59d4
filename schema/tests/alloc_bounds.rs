//! Hostile length claims cost no memory: a list's element count on the wire
//! is only a claim (ten bytes can announce 2^60 readings), so decoding must
//! not reserve what a frame merely announces.
//!
//! postcard already ignores a claim longer than the rest of the message;
//! the schema's list decoding also caps what a plausible claim reserves
//! (`MAX_PREALLOC_BYTES`). A counting global allocator measures the bytes
//! each decode allocates.
//! It counts every thread, so this file holds a single test.

// The decoders of uplink frames need `alloc`.
#![cfg(feature = "alloc")]

use schema::{
    DecodeError, List, Reading, Telemetry, Uplink, Value, decode_uplink, encode_uplink_to_vec,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Most bytes one decode of a hostile frame may allocate (the lists' own
/// preallocation limit is 4 KiB; serde's default would be 1 MiB).
const BUDGET: usize = 8 * 1024;

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

/// Bytes allocated while decoding `bytes`, and the decode's outcome.
fn measure(bytes: &[u8]) -> (usize, Result<(), DecodeError>) {
    let region = Region::new(GLOBAL);
    let outcome = decode_uplink(bytes).map(drop);
    (region.change().bytes_allocated, outcome)
}

/// The three lists of uplink frames, each announcing `claim` elements and
/// followed by `padding` bytes of 0xff (an invalid varint: the first
/// element fails to decode, so only what the claim reserved is allocated).
fn claiming(claim: u64, padding: usize) -> [(&'static str, Vec<u8>); 3] {
    let pad = vec![0xff; padding];
    // Telemetry: tag 1, seq 1, base time, readings count.
    let mut telemetry = vec![1, 1];
    telemetry.extend(varint(1_700_000_000_000));
    telemetry.extend(varint(claim));
    telemetry.extend(&pad);
    // Hello: tag 0, version 1, empty firmware, sensors count.
    let mut sensors = vec![0, 1, 0];
    sensors.extend(varint(claim));
    sensors.extend(&pad);
    // Hello with no sensors, then the actuators count.
    let mut actuators = vec![0, 1, 0, 0];
    actuators.extend(varint(claim));
    actuators.extend(&pad);
    [
        ("telemetry", telemetry),
        ("hello sensors", sensors),
        ("hello actuators", actuators),
    ]
}

#[test]
fn absurd_list_lengths_are_refused_without_allocating_them() {
    // Claims beyond the message (postcard then gives no size hint), and
    // claims as long as the rest of a 60 KB message (postcard passes those
    // on; serde's Vec would reserve up to 1 MiB for each).
    let cases = [
        (1u64 << 60, 4),
        (u64::MAX, 4),
        (1 << 32, 4),
        (60_000, 60_000),
        (1000, 1000),
    ];
    for (claim, padding) in cases {
        for (what, bytes) in claiming(claim, padding) {
            let (allocated, outcome) = measure(&bytes);
            assert!(
                matches!(outcome, Err(DecodeError::Truncated | DecodeError::Invalid)),
                "{what} claiming {claim}: {outcome:?}"
            );
            assert!(
                allocated <= BUDGET,
                "{what} claiming {claim} elements allocated {allocated} bytes"
            );
        }
    }

    // Lists as long as the claim still decode in full (the vector grows).
    let readings: Vec<Reading> = (0..5000u32)
        .map(|i| Reading {
            sensor: 1,
            offset_ms: i,
            value: Value::Int(i64::from(i)),
        })
        .collect();
    let bytes = encode_uplink_to_vec(&Uplink::Telemetry(Telemetry {
        seq: 1,
        base_time_ms: 1_700_000_000_000,
        readings: List::Borrowed(&readings),
    }))
    .expect("encodes");
    match decode_uplink(&bytes) {
        Ok(Uplink::Telemetry(t)) => assert_eq!(&*t.readings, &readings[..]),
        other => panic!("expected the long telemetry frame, got {other:?}"),
    }
}
