//! `idgraph serve`: the KISSmetrics tracking API, a JSON query API, the browser tracker and a
//! demo page, on axum over tokio.
//!
//! - `/e`, `/s`, `/a` (GET, or POST with a form body): parsed by [`track::parse`], applied by the
//!   one writer thread (`ingest.rs`), answered with the 1x1 GIF once applied (with
//!   [`ServeConfig::sync`]: once flushed to disk); `400` with a one-line reason otherwise.
//! - `/api/people/{id}`, `/api/people/{id}/events`, `/api/people/{id}/links`,
//!   `/api/people/{id}/graph`, `/api/explain`, `/api/requests`: only with
//!   `Authorization: Bearer <read token>`; `POST /api/unalias` and `DELETE /api/people/{id}`
//!   only with the admin token.
//! - `/km.js` (the tracker), `/healthz`, `/metrics` (Prometheus text), `/` (the demo page).
//!
//! Store reads of the query API run on tokio's blocking pool; writes go through the writer
//! thread; nothing blocks the async workers on sled.

mod budget;
mod ingest;
pub mod track;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::op::{Limits, Outcome};
use crate::store::Store;
use budget::{Budgets, OpenConnections};
use ingest::{Failed, Ingest};
use track::Endpoint;

/// The browser tracker, served at `/km.js`.
pub const KM_JS: &str = include_str!("../../assets/km.js");
const DEMO_HTML: &str = include_str!("../../assets/demo.html");
/// The person explorer (`/explore`): plain HTML, CSS and JavaScript, no build step.
const EXPLORE_HTML: &str = include_str!("../../assets/explore.html");
/// Most events one page of `/api/people/{id}/timeline` holds.
pub const MAX_TIMELINE_PAGE: usize = 1000;
/// Most entries `/api/hubs` and `/api/refusals` list.
pub const MAX_LIST: usize = 1000;

/// The 1x1 transparent GIF every accepted tracking request gets, as KISSmetrics answers.
pub const GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

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

/// Longest an over-budget request waits before its `429` (at most the time it would have to
/// wait anyway).
const TARPIT: Duration = Duration::from_secs(1);

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
            client_write_rate: 1 << 20,
            client_write_burst: 4 << 20,
            max_connections_per_client: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Counters shown at `/metrics`.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    ops_applied: AtomicU64,
    merges: AtomicU64,
    merges_refused: AtomicU64,
    flushes: AtomicU64,
    /// Requests refused by a limit, by the limit's name.
    limited: Mutex<BTreeMap<&'static str, u64>>,
    /// Request-log entries whose query or reason was cut to fit.
    log_truncated: AtomicU64,
}

/// The names of the limits a refusal's reason may name (see [`crate::Error::Limit`]).
const LIMIT_NAMES: [&str; 6] = [
    "client_write_rate",
    "max_request_bytes",
    "max_properties",
    "max_value_bytes",
    "body_timeout",
    "max_properties_per_id",
];

impl Metrics {
    fn count(&self, endpoint: &'static str, status: StatusCode) {
        *self
            .requests
            .lock()
            .entry((endpoint, status.as_u16()))
            .or_default() += 1;
    }
}

/// One tracking request as `/api/requests` shows it.
#[derive(Clone, Debug, Serialize)]
struct Logged {
    seq: u64,
    method: String,
    path: String,
    /// The query string as received (for a POST, the form body).
    query: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Default)]
struct RequestLog {
    next: u64,
    entries: VecDeque<Logged>,
}

struct AppState {
    store: Arc<Store>,
    cfg: ServeConfig,
    ingest: Ingest,
    metrics: Arc<Metrics>,
    log: Mutex<RequestLog>,
    budgets: Budgets,
    per_client: Arc<OpenConnections>,
}

