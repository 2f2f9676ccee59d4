//! libFuzzer entry point for [`hub_fuzz::downlink_decode`]; see `scripts/fuzz.sh`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_fuzz::downlink_decode(data));
