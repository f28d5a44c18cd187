#![no_main]
//! Fuzz target: see `reflow::fuzzing::frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| reflow::fuzzing::frame(data));
