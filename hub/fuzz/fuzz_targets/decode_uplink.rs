//! libFuzzer entry point for [`hub_fuzz::decode_uplink`]; see `scripts/fuzz.sh`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_fuzz::decode_uplink(data));
