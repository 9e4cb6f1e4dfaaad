#![no_main]
//! `cargo +nightly fuzz run codec`: see `idgraph::fuzz::codec_values`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::codec_values(data));
