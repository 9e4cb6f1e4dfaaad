#![no_main]
//! `cargo +nightly fuzz run csv`: see `idgraph::fuzz::csv`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::csv(data));
