#![no_main]
//! `cargo +nightly fuzz run index`: see `idgraph::fuzz::graph_index`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| idgraph::fuzz::graph_index(data));
