//! Who may ask: the client a request is charged to, and the bearer tokens of the API.

use super::*;

/// Which token an `/api/` endpoint needs.
#[derive(Clone, Copy)]
pub(super) enum Access {
    /// The read token: queries.
    Read,
    /// The admin token: changes (unalias, forget).
    Admin,
}

impl AppState {
    /// The client a tracking request is charged to: the peer, or — from a trusted proxy —
    /// the rightmost `X-Forwarded-For` address that is not a trusted proxy itself.
    pub(super) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
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
    pub(super) fn deny(&self, headers: &HeaderMap, access: Access) -> Option<Response> {
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
    pub(super) async fn call(
        self: &Arc<Self>,
        headers: &HeaderMap,
        access: Access,
        f: impl FnOnce(&Store) -> Result<Response> + Send + 'static,
    ) -> Response {
        let r = match self.deny(headers, access) {
            Some(r) => r,
            None => {
                let slot = self.slot.clone();
                match tokio::task::spawn_blocking(move || f(&*slot.get()?)).await {
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

/// Whether `given` is `token`, in time that depends on neither the token's bytes nor its
/// length: both are hashed with a seed drawn once per process (so nobody can compute the digest
/// they must match) and the two 128-bit digests are compared whole.
pub(super) fn same_token(given: &str, token: &str) -> bool {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(rand::random);
    let h = |s: &str| xxhash_rust::xxh3::xxh3_128_with_seed(s.as_bytes(), seed);
    h(given) == h(token)
}

/// The read token a page served to this request may embed: only on a loopback address, and
/// only to a page loaded by a loopback name. (DNS rebinding: a page on evil.example whose name
/// now points at 127.0.0.1 reaches this server with `Host: evil.example`.)
pub(super) fn page_token(s: &AppState, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if s.cfg.demo_token && host.is_some_and(loopback_host) {
        s.cfg.read_token.clone()
    } else {
        None
    }
}
