#![no_main]
//! See `brook_server::fuzz::pgwire`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_server::fuzz::pgwire(data));
