//! libFuzzer entry point for [`hub_fuzz::hello_validation`]; see `scripts/fuzz.sh`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_fuzz::hello_validation(data));
