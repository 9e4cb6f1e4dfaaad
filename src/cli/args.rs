//! What the command line accepts: clap definitions only, one argument struct per command,
//! `ValueEnum`s for formats. Nothing here runs anything.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An identity graph: which visitor IDs are one person, what each person did.
#[derive(Parser)]
#[command(version, about, max_term_width = 100)]
pub struct Cli {
    /// The store's directory.
    #[arg(long, global = true, env = "IDGRAPH_DB", default_value = "idgraph.db")]
    pub db: PathBuf,
    /// sled's page cache in MiB (more is faster for large imports, and uses more memory).
    #[arg(long, global = true, env = "IDGRAPH_CACHE_MB", default_value_t = 256)]
    pub cache_mb: u64,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Link two IDs: they become one person.
    Alias(AliasArgs),
    /// Record an event done by an ID.
    Record(RecordArgs),
    /// Set properties on an ID's person.
    Set(SetArgs),
    /// Show the person an ID belongs to.
    Resolve(ResolveArgs),
    /// List a person's events, from all its IDs, in time order.
    Events(EventsArgs),
    /// Show a person's properties (latest value of each).
    Props(PropsArgs),
    /// Check every invariant of the store.
    Verify(VerifyArgs),
    /// Count IDs, persons, edges, events, properties, bytes on disk.
    Stats(StatsArgs),
    /// Import KISSmetrics exports (JSON lines) and CSV files fast.
    Import(ImportArgs),
    /// Import what is new in a directory now and then (a mirrored KISSmetrics export bucket):
    /// one summary line per run; the store is free for other commands between runs.
    Sync(SyncArgs),
    /// Export the store: every ID with its person, or every event de-aliased.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
    },
    /// Replay tracker commands (one JSON object per line) through the identity rules and apply
    /// the resulting ops to the store.
    Simulate(SimulateArgs),
    /// Why two IDs are one person: the shortest chain of alias links between them, each with
    /// its cause, time and source.
    Explain(ExplainArgs),
    /// Remove the direct link between two IDs and split their person along the links that
    /// remain; events and properties follow their IDs.
    Unalias(UnaliasArgs),
    /// Delete a whole person: every ID, link, event and property (privacy requests). The IDs
    /// are suppressed: later data naming them is dropped (`idgraph compact` then erases the old
    /// bytes from disk).
    Forget(ForgetArgs),
    /// Lift the suppression `forget` put on an ID: data naming it is taken again.
    Unsuppress(UnsuppressArgs),
    /// Back up the store into one file: a consistent cut, checksummed and compressed. The
    /// store must not be in use; back up a running server with --from.
    Backup(BackupArgs),
    /// Restore a backup into a new store at --db (which must not exist).
    Restore(RestoreArgs),
    /// Rewrite the store with its live data only: afterwards no file of it holds anything
    /// deleted (run it after `forget`; the store must not be in use).
    Compact(CompactArgs),
    /// List the merges the guardrails refused (blocked IDs, persons too large).
    Refused(RefusedArgs),
    /// The largest persons and the IDs with the most links: where squished identities show up.
    Hubs(HubsArgs),
    /// Write a person's alias graph: Graphviz DOT, or SVG drawn in-process.
    Graph(GraphArgs),
    /// Run the tracking server: the KISSmetrics HTTP API (/e /s /a), the browser tracker
    /// (/km.js), a JSON query API (/api/...), /healthz, /metrics and a demo page (/).
    Serve(Box<ServeArgs>),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RefusedArgs {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AliasArgs {
    /// One ID.
    pub a: String,
    /// The other ID.
    pub b: String,
    /// When, in Unix seconds (default: now).
    #[arg(long)]
    pub at: Option<i64>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RecordArgs {
    /// Who did it.
    pub id: String,
    /// The event name.
    pub event: String,
    /// Properties of the event, as name=value.
    pub props: Vec<String>,
    /// When, in Unix seconds (default: now).
    #[arg(long)]
    pub at: Option<i64>,
}

#[derive(Args)]
pub struct SetArgs {
    /// On whom.
    pub id: String,
    /// Properties, as name=value (at least one).
    #[arg(required = true)]
    pub props: Vec<String>,
    /// When, in Unix seconds (default: now).
    #[arg(long)]
    pub at: Option<i64>,
}

#[derive(Args)]
pub struct ResolveArgs {
    /// The ID.
    pub id: String,
    /// Print `{"person": ..., "ids": [...]}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Any ID of the person.
    pub id: String,
    /// Print a JSON array of `{"id", "event", "at", "properties"}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PropsArgs {
    /// Any ID of the person.
    pub id: String,
    /// Print a JSON object name → value.
    #[arg(long)]
    pub json: bool,
}

/// The format of input files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// KISSmetrics JSON lines.
    KmJson,
    /// CSV with an Identity/Timestamp/Event header.
    Csv,
    /// Parquet: the mapping or the events `export --format parquet` and the Spark job write
    /// (also chosen for `.parquet` files and folders of them).
    Parquet,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Files, directories (a KISSmetrics export bucket: the files its index.csv lists, in
    /// order; else its *.json and *.csv files and revisions/ folder) or `-`. Files imported
    /// before are read only from where the last import stopped.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The format, when the file names do not tell it.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Skip bad lines (each reported on stderr, up to 20, then counted) instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Read again in full the files whose imported part changed since (without it, such a
    /// file stops the import). What the old lines recorded stays.
    #[arg(long)]
    pub reimport: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keys per sled batch while writing.
    #[arg(long, default_value_t = idgraph::BulkOptions::default().batch_keys, hide = true)]
    pub batch_keys: usize,
    /// The most IDs one person may hold: a merge that would make a larger person is refused
    /// (listed by `idgraph refused`).
    #[arg(long, default_value_t = idgraph::DEFAULT_MAX_PERSON_SIZE)]
    pub max_person_size: u64,
}

#[derive(Args)]
pub struct SyncArgs {
    /// What `import` would read: a bucket directory, or files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Time between the start of one run and the next (`30s`, `5m`, `1h`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub every: std::time::Duration,
    /// Stop after this many runs (default: run until stopped).
    #[arg(long)]
    pub runs: Option<u64>,
    /// The format, when the file names do not tell it.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Skip bad lines (reported, then counted) instead of failing the run.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Read again in full the files whose imported part changed (else such a file fails the
    /// run, and every run after it, until it is dealt with).
    #[arg(long)]
    pub reimport: bool,
    /// The most IDs one person may hold (as for `import`).
    #[arg(long, default_value_t = idgraph::DEFAULT_MAX_PERSON_SIZE)]
    pub max_person_size: u64,
}

/// How `export mapping` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MappingFormat {
    /// `id,person` rows.
    Csv,
    /// `{"id", "person"}` lines.
    Jsonl,
    /// Alias lines `_p`/`_p2`, importable with `idgraph import`.
    KmJson,
    /// Parquet (zstd): `id`, `person`, `first_seen`; importable with `idgraph import`.
    Parquet,
}

/// How `export events` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventsFormat {
    /// One JSON object per line.
    KmJson,
    /// CSV with `Prop:` columns.
    Csv,
    /// Parquet (zstd): `_p`, `_p_original`, `_n`, `_t`, `properties` (a JSON object), the Spark
    /// job's columns; importable with `idgraph import`.
    Parquet,
}