/// Runs the server on `listener` until `shutdown` completes, then stops accepting, lets the
/// requests in flight finish (for at most [`ServeConfig::shutdown_grace`]; then their
/// connections are dropped), applies and flushes everything acknowledged, and returns.
///
/// # Errors
/// [`Error::Storage`] when the final flush fails; [`Error::Internal`] when the final flush
/// panicked.
pub async fn serve(
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    // A store opened from its graph index answers at once; the graph that writes need is
    // loaded meanwhile, so that the first tracking request does not wait for it (a failure
    // here shows again, as an error, on the first write).
    let warm = store.clone();
    tokio::task::spawn_blocking(move || warm.load_graph());
    let (ingest, threads) = Ingest::start(store.clone(), metrics.clone(), cfg.sync);
    let conn = Connections {
        header_timeout: cfg.header_timeout,
        max: cfg.max_connections.max(1),
        grace: cfg.shutdown_grace,
        per_client: OpenConnections::new(
            cfg.max_connections_per_client,
            cfg.trusted_proxies.clone(),
        ),
    };
    let state = Arc::new(AppState {
        store: store.clone(),
        budgets: Budgets::new(
            cfg.client_write_rate,
            cfg.client_write_burst,
            BUDGET_CLIENTS,
        ),
        cfg,
        ingest,
        metrics,
        log: Mutex::new(RequestLog::default()),
        per_client: conn.per_client.clone(),
    });
    conn.serve(listener, router(state), shutdown).await;
    // Every request in flight has been answered (or its connection dropped): the writer
    // applies (and flushes) the rest.
    threads.stop().await;
    tokio::task::spawn_blocking(move || store.flush())
        .await
        .map_err(|e| Error::Internal(format!("the final flush panicked: {e}")))?
        .map(|_| ())
}

/// The accept loop: HTTP/1.1 over hyper with a header timeout, at most `max` connections at
/// once, and a shutdown that no client can hold open past `grace`. (`axum::serve` has none
/// of the three.)
struct Connections {
    header_timeout: Duration,
    max: usize,
    grace: Duration,
    /// Connections per client ([`ServeConfig::max_connections_per_client`]).
    per_client: Arc<OpenConnections>,
}

impl Connections {
    async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max));
        let (closing, closed) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next() => continue,
                a = async {
                    // A free slot first: past the limit, clients wait in the accept queue.
                    let permit = slots.clone().acquire_owned().await.expect("never closed");
                    (permit, listener.accept().await)
                } => a,
            };
            let (permit, stream, peer) = match accepted {
                (p, Ok((stream, peer))) => (p, stream, peer),
                (_, Err(e)) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    eprintln!("idgraph: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Past the client's limit: closed at once (dropped with its slot).
            let Some(held) = self.per_client.open(peer) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service =
                hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
                    app.clone(),
                    move |mut r: hyper::Request<hyper::body::Incoming>| {
                        r.extensions_mut().insert(ConnectInfo(peer));
                        r
                    },
                ));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(self.header_timeout);
            let mut closed = closed.clone();
            tasks.spawn(async move {
                let _permit = (permit, held);
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = closed.changed() => {}
                }
                // Finish the request in flight, then close (no new request on this connection).
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            });
        }
        drop(listener);
        let _ = closing.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            eprintln!(
                "idgraph: {} connections still open {:?} after shutdown: dropped",
                tasks.len(),
                self.grace
            );
            tasks.shutdown().await;
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/e", get(track_e).post(track_e))
        .route("/s", get(track_s).post(track_s))
        .route("/a", get(track_a).post(track_a))
        .route("/km.js", get(km_js))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/people/{id}", get(person).delete(forget))
        .route("/api/people/{id}/events", get(person_events))
        .route("/api/people/{id}/links", get(person_links))
        .route("/api/people/{id}/graph", get(person_graph))
        .route("/api/explain", get(explain))
        .route("/api/unalias", axum::routing::post(unalias))
        .route("/api/people/{id}/timeline", get(person_timeline))
        .route("/api/hubs", get(hubs))
        .route("/api/refusals", get(refusals))
        .route("/api/requests", get(requests))
        .route("/explore", get(explore))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.max_request_bytes,
        ));
    if state.cfg.demo {
        r = r.route("/", get(demo));
    }
    r.fallback(not_found).with_state(state)
}

type St = State<Arc<AppState>>;

/// A request body, read by [`read_body`] within the limits.
type Body = axum::body::Body;

