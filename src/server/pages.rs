//! The browser side: the tracker (`/km.js`, the snippet's scripts), the demo page and the
//! person explorer, with their Content-Security-Policy.

use super::*;

/// The browser tracker, served at `/km.js`.
pub const KM_JS: &str = include_str!("../../assets/km.js");

pub(super) const DEMO_HTML: &str = include_str!("../../assets/demo.html");

/// The person explorer (`/explore`): plain HTML, CSS and JavaScript, no build step.
pub(super) const EXPLORE_HTML: &str = include_str!("../../assets/explore.html");

pub(super) async fn km_js() -> Response {
    script(KM_JS)
}

/// A script response (200, so that a browser runs it). km.js goes out as the `&'static str`
/// compiled into the binary, without a copy per request.
pub(super) fn script(body: impl Into<axum::body::Body>) -> Response {
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
pub(super) fn snippet_script(s: &AppState, path: &str) -> Option<Response> {
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

/// What the explorer may load and run: this origin only (no plug-ins, no framing).
pub(super) const EXPLORE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'";

/// `html` with its `"{{TOKEN}}"` replaced by the page's token (JSON: a string or null), and its
/// Content-Security-Policy when it has one.
pub(super) fn page(
    html: &str,
    s: &AppState,
    headers: &HeaderMap,
    csp: Option<&'static str>,
) -> Response {
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

pub(super) async fn demo(State(s): St, headers: HeaderMap) -> Response {
    page(DEMO_HTML, &s, &headers, None)
}

/// The person explorer. It holds no data: it asks the query API with the read token (embedded
/// as for the demo page, or pasted by the user) and repairs with the admin token (pasted).
pub(super) async fn explore(State(s): St, headers: HeaderMap) -> Response {
    page(EXPLORE_HTML, &s, &headers, Some(EXPLORE_CSP))
}

/// Whether a `Host` header names this machine by a loopback name: `localhost` (or a name
/// under `.localhost`), `127.x.y.z` or `[::1]`, with or without a port.
pub(super) fn loopback_host(host: &str) -> bool {
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
