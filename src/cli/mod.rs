//! The command line: definitions apart from execution (as ripgrep's `flags/` and fd's `cli.rs`
//! do).
//!
//! | file | owns |
//! |---|---|
//! | `args` | clap definitions: [`Cli`], one struct per command, `ValueEnum` formats |
//! | `exit` | the named exit statuses and [`Fail`] |
//! | `output` | printing helpers (JSON, times, counts) |
//! | `db` | opening the store the command line names |
//! | `write` | `alias`, `record`, `set` |
//! | `query` | `resolve`, `events`, `props`, `refused`, `hubs`, `graph`, `stats`, `verify` |
//! | `transfer` | `import`, `export` |
//! | `simulate` | `simulate` |
//! | `repair` | `explain`, `unalias`, `forget`, `unsuppress`, `compact` |
//! | `backup` | `backup`, `restore` |
//! | `serve` | `serve` |

mod args;
mod backup;
mod db;
mod exit;
mod output;
mod query;
mod repair;
mod serve;
mod simulate;
mod transfer;
mod write;

pub use args::Cli;
pub use exit::Fail;

use args::Cmd;

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), Fail> {
    let db = &db::Db {
        path: cli.db,
        cache_mb: cli.cache_mb,
    };
    match cli.cmd {
        Cmd::Alias(a) => write::alias(db, a),
        Cmd::Record(a) => write::record(db, a),
        Cmd::Set(a) => write::set(db, a),
        Cmd::Resolve(a) => query::resolve(db, a),
        Cmd::Events(a) => query::events(db, a),
        Cmd::Props(a) => query::props(db, a),
        Cmd::Verify(a) => query::verify(db, a),
        Cmd::Stats(a) => query::stats(db, a),
        Cmd::Refused(a) => query::refused(db, a),
        Cmd::Hubs(a) => query::hubs(db, a),
        Cmd::Graph(a) => query::graph(db, a),
        Cmd::Import(a) => {
            small_pages_only();
            transfer::import(db, a)
        }
        Cmd::Sync(a) => {
            small_pages_only();
            transfer::sync(db, a)
        }
        Cmd::Export { what } => transfer::export(db, what),
        Cmd::Simulate(a) => simulate::simulate(db, a),
        Cmd::Explain(a) => repair::explain(db, a),
        Cmd::Unalias(a) => repair::unalias(db, a),
        Cmd::Forget(a) => repair::forget(db, a),
        Cmd::Unsuppress(a) => repair::unsuppress(db, a),
        Cmd::Compact(a) => repair::compact(db, a),
        Cmd::Backup(a) => backup::backup(db, a),
        Cmd::Restore(a) => backup::restore(db, a),
        Cmd::Serve(a) => serve::serve(db, *a),
    }
}

/// Turns transparent huge pages off for this process (Linux). An import allocates fresh memory
/// at a high rate on four threads; a huge page is zeroed whole (2 MiB) at its first touch, and
/// mimalloc asks for huge pages. The server keeps them: its lookups gain from them
/// (BENCHMARKS.md, "Import on four threads").
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
