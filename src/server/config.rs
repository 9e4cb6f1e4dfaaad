//! The server's settings and their defaults.

use super::*;

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Accepted API keys (`_k`).
    pub keys: Vec<String>,
    /// The bearer token of the query API; `None` (or an empty token) turns the query API off.
    pub read_token: Option<String>,
    /// Acknowledge a tracking request only once its data is flushed to disk (group commit).
    pub sync: bool,
    /// The bearer token of the endpoints that change the store (`POST /api/unalias`,
    /// `DELETE /api/people/{id}`); `None` (or empty) turns them off.
    pub admin_token: Option<String>,
    /// Serve the demo page at `/`.
    pub demo: bool,
    /// Give the read token to the demo page (only do this when the server listens on
    /// loopback: anyone who can load the page gets the token).
    pub demo_token: bool,
    /// How many recent tracking requests `/api/requests` keeps. Each entry keeps at most
    /// [`LOG_QUERY_BYTES`] of the query and [`LOG_REASON_BYTES`] of the reason, so the log holds
    /// at most ~1.6 KiB per entry (~16 MiB at the default 10,000).
    pub request_log: usize,
    /// The largest tracking request accepted: query string and body together, in bytes.
    /// Larger ones get `400` naming the limit, and their body is not read past it.
    /// Default = 65,536 (KISSmetrics' tracker sends a few KB; a form of 256 fields fits).
    pub max_request_bytes: usize,
    /// What one op may carry; the store must be opened with the same
    /// ([`Config::limits`](crate::Config::limits)). Default = [`Limits::default`].
    pub limits: Limits,
    /// How long a client may take to send a request's headers (also: how long a kept-alive
    /// connection may sit idle). Past it the connection is closed. Default = 10 s.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body. Past it: `408`. Default = 10 s
    /// (the largest body allowed then needs ~6.5 KB/s).
    pub body_timeout: Duration,
    /// Connections served at once; further clients wait in the kernel's accept queue until one
    /// closes. Default = 1,024.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish before their connections
    /// are dropped (nothing unacknowledged is lost: what was acknowledged is flushed first).
    /// Default = 10 s.
    pub shutdown_grace: Duration,
    /// A person forgotten through `DELETE /api/people/{id}` leaves no byte in the store's
    /// directory within this time: the writer compacts the store (`server/erase.rs`); writes
    /// wait while the live data is copied, reads go on but for the moment of the swap.
    /// `None`: never while serving. Default = 1 h.
    pub erase_within: Option<Duration>,
    /// Scheduled backups (`server/backup.rs`); `None`: none (`GET /api/admin/backup` still
    /// takes one on demand). Default = `None`.
    pub backup: Option<super::BackupSchedule>,
    /// Each client's write budget, in bytes a second: a tracking request costs the bytes it
    /// sent plus about the bytes its op wrote (a property set rewrites the ID's whole record).
    /// A client that has spent more than [`client_write_burst`](Self::client_write_burst)
    /// gets `429` with `Retry-After` until its debt has drained. A client is an IPv4 address
    /// or an IPv6 /64 (see [`trusted_proxies`](Self::trusted_proxies)). 0 turns budgets off.
    /// Default = 1 MiB/s (a browser sends a few KB a minute; at the default limits the
    /// heaviest op rewrites 8 MB).
    pub client_write_rate: u64,
    /// What a client may spend at once before its budget applies. Default = 4 MiB.
    pub client_write_burst: u64,
    /// Connections one client may hold open at once (a trusted proxy: any number); further
    /// ones are closed as soon as they are accepted. 0: no limit. Default = 64 (a browser
    /// opens about 6 per host).
    pub max_connections_per_client: usize,
    /// Peers whose `X-Forwarded-For` names the client (a reverse proxy in front of the
    /// server): the rightmost address in it that is not itself a trusted proxy. Default: none
    /// (behind a proxy that is not listed, all its clients share one budget).
    pub trusted_proxies: Vec<IpAddr>,
}

/// Most clients whose write budgets the server tracks at once ([`ServeConfig::client_write_rate`]);
/// past it, clients that owe nothing are forgotten, and when none can be, new clients share one
/// budget. ~64 bytes each: ~4 MiB at most.
pub const BUDGET_CLIENTS: usize = 65_536;

/// Most bytes of a request's query that `/api/requests` keeps (the rest is cut, marked `…`).
pub const LOG_QUERY_BYTES: usize = 1024;

/// Most bytes of a refusal's reason that `/api/requests` keeps.
pub const LOG_REASON_BYTES: usize = 512;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            keys: vec!["demo".into()],
            read_token: None,
            admin_token: None,
            sync: false,
            demo: true,
            demo_token: false,
            request_log: 10_000,
            max_request_bytes: 65_536,
            limits: Limits::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
            erase_within: Some(Duration::from_secs(3600)),
            backup: None,
            client_write_rate: 1 << 20,
            client_write_burst: 4 << 20,
            max_connections_per_client: 64,
            trusted_proxies: Vec::new(),
        }
    }
}
