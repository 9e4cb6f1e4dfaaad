//! The log of recent tracking requests and `/api/requests`.

use super::*;

/// One tracking request as `/api/requests` shows it.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Logged {
    pub(super) seq: u64,
    pub(super) method: String,
    pub(super) path: String,
    /// The query string as received (for a POST, the form body).
    pub(super) query: String,
    pub(super) status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
}

#[derive(Default)]
pub(super) struct RequestLog {
    pub(super) next: u64,
    pub(super) entries: VecDeque<Logged>,
}

/// `s` cut to at most `max` bytes (at a character boundary), marked with `…` when cut.
pub(super) fn cut(mut s: String, max: usize) -> (String, bool) {
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

#[derive(Deserialize)]
pub(super) struct After {
    pub(super) after: Option<u64>,
}

pub(super) async fn requests(State(s): St, headers: HeaderMap, Query(q): Query<After>) -> Response {
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

impl AppState {
    /// Adds a tracking request to the log (the oldest entry goes when it is full), its query
    /// and reason cut to [`LOG_QUERY_BYTES`] and [`LOG_REASON_BYTES`].
    pub(super) fn log_request(
        &self,
        method: &Method,
        ep: crate::ingest::km_http::Endpoint,
        raw: String,
        status: StatusCode,
        reason: Option<String>,
    ) {
        let (query, q_cut) = cut(raw, LOG_QUERY_BYTES);
        let (reason, r_cut) = match reason {
            Some(r) => {
                let (r, c) = cut(r, LOG_REASON_BYTES);
                (Some(r), c)
            }
            None => (None, false),
        };
        if q_cut || r_cut {
            self.metrics.log_truncated.fetch_add(1, Relaxed);
        }
        let mut log = self.log.lock();
        let seq = log.next;
        log.next += 1;
        if log.entries.len() == self.cfg.request_log {
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
}

impl AppState {
    /// Removes from the request log every entry whose query names one of `ids` (as a
    /// parameter's value, decoded, or anywhere in the raw text).
    pub(super) fn scrub_log(&self, ids: &[String]) {
        let names = |q: &str| {
            ids.iter().any(|id| q.contains(id.as_str()))
                || form_urlencoded::parse(q.as_bytes()).any(|(_, v)| ids.iter().any(|id| *id == v))
        };
        let mut log = self.log.lock();
        log.entries
            .retain(|e| !names(&e.query) && !e.reason.as_deref().is_some_and(names));
    }
}
