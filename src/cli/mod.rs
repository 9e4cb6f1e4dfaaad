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
//! | `repair` | `explain`, `unalias`, `forget` |
//! | `serve` | `serve` |

mod args;
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
        Cmd::Import(a) => transfer::import(db, a),
        Cmd::Sync(a) => transfer::sync(db, a),
        Cmd::Export { what } => transfer::export(db, what),
        Cmd::Simulate(a) => simulate::simulate(db, a),
        Cmd::Explain(a) => repair::explain(db, a),
        Cmd::Unalias(a) => repair::unalias(db, a),
        Cmd::Forget(a) => repair::forget(db, a),
        Cmd::Serve(a) => serve::serve(db, a),
    }
}
