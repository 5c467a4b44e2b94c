#![no_main]
//! See `brook_executor::fuzz::record_decoders`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_executor::fuzz::record_decoders(data));