/// Why a request body was not read.
enum BodyError {
    /// More than the limit of bytes.
    TooLarge,
    /// Not all there within the body timeout.
    Slow,
    /// The connection broke.
    Broken(String),
}

/// Reads a body of at most `max` bytes that arrives within `within`: neither a huge body nor
/// a slow one holds memory or a connection for longer than the limits say.
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
    within: Duration,
) -> std::result::Result<Bytes, BodyError> {
    use axum::body::HttpBody;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(BodyError::Slow))
}

type Peer = ConnectInfo<SocketAddr>;

async fn track_e(s: St, p: Peer, m: Method, h: HeaderMap, q: RawQuery, b: Body) -> Response {
    track(Endpoint::Event, s, p, m, h, q, b).await
}
async fn track_s(s: St, p: Peer, m: Method, h: HeaderMap, q: RawQuery, b: Body) -> Response {
    track(Endpoint::Set, s, p, m, h, q, b).await
}
async fn track_a(s: St, p: Peer, m: Method, h: HeaderMap, q: RawQuery, b: Body) -> Response {
    track(Endpoint::Alias, s, p, m, h, q, b).await
}

/// `s` cut to at most `max` bytes (at a character boundary), marked with `…` when cut.
fn cut(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push('…');
    (s, true)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn track(
    ep: Endpoint,
    State(s): St,
    ConnectInfo(peer): Peer,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let mut raw = query.unwrap_or_default();
    let max = s.cfg.max_request_bytes;
    // Set when the body was left unread (too large, too slow, over budget): the connection
    // must close, or the client would send its next request after bytes nobody will read.
    let mut unread = false;
    let client = s.client(peer, &headers);
    // Seconds until an over-budget client may come back.
    let mut retry_after = None;
    // What the op wrote (its cost), when it was applied.
    let mut written = 0;
    let result = async {
        if let Err(wait) = s.budgets.admit(client, Instant::now()) {
            unread = method == Method::POST;
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            retry_after = Some(secs);
            // Answered late (a timer is all it holds): a client that retries at once would
            // otherwise spend the server's CPU on refusals as fast as it can send.
            tokio::time::sleep(wait.min(TARPIT)).await;
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this client has written more than its budget of {} bytes a second \
                     ({} at once): retry in {secs} s (client_write_rate)",
                    s.cfg.client_write_rate, s.cfg.client_write_burst
                ),
            ));
        }
        let too_large = || {
            (
                StatusCode::BAD_REQUEST,
                format!("the request is larger than the limit of {max} bytes (max_request_bytes)"),
            )
        };
        let within = s.cfg.body_timeout;
        let body = match read_body(&headers, body, max.saturating_sub(raw.len()), within).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                unread = true;
                return Err(too_large());
            }
            Err(BodyError::Slow) => {
                unread = true;
                return Err((
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} s (body_timeout)",
                        within.as_secs_f64()
                    ),
                ));
            }
            Err(BodyError::Broken(e)) => return Err((StatusCode::BAD_REQUEST, e)),
        };
        if raw.len() + body.len() > max {
            return Err(too_large());
        }
        if method == Method::POST && !body.is_empty() {
            let form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !form {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "a POST body must be application/x-www-form-urlencoded".to_string(),
                ));
            }
            let body = std::str::from_utf8(&body)
                .map_err(|_| (StatusCode::BAD_REQUEST, "the body is not UTF-8".to_string()))?;
            if !raw.is_empty() {
                raw.push('&');
            }
            raw.push_str(body);
        }
        let params: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        let op = track::parse(
            ep,
            &params,
            &s.cfg.keys,
            &s.cfg.limits,
            crate::op::now(),
            || cut(format!("{method} /{}?{raw}", ep.as_str()), 300).0,
        )
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        match s.ingest.apply(op).await {
            Ok((outcome, cost)) => {
                written = cost;
                Ok(outcome)
            }
            Err(Failed::ShuttingDown) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down".into(),
            )),
            Err(Failed::Store(e)) => Err((StatusCode::INTERNAL_SERVER_ERROR, e)),
        }
    }
    .await;
    let (status, reason) = match &result {
        Ok(outcome @ Outcome::PropertiesRefused { .. }) => (StatusCode::OK, outcome.refusal()),
        Ok(_) => (StatusCode::OK, None),
        Err((st, why)) => (*st, Some(why.clone())),
    };
    s.metrics.count(ep.as_str(), status);
    if retry_after.is_none() {
        let sent = if unread { max } else { raw.len() };
        s.budgets
            .charge(client, sent as u64 + written, Instant::now());
    }
    if let Some(why) = &reason
        && let Some(limit) = LIMIT_NAMES
            .iter()
            .find(|l| why.ends_with(&format!("({l})")))
    {
        *s.metrics.limited.lock().entry(limit).or_default() += 1;
    }
    if s.cfg.request_log > 0 {
        let (query, q_cut) = cut(raw, LOG_QUERY_BYTES);
        let (reason, r_cut) = match reason {
            Some(r) => {
                let (r, c) = cut(r, LOG_REASON_BYTES);
                (Some(r), c)
            }
            None => (None, false),
        };
        if q_cut || r_cut {
            s.metrics.log_truncated.fetch_add(1, Relaxed);
        }
        let mut log = s.log.lock();
        let seq = log.next;
        log.next += 1;
        if log.entries.len() == s.cfg.request_log {
            log.entries.pop_front();
        }
        log.entries.push_back(Logged {
            seq,
            method: method.to_string(),
            path: format!("/{}", ep.as_str()),
            query,
            status: status.as_u16(),
            reason,
        });
    }
    match result {
        Ok(outcome) => {
            let mut r = (
                [
                    (header::CONTENT_TYPE, "image/gif"),
                    (header::CACHE_CONTROL, "no-cache, no-store"),
                ],
                GIF,
            )
                .into_response();
            if let Some(why) = outcome.refusal() {
                // Still a success for the client (KISSmetrics semantics); say why for humans.
                if let Ok(v) = HeaderValue::from_str(&why.replace(['\r', '\n'], " ")) {
                    r.headers_mut().insert("x-idgraph-refused", v);
                }
            }
            r
        }
        Err((status, why)) => {
            let mut r = text(status, why);
            if unread {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            r
        }
    }
}

