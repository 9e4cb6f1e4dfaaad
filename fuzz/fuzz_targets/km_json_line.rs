#![no_main]
//! `cargo +nightly fuzz run km_json_line`: see `idgraph::fuzz::km_json_line`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::km_json_line(data));
