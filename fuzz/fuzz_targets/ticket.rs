#![no_main]
//! Fuzz target: see `reflow::fuzzing::ticket`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| reflow::fuzzing::ticket(data));
