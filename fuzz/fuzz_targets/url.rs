#![no_main]
//! `cargo +nightly fuzz run url`: see `idgraph::fuzz::url`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::url(data));
