#![no_main]
//! See `brook_storage::fuzz::log_files`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| brook_storage::fuzz::log_files(data));
