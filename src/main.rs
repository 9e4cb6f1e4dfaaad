//! `idgraph`: the command line over the library. `cli/` holds the definitions (`args`), the
//! exit statuses (`exit`) and one file per command family; this file only dispatches.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// sled allocates and frees small buffers at a high rate; mimalloc is measurably faster than
/// the system allocator for it and returns freed memory sooner (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => fail.report(),
    }
}
