#![no_main]
//! See `brook_server::fuzz::sql`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_server::fuzz::sql(data));
