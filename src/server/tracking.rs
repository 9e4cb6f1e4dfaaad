//! `/e`, `/s`, `/a`: the KISSmetrics tracking endpoints.

use super::*;
use crate::ingest::km_http::{self as track, Endpoint};

/// The 1x1 transparent GIF every accepted tracking request gets, as KISSmetrics answers.
pub const GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Longest an over-budget request waits before its `429` (at most the time it would have to
/// wait anyway).
pub(super) const TARPIT: Duration = Duration::from_secs(1);

pub(super) type Peer = ConnectInfo<SocketAddr>;

pub(super) async fn track_e(
    s: St,
    p: Peer,
    m: Method,
    h: HeaderMap,
    q: RawQuery,
    b: Body,
) -> Response {
    track(Endpoint::Event, s, p, m, h, q, b).await
}

pub(super) async fn track_s(
    s: St,
    p: Peer,
    m: Method,
    h: HeaderMap,
    q: RawQuery,
    b: Body,
) -> Response {
    track(Endpoint::Set, s, p, m, h, q, b).await
}

pub(super) async fn track_a(
    s: St,
    p: Peer,
    m: Method,
    h: HeaderMap,
    q: RawQuery,
    b: Body,
) -> Response {
    track(Endpoint::Alias, s, p, m, h, q, b).await
}

/// A tracking request refused: its status, its one-line reason, the limit it went past (its
/// name, counted at `/metrics`), whether its body was left unread (the connection must close,
/// or the client would send its next request after bytes nobody reads), and for a `429` the
/// seconds until the client may come back.
struct Refused {
    status: StatusCode,
    reason: String,
    limit: Option<&'static str>,
    unread: bool,
    retry_after: Option<u64>,
}

impl Refused {
    fn new(status: StatusCode, reason: String) -> Self {
        Refused {
            status,
            reason,
            limit: None,
            unread: false,
            retry_after: None,
        }
    }

    /// Refused for going past the limit named `limit` (the reason ends with its name).
    fn limit(status: StatusCode, reason: String, limit: &'static str) -> Self {
        Refused {
            limit: Some(limit),
            ..Refused::new(status, reason)
        }
    }

    fn unread(mut self) -> Self {
        self.unread = true;
        self
    }
}

/// A tracking request: admitted by the client's write budget, its body read within the
/// limits, parsed into one op, applied by the writer thread; then counted, charged to the
/// client, logged, and answered (the GIF, or the reason it was refused).
pub(super) async fn track(
    ep: Endpoint,
    State(s): St,
    ConnectInfo(peer): Peer,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let mut raw = query.unwrap_or_default();
    let client = s.client(peer, &headers);
    let result = async {
        if let Some(why) = s.metrics.failed.lock().clone() {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the store failed ({why}): writes are refused until the server is restarted"
                ),
            )
            .unread());
        }
        admit(&s, client, &method).await?;
        read_form(&s, &method, &headers, body, &mut raw).await?;
        let params: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        let op = track::parse_op(
            ep,
            &params,
            &s.cfg.keys,
            &s.cfg.limits,
            crate::op::now(),
            || cut(format!("{method} /{}?{raw}", ep.as_str()), 300).0,
        )
        .map_err(|r| Refused {
            limit: r.limit,
            ..Refused::new(StatusCode::BAD_REQUEST, r.reason)
        })?;
        match s.writer.apply(op).await {
            Ok(applied) => Ok(applied),
            Err(Failed::ShuttingDown) => Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down".into(),
            )),
            Err(Failed::Store(e)) => Err(Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
            Err(Failed::Unknown) => {
                // Maybe applied: no answer at all rather than an error that may turn out
                // false (the connection closes at shutdown, or when the client gives up).
                std::future::pending::<()>().await;
                unreachable!("a pending future never completes")
            }
        }
    }
    .await;
    account(&s, ep, &method, client, raw, &result);
    match result {
        Ok((outcome, _)) => accepted(&outcome),
        Err(r) => refused(r),
    }
}