async fn km_js() -> Response {
    script(KM_JS)
}

/// A script response (200, so that a browser runs it). km.js goes out as the `&'static str`
/// compiled into the binary, without a copy per request.
fn script(body: impl Into<axum::body::Body>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body.into(),
    )
        .into_response()
}

/// What the standard KISSmetrics snippet loads, with its two host names pointed here:
/// `//HOST/i.js` (KISSmetrics' cross-domain identity helper; km.js does that itself, so a stub)
/// and `//HOST/<KEY>.2.js` (the tracker: km.js for an accepted key; for any other key a script
/// that says so in the browser console, counted as a refused script request).
fn snippet_script(s: &AppState, path: &str) -> Option<Response> {
    if path == "/i.js" {
        s.metrics.count("script", StatusCode::OK);
        return Some(script(
            "/* idgraph: identity is kept by the tracker (/<KEY>.2.js); nothing to do here */\n",
        ));
    }
    let key = path.strip_prefix('/')?.strip_suffix(".2.js")?;
    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
    if s.cfg.keys.iter().any(|k| *k == key) {
        s.metrics.count("script", StatusCode::OK);
        return Some(script(KM_JS));
    }
    s.metrics.count("script", StatusCode::FORBIDDEN);
    let shown: String = key.chars().take(64).collect();
    let msg = format!(
        "idgraph: the API key {} is not accepted by this server (start it with --key); \
         nothing will be tracked",
        serde_json::to_string(&shown).expect("a string")
    );
    Some(script(format!(
        "if (window.console && console.warn) console.warn({});\n",
        serde_json::to_string(&msg).expect("a string")
    )))
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

async fn not_found(State(s): St, uri: axum::http::Uri) -> Response {
    if let Some(r) = snippet_script(&s, uri.path()) {
        return r;
    }
    s.metrics.count("other", StatusCode::NOT_FOUND);
    text(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn metrics(State(s): St) -> Response {
    use std::fmt::Write;
    let mut out = String::new();
    out.push_str("# HELP idgraph_requests_total Requests by endpoint and status.\n");
    out.push_str("# TYPE idgraph_requests_total counter\n");
    for ((ep, st), n) in s.metrics.requests.lock().iter() {
        let _ = writeln!(
            out,
            "idgraph_requests_total{{endpoint=\"{ep}\",status=\"{st}\"}} {n}"
        );
    }
    out.push_str("# HELP idgraph_limited_total Tracking requests refused by a limit, by limit.\n");
    out.push_str("# TYPE idgraph_limited_total counter\n");
    for limit in LIMIT_NAMES {
        let n = s.metrics.limited.lock().get(limit).copied().unwrap_or(0);
        let _ = writeln!(out, "idgraph_limited_total{{limit=\"{limit}\"}} {n}");
    }
    // Counters kept with the graph: O(1), no walk over the IDs.
    let (ids, persons) = s.store.counts();
    let guard = s.store.guardrails();
    for (name, help, kind, v) in [
        (
            "idgraph_ops_applied_total",
            "Tracking ops applied to the store.",
            "counter",
            s.metrics.ops_applied.load(Relaxed),
        ),
        (
            "idgraph_merges_total",
            "Aliases that joined two persons.",
            "counter",
            s.metrics.merges.load(Relaxed),
        ),
        (
            "idgraph_merges_refused_total",
            "Aliases refused by a guardrail (blocked ID, person too large).",
            "counter",
            s.metrics.merges_refused.load(Relaxed),
        ),
        (
            "idgraph_sync_flushes_total",
            "Flushes by --sync group commit (acknowledged requests share them).",
            "counter",
            s.metrics.flushes.load(Relaxed),
        ),
        (
            "idgraph_request_log_truncated_total",
            "Request-log entries whose query or reason was cut to fit the log's bounds.",
            "counter",
            s.metrics.log_truncated.load(Relaxed),
        ),
        (
            "idgraph_links_not_recorded_total",
            "Redundant links not recorded: the person held max_links_per_person links.",
            "counter",
            guard.links_not_recorded,
        ),
        (
            "idgraph_refusals_not_logged_total",
            "Refused merges not written: the refusal log held max_refusals_logged records.",
            "counter",
            guard.refusals_not_logged,
        ),
        (
            "idgraph_refusals_logged",
            "Records in the refusal log.",
            "gauge",
            guard.refusals_logged,
        ),
        (
            "idgraph_connections_refused_total",
            "Connections closed when accepted: their client held max_connections_per_client.",
            "counter",
            s.per_client.refused.load(Relaxed),
        ),
        (
            "idgraph_client_budgets",
            "Clients whose write budget the server tracks now (client_write_rate).",
            "gauge",
            s.budgets.clients() as u64,
        ),
        ("idgraph_ids", "IDs in the store.", "gauge", ids),
        ("idgraph_persons", "Persons in the store.", "gauge", persons),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Which token an `/api/` endpoint needs.
#[derive(Clone, Copy)]
enum Access {
    /// The read token: queries.
    Read,
    /// The admin token: changes (unalias, forget).
    Admin,
}

impl AppState {
    /// The client a tracking request is charged to: the peer, or — from a trusted proxy —
    /// the rightmost `X-Forwarded-For` address that is not a trusted proxy itself.
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = &self.cfg.trusted_proxies;
        if trusted.contains(&peer.ip()) {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect::<Vec<_>>();
            for a in forwarded.iter().rev() {
                match a.trim().parse::<IpAddr>() {
                    Ok(ip) if trusted.contains(&ip) => continue,
                    Ok(ip) => return budget::client_of(SocketAddr::new(ip, 0)),
                    Err(_) => break,
                }
            }
        }
        budget::client_of(peer)
    }

    /// The refusal to send, unless the request carries the token `access` needs.
    fn deny(&self, headers: &HeaderMap, access: Access) -> Option<Response> {
        let (token, flag, what) = match access {
            Access::Read => (&self.cfg.read_token, "--read-token", "read token"),
            Access::Admin => (&self.cfg.admin_token, "--admin-token", "admin token"),
        };
        let Some(token) = token.as_ref().filter(|t| !t.is_empty()) else {
            return Some(text(
                StatusCode::FORBIDDEN,
                format!("this endpoint is off: start the server with {flag} TOKEN"),
            ));
        };
        // RFC 9110: the scheme is case-insensitive; whitespace around the token is not part of it.
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if given.is_some_and(|g| same_token(g, token)) {
            None
        } else {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                format!("this endpoint needs the header Authorization: Bearer <{what}>"),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
    }

    /// Runs `f` on the blocking pool (sled must not stall the async workers), behind the
    /// token `access` needs, and counts the answer.
    async fn call(
        self: &Arc<Self>,
        headers: &HeaderMap,
        access: Access,
        f: impl FnOnce(&Store) -> Result<Response> + Send + 'static,
    ) -> Response {
        let r = match self.deny(headers, access) {
            Some(r) => r,
            None => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || f(&store)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
        };
        self.metrics.count("api", r.status());
        r
    }
}

fn unknown(id: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("unknown ID {}", crate::error::shown(id)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "a.localhost:1",
            "127.0.0.1:9",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:80",
            "[::2]:80",
            "127.0.0.1.evil.example",
            "",
            "[::1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        for other in ["abd", "ab", "abcd", ""] {
            assert!(!same_token(other, "abc"), "{other}");
        }
    }
}

fn json_response(v: impl Serialize) -> Response {
    axum::Json(v).into_response()
}

/// Whether `given` is `token`, in time that depends on neither the token's bytes nor its
/// length: both are hashed with a seed drawn once per process (so nobody can compute the digest
/// they must match) and the two 128-bit digests are compared whole.
fn same_token(given: &str, token: &str) -> bool {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(rand::random);
    let h = |s: &str| xxhash_rust::xxh3::xxh3_128_with_seed(s.as_bytes(), seed);
    h(given) == h(token)
}

async fn person(State(s): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    s.call(&headers, Access::Read, move |store| {
        let Some(p) = store.resolve(&id)? else {
            return Ok(unknown(&id));
        };
        // Each property with when and under which ID its value was set (the explorer's), and
        // name → value as before.
        let detail = store.properties(&id)?;
        let props: serde_json::Map<String, serde_json::Value> = detail
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    serde_json::to_value(&p.value).unwrap_or_default(),
                )
            })
            .collect();
        Ok(json_response(json!({
            "person": p.person,
            "ids": p.ids,
            "properties": props,
            "property_details": detail,
        })))
    })
    .await
}

async fn person_events(State(s): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    s.call(&headers, Access::Read, move |store| {
        let Some(person) = store.canonical(&id)? else {
            return Ok(unknown(&id));
        };
        let events = store.events(&id)?;
        Ok(json_response(json!({"person": person, "events": events})))
    })
    .await
}

#[derive(Deserialize)]
struct TimelinePage {
    /// Events to skip, newest first.
    offset: Option<usize>,
    /// Events to return (default 50, at most [`MAX_TIMELINE_PAGE`]).
    limit: Option<usize>,
    /// Only events of this name (case-insensitive).
    name: Option<String>,
}

/// One page of a person's events, newest first, optionally of one name; with the total and
/// the event names of the whole person (for a filter).
async fn person_timeline(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TimelinePage>,
) -> Response {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_TIMELINE_PAGE {
        return bad_request(&s, format!("limit={limit}: give 1 to {MAX_TIMELINE_PAGE}"));
    }
    s.call(&headers, Access::Read, move |store| {
        let Some(person) = store.canonical(&id)? else {
            return Ok(unknown(&id));
        };
        let mut events = store.events(&id)?;
        // Names as spelled, then folded by case: a person has few names and many events.
        let mut spelled: FxHashMap<&str, u64> = FxHashMap::default();
        for e in &events {
            *spelled.entry(e.event.as_str()).or_default() += 1;
        }
        let mut names: std::collections::BTreeMap<String, (String, u64)> = Default::default();
        let want = q.name.as_deref().map(str::to_lowercase);
        let mut kept: FxHashSet<String> = FxHashSet::default();
        for (name, n) in spelled {
            let folded = name.to_lowercase();
            if want.as_ref() == Some(&folded) {
                kept.insert(name.to_string());
            }
            let e = names.entry(folded).or_insert_with(|| (name.to_string(), 0));
            e.1 += n;
            // The spelling shown: the smallest, so that it does not depend on hash order.
            if name < e.0.as_str() {
                e.0 = name.to_string();
            }
        }
        let all = events.len();
        if want.is_some() {
            events.retain(|e| kept.contains(&e.event));
        }
        let total = events.len();
        let page: Vec<_> = events
            .into_iter()
            .rev()
            .skip(q.offset.unwrap_or(0))
            .take(limit)
            .collect();
        Ok(json_response(json!({
            "person": person,
            "all": all,
            "total": total,
            "offset": q.offset.unwrap_or(0),
            "events": page,
            "names": names.into_values().collect::<Vec<_>>(),
        })))
    })
    .await
}

#[derive(Deserialize)]
struct Top {
    top: Option<usize>,
}

/// A list's length from `?top=` / `?limit=`: default 10, at most [`MAX_LIST`].
fn list_len(n: Option<usize>) -> std::result::Result<usize, String> {
    match n.unwrap_or(10) {
        n @ 1..=MAX_LIST => Ok(n),
        n => Err(format!("{n}: give 1 to {MAX_LIST} entries")),
    }
}

/// `400` with the reason, counted.
fn bad_request(s: &AppState, why: String) -> Response {
    s.metrics.count("api", StatusCode::BAD_REQUEST);
    text(StatusCode::BAD_REQUEST, why)
}

async fn hubs(State(s): St, headers: HeaderMap, Query(q): Query<Top>) -> Response {
    let top = match list_len(q.top) {
        Ok(n) => n,
        Err(why) => return bad_request(&s, why),
    };
    s.call(&headers, Access::Read, move |store| {
        Ok(json_response(store.hubs(top)?))
    })
    .await
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// The refusal log: its size and the latest refusals, newest first.
async fn refusals(State(s): St, headers: HeaderMap, Query(q): Query<Limit>) -> Response {
    let limit = match list_len(q.limit) {
        Ok(n) => n,
        Err(why) => return bad_request(&s, why),
    };
    s.call(&headers, Access::Read, move |store| {
        let mut all = store.refusals()?;
        let total = all.len();
        all.sort_by(|x, y| {
            y.at.cmp(&x.at)
                .then_with(|| (&x.a, &x.b).cmp(&(&y.a, &y.b)))
        });
        all.truncate(limit);
        Ok(json_response(json!({"total": total, "refusals": all})))
    })
    .await
}

async fn person_links(State(s): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    s.call(&headers, Access::Read, move |store| {
        let Some(g) = store.person_graph_first_seen(&id)? else {
            return Ok(unknown(&id));
        };
        Ok(json_response(json!({
            "person": g.person,
            "ids": g.ids.iter().map(|i| &i.id).collect::<Vec<_>>(),
            "anonymous": g.ids.iter().map(|i| i.anonymous).collect::<Vec<_>>(),
            "first_seen": g.ids.iter().map(|i| i.first_seen).collect::<Vec<_>>(),
            "links": g.links,
        })))
    })
    .await
}

#[derive(Deserialize)]
struct GraphFormat {
    format: Option<String>,
}

async fn person_graph(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<GraphFormat>,
) -> Response {
    s.call(&headers, Access::Read, move |store| {
        let Some(g) = store.person_graph(&id)? else {
            return Ok(unknown(&id));
        };
        Ok(match q.format.as_deref().unwrap_or("svg") {
            "dot" => (
                [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
                g.to_dot(),
            )
                .into_response(),
            "svg" => match g.to_svg() {
                Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
                Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            },
            other => text(
                StatusCode::BAD_REQUEST,
                format!("format={other:?}: use dot or svg"),
            ),
        })
    })
    .await
}

#[derive(Deserialize)]
struct Pair {
    a: Option<String>,
    b: Option<String>,
}

impl Pair {
    fn both(self) -> Option<(String, String)> {
        self.a.zip(self.b)
    }
}

fn need_both() -> Response {
    text(StatusCode::BAD_REQUEST, "give both IDs: ?a=<ID>&b=<ID>")
}

async fn explain(State(s): St, headers: HeaderMap, Query(q): Query<Pair>) -> Response {
    let Some((a, b)) = q.both() else {
        s.metrics.count("api", StatusCode::BAD_REQUEST);
        return need_both();
    };
    s.call(&headers, Access::Read, move |store| {
        for u in [&a, &b] {
            if !store.contains(u)? {
                return Ok(unknown(u));
            }
        }
        Ok(json_response(store.explain(&a, &b)?))
    })
    .await
}

async fn unalias(State(s): St, headers: HeaderMap, Query(q): Query<Pair>) -> Response {
    let Some((a, b)) = q.both() else {
        s.metrics.count("api", StatusCode::BAD_REQUEST);
        return need_both();
    };
    s.call(&headers, Access::Admin, move |store| {
        match store.unalias(&a, &b)? {
            None => Ok(text(
                StatusCode::NOT_FOUND,
                format!("no direct link between {a:?} and {b:?}; nothing changed"),
            )),
            Some(persons) => {
                store.flush()?;
                Ok(json_response(json!({ "persons": persons })))
            }
        }
    })
    .await
}

async fn forget(State(s): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    s.call(&headers, Access::Admin, move |store| {
        match store.forget(&id)? {
            None => Ok(unknown(&id)),
            Some(f) => {
                store.flush()?;
                Ok(json_response(f))
            }
        }
    })
    .await
}

#[derive(Deserialize)]
struct After {
    after: Option<u64>,
}

async fn requests(State(s): St, headers: HeaderMap, Query(q): Query<After>) -> Response {
    if let Some(r) = s.deny(&headers, Access::Read) {
        s.metrics.count("api", r.status());
        return r;
    }
    let log = s.log.lock();
    let entries: Vec<&Logged> = log
        .entries
        .iter()
        .filter(|e| q.after.is_none_or(|a| e.seq > a))
        .collect();
    let r = axum::Json(json!({"next": log.next, "requests": entries})).into_response();
    s.metrics.count("api", r.status());
    r
}

/// The read token a page served to this request may embed: only on a loopback address, and
/// only to a page loaded by a loopback name. (DNS rebinding: a page on evil.example whose name
/// now points at 127.0.0.1 reaches this server with `Host: evil.example`.)
fn page_token(s: &AppState, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if s.cfg.demo_token && host.is_some_and(loopback_host) {
        s.cfg.read_token.clone()
    } else {
        None
    }
}

/// What the explorer may load and run: this origin only (no plug-ins, no framing).
const EXPLORE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'";

/// `html` with its `"{{TOKEN}}"` replaced by the page's token (JSON: a string or null), and its
/// Content-Security-Policy when it has one.
fn page(html: &str, s: &AppState, headers: &HeaderMap, csp: Option<&'static str>) -> Response {
    let token = page_token(s, headers);
    let key = s.cfg.keys.first().cloned().unwrap_or_default();
    let html = html
        .replace(
            "\"{{KEY}}\"",
            &serde_json::to_string(&key).unwrap_or_default(),
        )
        .replace(
            "\"{{TOKEN}}\"",
            &serde_json::to_string(&token).unwrap_or_default(),
        );
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    if let Some(csp) = csp {
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
    }
    r
}

async fn demo(State(s): St, headers: HeaderMap) -> Response {
    page(DEMO_HTML, &s, &headers, None)
}

/// The person explorer. It holds no data: it asks the query API with the read token (embedded
/// as for the demo page, or pasted by the user) and repairs with the admin token (pasted).
async fn explore(State(s): St, headers: HeaderMap) -> Response {
    page(EXPLORE_HTML, &s, &headers, Some(EXPLORE_CSP))
}

/// Whether a `Host` header names this machine by a loopback name: `localhost` (or a name
/// under `.localhost`), `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or("", |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the demo page may be given the read token: only on a loopback address.
pub fn demo_may_hold_token(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}