#[derive(Subcommand)]
pub enum ExportWhat {
    /// Every ID with its person's canonical ID.
    Mapping {
        /// `csv` (id,person), `jsonl` ({"id", "person"}), `km-json` (alias lines `_p`/`_p2`,
        /// importable with `idgraph import`) or `parquet`.
        #[arg(long, value_enum, default_value = "csv")]
        format: MappingFormat,
        /// Write to FILE instead of standard output (as FILE.partial, fsynced, renamed).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Every event, with `_p` replaced by its person's canonical ID and the original ID kept in
    /// `_p_original`.
    Events {
        /// `km-json` (one JSON object per line), `csv` or `parquet`.
        #[arg(long, value_enum, default_value = "km-json")]
        format: EventsFormat,
        /// Write to FILE instead of standard output (as FILE.partial, fsynced, renamed).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The suppressions of forgotten IDs, as JSON lines: `{"key": hex}` (the store's secret),
    /// then `{"suppressed": hex}` per ID (BLAKE2b-128 of the ID keyed with the secret). The
    /// Spark job's `--suppressions` reads it.
    Suppressions,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The file of commands; `-` reads standard input.
    pub file: PathBuf,
    /// Run the rules but leave the store untouched.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip bad lines (each reported on stderr) instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print one JSON object per input line.
    #[arg(long)]
    pub json: bool,
    /// The API key the requests carry.
    #[arg(long, default_value = "demo")]
    pub key: String,
    /// Generate anonymous IDs from this seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// One ID.
    pub a: String,
    /// The other ID.
    pub b: String,
    /// Print `{"same_person": bool, "edges": [{"a", "b", "cause", "at", "source"}]}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct UnaliasArgs {
    /// One ID.
    pub a: String,
    /// The other ID.
    pub b: String,
    /// Print the resulting persons as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CompactArgs {
    /// Print what it did as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BackupArgs {
    /// The backup file to write (must not exist): written as OUT.partial, fsynced, renamed.
    pub out: PathBuf,
    /// Take it from a running `idgraph serve` at this URL (`http://HOST:PORT`) instead of
    /// --db: `GET /api/admin/backup` with the admin token; tracking goes on meanwhile.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The server's admin token (with --from).
    #[arg(long, env = "IDGRAPH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// zstd level: 1 is fastest, 19 smallest (without --from).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Print what it did as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file (`-`: standard input).
    pub file: PathBuf,
    /// The live store's suppressions (`idgraph export suppressions`): anyone forgotten there
    /// after the backup was taken is erased from the restored store, and stays suppressed.
    #[arg(long, value_name = "FILE")]
    pub suppressions: Option<PathBuf>,
    /// Run `verify` on the restored store before moving it into place.
    #[arg(long)]
    pub verify: bool,
    /// Print what it did as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct UnsuppressArgs {
    /// The forgotten ID.
    pub id: String,
}

#[derive(Args)]
pub struct ForgetArgs {
    /// Any ID of the person.
    pub id: String,
    /// Do not ask for confirmation (required when not on a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print what was deleted as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct HubsArgs {
    /// How many of each.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How `graph` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT text.
    Dot,
    /// SVG, laid out in-process.
    Svg,
}

#[derive(Args)]
pub struct GraphArgs {
    /// Any ID of the person.
    pub id: String,
    /// `dot` or `svg`.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// An accepted API key (repeat for several). Without one, the key `demo` is accepted.
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Bearer token of the query API. Without it the API is off, except that on a loopback
    /// address with the demo on, a random token is made for the demo page and printed.
    #[arg(long, env = "IDGRAPH_READ_TOKEN")]
    pub read_token: Option<String>,
    /// Bearer token of the endpoints that change the store (POST /api/unalias, DELETE
    /// /api/people/ID). Without it they are off.
    #[arg(long, env = "IDGRAPH_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Acknowledge a request only once its data is flushed to disk (group commit).
    #[arg(long)]
    pub sync: bool,
    /// Do not serve the demo page at /.
    #[arg(long)]
    pub no_demo: bool,
    /// The largest tracking request accepted (query and body together, bytes); larger ones
    /// get 400 naming the limit.
    #[arg(long, default_value_t = 65_536)]
    pub max_request_bytes: usize,
    /// Most properties one tracking request (one op) may carry.
    #[arg(long, default_value_t = 256)]
    pub max_properties: usize,
    /// Longest property value accepted, in bytes.
    #[arg(long, default_value_t = 8192)]
    pub max_value_bytes: usize,
    /// Most property names one ID keeps; new names past it are not kept on the ID (the event
    /// is still stored, with all its properties).
    #[arg(long, default_value_t = 1024)]
    pub max_properties_per_id: usize,
    /// Most refused merges (distinct pairs of IDs) the refusal log keeps; past it, merges are
    /// refused all the same and only counted (/metrics: idgraph_refusals_not_logged_total).
    #[arg(long, default_value_t = 100_000)]
    pub max_refusals_logged: u64,
    /// Most alias links one person keeps; past it, links between IDs already one person are
    /// not recorded (/metrics: idgraph_links_not_recorded_total).
    #[arg(long, default_value_t = 50_000)]
    pub max_links_per_person: u32,
    /// How long a client may take to send a request's headers (and a kept-alive connection
    /// may sit idle) before the connection is closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// How long a client may take to send a request's body before it gets 408.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: std::time::Duration,
    /// Connections served at once; more wait in the accept queue.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// At shutdown, how long requests in flight may take before their connections are dropped.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// A person forgotten through the admin API leaves no byte on disk within this time: the
    /// server compacts its store (writes wait meanwhile). `0s` turns it off (then run
    /// `idgraph compact` with the server stopped).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub erase_within: std::time::Duration,
    /// Take a backup into this directory every --backup-every (files
    /// `idgraph-YYYYMMDDTHHMMSSZ.backup`; tracking goes on meanwhile). Without it: none
    /// scheduled (`GET /api/admin/backup` and `idgraph backup --from` still take one).
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<std::path::PathBuf>,
    /// How often --backup-dir gets a backup.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub backup_every: std::time::Duration,
    /// How many of the newest backups --backup-dir keeps (older ones are deleted after each
    /// success).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
    /// Each client's write budget, bytes a second: a tracking request costs the bytes it sent
    /// plus about the bytes its op wrote; past the burst, 429 with Retry-After. A client is
    /// an IPv4 address or an IPv6 /64. 0: no budgets.
    #[arg(long, default_value_t = 1 << 20)]
    pub client_write_rate: u64,
    /// What a client may spend at once before its write budget applies, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub client_write_burst: u64,
    /// Connections one client (IPv4 address, IPv6 /64) may hold open; further ones are closed
    /// when accepted. A trusted proxy is not limited. 0: no limit.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// A reverse proxy whose X-Forwarded-For names the client (repeat for several); without
    /// it, every client behind a proxy shares the proxy's write budget.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}
