//! Counters and `/metrics` (Prometheus text).

use super::*;

/// Counters shown at `/metrics`.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(super) requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub(super) ops_applied: AtomicU64,
    pub(super) merges: AtomicU64,
    pub(super) merges_refused: AtomicU64,
    pub(super) flushes: AtomicU64,
    /// Tracking ops dropped because they name a forgotten, suppressed ID.
    pub(super) suppressed: AtomicU64,
    /// Set by a forget of the admin API: since when an erasure (compaction) is due.
    pub(super) erase_due: Mutex<Option<std::time::Instant>>,
    /// Erasures done, and how long the last one paused writes.
    pub(super) erasures: AtomicU64,
    pub(super) last_erasure_ms: Mutex<u64>,
    /// Write errors of the storage layer.
    pub(super) write_errors: AtomicU64,
    /// Set by the first write error of the storage layer: why. The server then refuses
    /// writes and `/healthz` answers 503 until it is restarted.
    pub(super) failed: Mutex<Option<String>>,
    /// Requests refused by a limit, by the limit's name.
    pub(super) limited: Mutex<BTreeMap<&'static str, u64>>,
    /// Request-log entries whose query or reason was cut to fit.
    pub(super) log_truncated: AtomicU64,
}

/// The names of the limits a refusal's reason may name (see [`crate::Error::Limit`]).
pub(super) const LIMIT_NAMES: [&str; 6] = [
    "client_write_rate",
    "max_request_bytes",
    "max_properties",
    "max_value_bytes",
    "body_timeout",
    "max_properties_per_id",
];

impl Metrics {
    pub(super) fn count(&self, endpoint: &'static str, status: StatusCode) {
        *self
            .requests
            .lock()
            .entry((endpoint, status.as_u16()))
            .or_default() += 1;
    }
}

pub(super) async fn metrics(State(s): St) -> Response {
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
    let Some(store) = s.slot.try_get() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is being swapped by an erasure (or could not be reopened): try again",
        );
    };
    let (ids, persons) = store.counts();
    let guard = store.guardrails();
    let last_backup = *s.backups.last.lock();
    let backup = |i: usize| last_backup.map_or(0, |b| [b.0 as u64, b.1, b.2, b.3][i]);
    for (name, help, kind, v) in [
        (
            "idgraph_backups_total",
            "Backups taken (scheduled and GET /api/admin/backup) that completed.",
            "counter",
            s.backups.ok.load(Relaxed),
        ),
        (
            "idgraph_backups_failed_total",
            "Backups that failed (see the server's log for why).",
            "counter",
            s.backups.failed.load(Relaxed),
        ),
        (
            "idgraph_last_backup_timestamp_seconds",
            "When the last successful backup's cut was taken (Unix seconds; 0: none yet).",
            "gauge",
            backup(0),
        ),
        (
            "idgraph_last_backup_bytes",
            "The size of the last successful backup's file.",
            "gauge",
            backup(1),
        ),
        (
            "idgraph_last_backup_milliseconds",
            "How long the last successful backup took.",
            "gauge",
            backup(2),
        ),
        (
            "idgraph_last_backup_pause_microseconds",
            "How long the last successful backup paused writes (to install its cut).",
            "gauge",
            backup(3),
        ),
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
            "idgraph_erasures_total",
            "Compactions after a forget, so that no byte of a forgotten person stays on disk.",
            "counter",
            s.metrics.erasures.load(Relaxed),
        ),
        (
            "idgraph_last_erasure_milliseconds",
            "How long the last erasure paused writes.",
            "gauge",
            *s.metrics.last_erasure_ms.lock(),
        ),
        (
            "idgraph_store_write_errors_total",
            "Writes that failed at the storage layer (disk full, I/O error).",
            "counter",
            s.metrics.write_errors.load(Relaxed),
        ),
        (
            "idgraph_store_failed",
            "1 once a write failed at the storage layer: writes are refused until a restart.",
            "gauge",
            u64::from(s.metrics.failed.lock().is_some()),
        ),
        (
            "idgraph_suppressed_total",
            "Tracking ops dropped: they name a forgotten, suppressed ID.",
            "counter",
            s.metrics.suppressed.load(Relaxed),
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