/// Admits a request within the client's write budget; an over-budget one is answered `429`,
/// late (a timer is all it holds: a client that retries at once would otherwise spend the
/// server's CPU on refusals as fast as it can send).
async fn admit(s: &AppState, client: IpAddr, method: &Method) -> std::result::Result<(), Refused> {
    let Err(wait) = s.budgets.admit(client, Instant::now()) else {
        return Ok(());
    };
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    tokio::time::sleep(wait.min(TARPIT)).await;
    let mut r = Refused::limit(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "this client has written more than its budget of {} bytes a second \
             ({} at once): retry in {secs} s (client_write_rate)",
            s.cfg.client_write_rate, s.cfg.client_write_burst
        ),
        "client_write_rate",
    );
    r.unread = *method == Method::POST;
    r.retry_after = Some(secs);
    Err(r)
}

/// Reads the body within the size and time limits and appends a POST's form to `raw`, the
/// query string.
async fn read_form(
    s: &AppState,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    raw: &mut String,
) -> std::result::Result<(), Refused> {
    let max = s.cfg.max_request_bytes;
    let too_large = || {
        Refused::limit(
            StatusCode::BAD_REQUEST,
            format!("the request is larger than the limit of {max} bytes (max_request_bytes)"),
            "max_request_bytes",
        )
    };
    let within = s.cfg.body_timeout;
    let body = match read_body(headers, body, max.saturating_sub(raw.len()), within).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(too_large().unread()),
        Err(BodyError::Slow) => {
            let why = format!(
                "the body did not arrive within {} s (body_timeout)",
                within.as_secs_f64()
            );
            return Err(Refused::limit(StatusCode::REQUEST_TIMEOUT, why, "body_timeout").unread());
        }
        Err(BodyError::Broken(e)) => return Err(Refused::new(StatusCode::BAD_REQUEST, e)),
    };
    if raw.len() + body.len() > max {
        return Err(too_large());
    }
    if *method == Method::POST && !body.is_empty() {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "a POST body must be application/x-www-form-urlencoded".to_string(),
            ));
        }
        let body = std::str::from_utf8(&body)
            .map_err(|_| Refused::new(StatusCode::BAD_REQUEST, "the body is not UTF-8".into()))?;
        if !raw.is_empty() {
            raw.push('&');
        }
        raw.push_str(body);
    }
    Ok(())
}

/// After a request: counts it (and the limit it went past), charges the client's budget
/// with what it sent and wrote (not for a request refused by the budget itself), and logs it.
fn account(
    s: &AppState,
    ep: Endpoint,
    method: &Method,
    client: IpAddr,
    raw: String,
    result: &std::result::Result<(Outcome, u64), Refused>,
) {
    let (status, reason, limit) = match result {
        Ok((outcome, _)) => {
            let limit = matches!(outcome, Outcome::PropertiesRefused { .. })
                .then_some("max_properties_per_id");
            (StatusCode::OK, outcome.refusal(), limit)
        }
        Err(r) => (r.status, Some(r.reason.clone()), r.limit),
    };
    s.metrics.count(ep.as_str(), status);
    match result {
        Ok((_, written)) => s
            .budgets
            .charge(client, raw.len() as u64 + written, Instant::now()),
        Err(r) if r.retry_after.is_none() => {
            let sent = if r.unread {
                s.cfg.max_request_bytes
            } else {
                raw.len()
            };
            s.budgets.charge(client, sent as u64, Instant::now());
        }
        Err(_) => {}
    }
    if let Some(limit) = limit {
        *s.metrics.limited.lock().entry(limit).or_default() += 1;
    }
    if s.cfg.request_log > 0 {
        s.log_request(method, ep, raw, status, reason);
    }
}

/// The answer to an accepted request: the GIF, and for a merge or properties refused by a
/// guardrail, why (still a success for the client, as KISSmetrics answers; the header is for
/// humans).
fn accepted(outcome: &Outcome) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
        ],
        GIF,
    )
        .into_response();
    if let Some(why) = outcome.refusal()
        && let Ok(v) = HeaderValue::from_str(&why.replace(['\r', '\n'], " "))
    {
        r.headers_mut().insert("x-idgraph-refused", v);
    }
    r
}

fn refused(r: Refused) -> Response {
    let mut resp = text(r.status, r.reason);
    if r.unread {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(secs) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
