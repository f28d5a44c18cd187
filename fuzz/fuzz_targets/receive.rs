#![no_main]
//! Fuzz target: see `reflow::fuzzing::receive`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| reflow::fuzzing::receive(data));
