#![no_main]
//! `cargo +nightly fuzz run track`: see `idgraph::fuzz::track`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::track(data));
