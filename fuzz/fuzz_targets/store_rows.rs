#![no_main]
//! Fuzz target: see `reflow::fuzzing::store_rows`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| reflow::fuzzing::store_rows(data));
