//! `idgraph serve`: the KISSmetrics tracking API, a JSON query API, the browser tracker and a
//! demo page, on axum over tokio.
//!
//! - `/e`, `/s`, `/a` (GET, or POST with a form body): parsed by [`track::parse`], applied by the
//!   one writer thread (`writer.rs`), answered with the 1x1 GIF once applied (with
//!   [`ServeConfig::sync`]: once flushed to disk); `400` with a one-line reason otherwise.
//! - `/api/people/{id}`, `/api/people/{id}/events`, `/api/people/{id}/links`,
//!   `/api/people/{id}/graph`, `/api/explain`, `/api/requests`: only with
//!   `Authorization: Bearer <read token>`; `POST /api/unalias`, `DELETE /api/people/{id}` and
//!   `GET /api/admin/backup` (a backup, streamed while tracking goes on) only with the admin
//!   token.
//! - `/km.js` (the tracker), `/healthz`, `/metrics` (Prometheus text), `/` (the demo page).
//!
//! Store reads of the query API run on tokio's blocking pool; writes go through the writer
//! thread; nothing blocks the async workers on sled.
//!
//! | module | owns |
//! |---|---|
//! | `config` | [`ServeConfig`] and its defaults |
//! | `connection` | the accept loop, reading a body within its limits |
//! | `tracking` | `/e` `/s` `/a` as steps: admit, read, parse, apply, account, answer |
//! | `writer` | the one writer thread, `--sync` group commit |
//! | `api` | the query and admin API |
//! | `backup` | `/api/admin/backup`, scheduled backups (`--backup-dir`) |
//! | `auth` | the client a request is charged to, bearer tokens |
//! | `budget` | write budgets, connections per client |
//! | `metrics` | `/metrics` |
//! | `request_log` | `/api/requests` |
//! | `pages` | km.js, the snippet's scripts, the demo page, the explorer |
//! | [`track`] | (re-exported from `ingest::km_http`) the tracking API's parameters to an op |

mod api;
mod auth;
mod backup;
mod budget;
mod config;
mod connection;
mod erase;
mod metrics;
mod pages;
mod request_log;
pub use crate::ingest::km_http as track;
mod tracking;
mod writer;

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
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::op::{Limits, Outcome};
use crate::store::Store;
use budget::{Budgets, OpenConnections};
use writer::{Failed, Writer};

pub use api::{MAX_LIST, MAX_TIMELINE_PAGE};
pub use backup::BackupSchedule;
pub use config::{BUDGET_CLIENTS, LOG_QUERY_BYTES, LOG_REASON_BYTES, ServeConfig};
pub use pages::{KM_JS, demo_may_hold_token};
pub use tracking::GIF;

use api::*;
use auth::*;
use connection::*;
use metrics::*;
use pages::*;
use request_log::*;
use tracking::*;

/// What every handler shares.
struct AppState {
    /// The store (replaced by an erasure: `erase.rs`).
    slot: Arc<erase::StoreSlot>,
    cfg: ServeConfig,
    writer: Writer,
    metrics: Arc<Metrics>,
    log: Mutex<RequestLog>,
    budgets: Budgets,
    per_client: Arc<OpenConnections>,
    backups: Arc<backup::BackupMetrics>,
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
    let slot = Arc::new(erase::StoreSlot::new(store));
    let (writer, threads) = Writer::start(slot.clone(), metrics.clone(), cfg.sync);
    if let Some(within) = cfg.erase_within {
        erase::schedule(within, metrics.clone(), writer.clone());
    }
    let backups = Arc::new(backup::BackupMetrics::default());
    if let Some(sched) = cfg.backup.clone() {
        backup::schedule(sched, slot.clone(), backups.clone());
    }
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
        slot: slot.clone(),
        budgets: Budgets::new(
            cfg.client_write_rate,
            cfg.client_write_burst,
            BUDGET_CLIENTS,
        ),
        cfg,
        writer,
        metrics,
        log: Mutex::new(RequestLog::default()),
        per_client: conn.per_client.clone(),
        backups,
    });
    conn.serve(listener, router(state), shutdown).await;
    // Every request in flight has been answered (or its connection dropped): the writer
    // applies (and flushes) the rest.
    threads.stop().await;
    tokio::task::spawn_blocking(move || slot.get()?.flush())
        .await
        .map_err(|e| Error::Internal(format!("the final flush panicked: {e}")))?
        .map(|_| ())
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
        .route("/api/admin/backup", get(backup::backup))
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

/// `ok`, or `503` with the reason once a write failed at the storage layer.
async fn healthz(State(s): St) -> Response {
    match s.metrics.failed.lock().clone() {
        None => text(StatusCode::OK, "ok"),
        Some(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failing: a write failed ({why}); writes are refused until a restart"),
        ),
    }
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
