#![no_main]
//! Fuzz target: see `reflow_app::fuzz_jsonld`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| reflow_app::fuzz_jsonld(data));
