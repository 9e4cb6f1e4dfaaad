#![no_main]
//! `cargo +nightly fuzz run simulate`: see `idgraph::fuzz::simulate`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::simulate(data));
