#![no_main]
//! See `brook_server::fuzz::http`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_server::fuzz::http(data));
