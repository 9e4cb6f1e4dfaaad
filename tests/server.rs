//! `idgraph serve` over HTTP: every endpoint, both methods, every kind of bad input, the query
//! API's auth, metrics, graceful shutdown (data flushed, store reopens) and `--sync`
//! durability under kill -9.

mod common;

use std::time::Duration;

use common::server::{Server, TOKEN, api, api_json, seg};
use idgraph::Store;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(c: &reqwest::Client, url: &str) -> reqwest::Response {
    c.get(url).send().await.expect("request")
}

async fn metric(c: &reqwest::Client, base: &str, line_prefix: &str) -> u64 {
    let m = get(c, &format!("{base}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn tracking_endpoints_accept_get_and_post_in_every_client_format() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &["--key", "k1", "--key", "k2"]);
    let c = http();
    let b = &s.base;
    // Browser tracker: `_t` without `_d` is ignored (receive time).
    let r = get(
        &c,
        &format!("{b}/e?plan=pro&_n=Viewed%20Pricing&_k=k1&_p=anon%2B1%3D&_t=5"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(r.bytes().await.unwrap().as_ref(), idgraph::server::GIF);
    // Python py-KISSmetrics: `_d=1&_t` applies the time; POST with a form body.
    let r = c
        .post(format!("{b}/e"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_k=k2&_p=bob&_n=Signed+Up&source=ad&_d=1&_t=1234567890")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Ruby km: `/a?_n=alias_to&_p=name&_d=1&_t`.
    let r = get(
        &c,
        &format!("{b}/a?_n=anon%2B1%3D&_p=bob&_k=k1&_d=1&_t=1234567891"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{b}/s?_k=k1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_p=bob&city=Oslo&_t=9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get(
        &c,
        &format!("{b}/s?_k=k1&_p=bob&Plan=max&_d=1&_t=2000000000"),
    )
    .await;
    assert_eq!(r.status(), 200);

    let p = api_json(&c, &format!("{b}/api/people/{}", seg("anon+1="))).await;
    assert_eq!(p["person"], "anon+1=");
    assert_eq!(p["ids"], serde_json::json!(["anon+1=", "bob"]));
    assert_eq!(p["properties"]["plan"], "max", "{p}"); // latest set wins, first spelling
    assert_eq!(p["properties"]["city"], "Oslo");
    assert_eq!(p["properties"]["source"], "ad");
    let ev = api_json(&c, &format!("{b}/api/people/bob/events")).await;
    let names: Vec<(&str, i64)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["at"].as_i64().unwrap()))
        .collect();
    assert_eq!(names[0], ("Signed Up", 1_234_567_890));
    assert_eq!(names[1].0, "Viewed Pricing");
    assert!(names[1].1 > 1_700_000_000, "receive time, not _t=5");
    let links = api_json(&c, &format!("{b}/api/people/bob/links")).await;
    assert_eq!(links["links"][0]["cause"], "api");
    assert_eq!(links["links"][0]["at"], 1_234_567_891);
    assert!(
        links["links"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("GET /a?")
    );

    assert_eq!(
        metric(
            &c,
            b,
            "idgraph_requests_total{endpoint=\"e\",status=\"200\"}"
        )
        .await,
        2
    );
    assert_eq!(metric(&c, b, "idgraph_ops_applied_total").await, 5);
    assert_eq!(metric(&c, b, "idgraph_merges_total").await, 1);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn bad_requests_get_400_with_a_reason_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &["--key", "k1"]);
    let c = http();
    let b = &s.base;
    let long = "x".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        ("/e?_p=a1&_n=E".to_string(), "missing _k"),
        ("/e?_k=demo&_p=a2&_n=E".to_string(), "unknown API key"),
        ("/e?_k=k1&_n=E".to_string(), "missing _p"),
        ("/e?_k=k1&_p=a3".to_string(), "missing _n"),
        ("/a?_k=k1&_p=a4".to_string(), "missing _n"),
        ("/a?_k=k1&_p=a5&_n=".to_string(), "_n: invalid ID"),
        (format!("/e?_k=k1&_p={long}&_n=E"), "_p: invalid ID"),
        (
            "/e?_k=k1&_p=a6&_n=E&_t=yesterday".to_string(),
            "_t \"yesterday\"",
        ),
        ("/e?_k=k1&_p=a7&_n=E&_d=1".to_string(), "_d=1 needs _t"),
        ("/s?_k=k1&_p=a8".to_string(), "at least one property"),
        ("/e?_k=k1&_p=a9&_n=%07bell".to_string(), "event name"),
        ("/s?_k=k1&_p=a10&%00=x".to_string(), "property name"),
    ];
    for (path, why) in &cases {
        let r = get(&c, &format!("{b}{path}")).await;
        assert_eq!(r.status(), 400, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(why), "{path}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "{path}: one line");
    }
    let r = c
        .post(format!("{b}/e"))
        .header("content-type", "application/json")
        .body(r#"{"_k":"k1","_p":"a11","_n":"E"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("x-www-form-urlencoded"));
    for i in 1..=11 {
        let (st, _) = api(&c, &format!("{b}/api/people/a{i}")).await;
        assert_eq!(st, 404, "a{i} must not be stored");
    }
    let e400 = metric(
        &c,
        b,
        "idgraph_requests_total{endpoint=\"e\",status=\"400\"}",
    )
    .await;
    let s400 = metric(
        &c,
        b,
        "idgraph_requests_total{endpoint=\"s\",status=\"400\"}",
    )
    .await;
    let a400 = metric(
        &c,
        b,
        "idgraph_requests_total{endpoint=\"a\",status=\"400\"}",
    )
    .await;
    assert_eq!((e400, s400, a400), (9, 2, 2)); // 8 GET + the JSON POST to /e
    assert_eq!(metric(&c, b, "idgraph_ops_applied_total").await, 0);
    let log = api_json(&c, &format!("{b}/api/requests")).await;
    assert_eq!(log["requests"].as_array().unwrap().len(), 13);
    assert!(
        log["requests"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("missing _k")
    );
    assert!(s.terminate().success());
}

/// The limits of #14: each hostile request is refused with a reason naming the limit it broke,
/// stores nothing, is counted by limit in `/metrics`, and the request log keeps a bounded copy.
#[tokio::test]
async fn hostile_requests_hit_limits_that_name_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &["--key", "k1"]);
    let c = http();
    let b = &s.base;
    let post = |body: String| {
        c.post(format!("{b}/e"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // 20,000 property names in 169 KB took 9 s of a core before the limits: now refused at
    // once, by the body size, and under a larger body limit by the property count.
    let names: String = (0..20_000).map(|i| format!("&p{i}=v")).collect();
    let r = post(format!("_k=k1&_p=h1&_n=E{names}")).await.unwrap();
    assert_eq!(r.status(), 400);
    let why = r.text().await.unwrap();
    assert!(why.contains("(max_request_bytes)"), "{why}");
    let some: String = (0..300).map(|i| format!("&p{i}=v")).collect();
    let r = post(format!("_k=k1&_p=h2&_n=E{some}")).await.unwrap();
    assert_eq!(r.status(), 400);
    let why = r.text().await.unwrap();
    assert!(
        why.contains("300 properties in one op, more than the limit of 256 (max_properties)"),
        "{why}"
    );
    let big = "v".repeat(9000);
    let r = get(&c, &format!("{b}/s?_k=k1&_p=h3&note={big}")).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("(max_value_bytes)"));
    // A request's own parameters can't be given twice (a property named `_p` from a careless
    // or hostile page would otherwise pick the ID).
    let r = get(&c, &format!("{b}/e?_k=k1&_n=Buy&_p=h4&_p=someone")).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("_p is given twice"));
    // A time before 1970 is refused, as the importer refuses it (so exports re-import).
    let r = get(&c, &format!("{b}/e?_k=k1&_n=E&_p=h5&_t=-1&_d=1")).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("before 1970"));
    for id in ["h1", "h2", "h3", "h4", "h5", "someone"] {
        let (st, _) = api(&c, &format!("{b}/api/people/{id}")).await;
        assert_eq!(st, 404, "{id} must not be stored");
    }
    for (limit, n) in [
        ("max_request_bytes", 1),
        ("max_properties", 1),
        ("max_value_bytes", 1),
    ] {
        let line = format!("idgraph_limited_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&c, b, &line).await, n, "{limit}");
    }
    // The log keeps a bounded copy of each request: 400 requests of ~1.9 MB once took the
    // server to 2.1 GB.
    let log = api_json(&c, &format!("{b}/api/requests")).await;
    let entries = log["requests"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{entries:?}");
    for e in entries {
        assert!(e["query"].as_str().unwrap().len() <= idgraph::server::LOG_QUERY_BYTES + 3);
    }
    assert!(metric(&c, b, "idgraph_request_log_truncated_total").await >= 2);
    // Under the limits, a request with the most properties allowed is stored whole.
    let most: String = (0..256).map(|i| format!("&p{i}=v")).collect();
    let r = post(format!("_k=k1&_p=h6&_n=E{most}")).await.unwrap();
    assert_eq!(r.status(), 200);
    // Names pile up on one ID across requests only to --max-properties-per-id (1,024): the
    // request past it is stored, told so, and counted.
    for round in 1..5 {
        let more: String = (0..256).map(|i| format!("&r{round}_{i}=v")).collect();
        let r = post(format!("_k=k1&_p=h6&_n=E{round}{more}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let refused = r
            .headers()
            .get("x-idgraph-refused")
            .map(|v| v.to_str().unwrap().to_owned());
        if round < 4 {
            assert_eq!(refused, None);
        } else {
            let refused = refused.unwrap();
            assert!(
                refused.starts_with("256 property names not kept"),
                "{refused}"
            );
        }
    }
    let line = "idgraph_limited_total{limit=\"max_properties_per_id\"}";
    assert_eq!(metric(&c, b, line).await, 1);
    assert!(s.terminate().success());
    let store = Store::open(dir.path().join("db")).unwrap();
    assert_eq!(store.properties("h6").unwrap().len(), 1024);
    assert_eq!(store.events("h6").unwrap().len(), 5);
}

#[tokio::test]
async fn query_api_needs_the_token_and_404s_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &[]);
    let c = http();
    let b = &s.base;
    assert_eq!(
        get(&c, &format!("{b}/e?_k=demo&_p=u1&_n=E")).await.status(),
        200
    );
    let url = format!("{b}/api/people/u1");
    let r = get(&c, &url).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .get(&url)
        .header("Authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The scheme is case-insensitive; a prefix or an extension of the token is not the token.
    for (auth, want) in [
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER  {TOKEN} "), 200),
        (format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]), 401),
        (format!("Bearer {TOKEN}x"), 401),
        (format!("Basic {TOKEN}"), 401),
    ] {
        let r = c
            .get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{auth}");
    }
    for u in [
        format!("{b}/api/people/u1/events"),
        format!("{b}/api/people/u1/links"),
        format!("{b}/api/requests"),
    ] {
        assert_eq!(get(&c, &u).await.status(), 401, "{u}");
    }
    assert_eq!(api(&c, &url).await.0, 200);
    assert_eq!(api(&c, &format!("{b}/api/people/nobody")).await.0, 404);
    assert_eq!(
        api(&c, &format!("{b}/api/people/nobody/events")).await.0,
        404
    );
    assert_eq!(get(&c, &format!("{b}/nope")).await.status(), 404);
    // healthz, km.js, and the demo page: loopback, so it holds the token.
    assert_eq!(get(&c, &format!("{b}/healthz")).await.status(), 200);
    let js = get(&c, &format!("{b}/km.js")).await;
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(js.text().await.unwrap().contains("trackSubmit"));
    let demo = get(&c, &format!("{b}/")).await.text().await.unwrap();
    assert!(demo.contains("src=\"/km.js\""));
    assert!(
        demo.contains(&format!("var READ_TOKEN = \"{TOKEN}\"")),
        "{demo}"
    );
    assert!(demo.contains("var _kmk = _kmk || \"demo\""));
    // DNS rebinding: a page served under another name gets no token.
    let rebound = c
        .get(format!("{b}/"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(rebound.contains("var READ_TOKEN = null"), "{rebound}");
    assert!(
        s.banner
            .iter()
            .any(|l| l.contains("accepting the API key \"demo\"")),
        "{:?}",
        s.banner
    );
    assert!(s.terminate().success());

    // An empty token is refused at start (anybody could present it).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(dir.path().join("db"))
        .args(["serve", "--addr", "127.0.0.1:0", "--read-token", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--read-token must not be empty"));
    // --no-demo: no page at /.
    let s = Server::start(&dir.path().join("db"), &["--no-demo"]);
    assert_eq!(get(&c, &format!("{}/", s.base)).await.status(), 404);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn query_api_is_off_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(&dir.path().join("db"), &["--no-demo"], false);
    let c = http();
    let r = get(&c, &format!("{}/api/people/x", s.base)).await;
    let status = r.status().as_u16();
    assert!(r.text().await.unwrap().contains("--read-token"));
    assert!(
        s.banner.iter().any(|l| l.contains("query API off")),
        "{:?}",
        s.banner
    );
    assert_eq!(status, 403);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn blocked_ids_are_refused_but_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &["--max-refusals-logged", "1"]);
    let c = http();
    let b = &s.base;
    for who in ["ann", "ben"] {
        let r = get(&c, &format!("{b}/e?_k=demo&_p={who}&_n=Visited")).await;
        assert_eq!(r.status(), 200);
        let r = get(&c, &format!("{b}/a?_k=demo&_p={who}&_n=guest")).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["x-idgraph-refused"]
                .to_str()
                .unwrap()
                .contains("blocked")
        );
    }
    let p = api_json(&c, &format!("{b}/api/people/ann")).await;
    assert_eq!(p["ids"], serde_json::json!(["ann"]));
    assert_eq!(metric(&c, b, "idgraph_merges_refused_total").await, 2);
    // The refusal log holds one pair; the second was refused all the same, only counted.
    assert_eq!(metric(&c, b, "idgraph_refusals_logged").await, 1);
    assert_eq!(metric(&c, b, "idgraph_refusals_not_logged_total").await, 1);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_flushes_and_releases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let s = Server::start(&db, &[]);
    let c = http();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (c, b) = (c.clone(), s.base.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let r = get(&c, &format!("{b}/e?_k=demo&_p=p{t}&_n=E{i}")).await;
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let status = s.terminate();
    assert!(status.success(), "{status}");
    let store = Store::open(&db).expect("the store is released and reopens");
    for t in 0..8 {
        assert_eq!(store.events(&format!("p{t}")).unwrap().len(), 50);
    }
    assert!(store.verify().unwrap().is_ok());
}

/// With `--sync`, everything acknowledged survives a kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_loses_nothing_acknowledged_under_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    for round in 0..3 {
        let s = Server::start(&db, &["--sync"]);
        let c = http();
        let acked = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<(String, String)>::new()));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (c, b, acked) = (c.clone(), s.base.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let (id, ev) = (format!("r{round}t{t}"), format!("E{i}"));
                    let url = if i % 5 == 4 {
                        format!("{b}/a?_k=demo&_p={id}&_n={id}-alias{i}")
                    } else {
                        format!("{b}/e?_k=demo&_p={id}&_n={ev}")
                    };
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let what = if i % 5 == 4 {
                                format!("{id}-alias{i}")
                            } else {
                                ev
                            };
                            acked.lock().push((id, what));
                        }
                        _ => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700 + 200 * round)).await;
        s.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let acked = acked.lock().clone();
        assert!(
            acked.len() > 16,
            "round {round}: only {} acknowledged",
            acked.len()
        );
        let store = Store::open(&db).expect("reopen after kill -9");
        for (id, what) in &acked {
            if what.contains("-alias") {
                assert_eq!(
                    store.canonical(what).unwrap(),
                    store.canonical(id).unwrap(),
                    "round {round}: {what}"
                );
            } else {
                assert!(
                    store.events(id).unwrap().iter().any(|e| &e.event == what),
                    "round {round}: acknowledged {id} {what} is missing"
                );
            }
        }
        assert!(store.verify().unwrap().is_ok(), "round {round}");
    }
}

#[test]
fn demo_page_token_only_on_loopback() {
    use idgraph::server::demo_may_hold_token;
    assert!(demo_may_hold_token("127.0.0.1:80".parse().unwrap()));
    assert!(demo_may_hold_token("[::1]:80".parse().unwrap()));
    assert!(!demo_may_hold_token("0.0.0.0:80".parse().unwrap()));
    assert!(!demo_may_hold_token("192.168.1.5:80".parse().unwrap()));
}

/// `/api/explain` and `/api/people/{id}/graph` with the read token; `POST /api/unalias` and
/// `DELETE /api/people/{id}` only with the admin token.
#[tokio::test]
async fn explain_graph_unalias_and_forget_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &["--admin-token", "admin-secret"]);
    let c = http();
    let b = &s.base;
    for q in [
        "/a?_k=demo&_p=anon1&_n=bob&_d=1&_t=100",
        "/a?_k=demo&_p=bob&_n=bob%40work&_d=1&_t=200",
        "/e?_k=demo&_p=bob%40work&_n=Paid",
    ] {
        assert_eq!(get(&c, &format!("{b}{q}")).await.status(), 200);
    }
    let e = api_json(
        &c,
        &format!("{b}/api/explain?a=anon1&b={}", seg("bob@work")),
    )
    .await;
    assert_eq!(e["same_person"], true);
    assert_eq!(e["edges"][0]["a"], "anon1");
    assert_eq!(e["edges"][1]["b"], "bob@work");
    assert_eq!(e["edges"][1]["at"], 200);
    assert_eq!(
        api(&c, &format!("{b}/api/explain?a=anon1&b=nobody"))
            .await
            .0,
        404
    );
    assert_eq!(api(&c, &format!("{b}/api/explain?a=anon1")).await.0, 400);
    let (st, dot) = api(&c, &format!("{b}/api/people/bob/graph?format=dot")).await;
    assert_eq!(st, 200);
    assert!(dot.contains("\"bob@work\" -- \"bob\""), "{dot}");
    let (st, svg) = api(&c, &format!("{b}/api/people/bob/graph")).await;
    assert_eq!(st, 200);
    assert!(svg.contains("<svg"));

    // Changes need the admin token: the read token is not enough.
    let url = format!("{b}/api/unalias?a=bob&b={}", seg("bob@work"));
    let with = |tok: &str| {
        c.post(&url)
            .header("Authorization", format!("Bearer {tok}"))
    };
    assert_eq!(with(TOKEN).send().await.unwrap().status(), 401);
    let r = with("admin-secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["persons"].as_array().unwrap().len(), 2);
    assert_eq!(with("admin-secret").send().await.unwrap().status(), 404);
    let p = api_json(&c, &format!("{b}/api/people/{}", seg("bob@work"))).await;
    assert_eq!(p["ids"], serde_json::json!(["bob@work"]));

    let del = |tok: &str| {
        c.delete(format!("{b}/api/people/anon1"))
            .header("Authorization", format!("Bearer {tok}"))
            .send()
    };
    assert_eq!(del(TOKEN).await.unwrap().status(), 401);
    let r = del("admin-secret").await.unwrap();
    assert_eq!(r.status(), 200);
    let f: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(f["ids"], serde_json::json!(["bob", "anon1"]));
    assert_eq!(api(&c, &format!("{b}/api/people/bob")).await.0, 404);
    assert_eq!(del("admin-secret").await.unwrap().status(), 404);
    assert!(s.terminate().success());

    // Without --admin-token the change endpoints are off.
    let s = Server::start(&dir.path().join("db"), &[]);
    let r = c
        .post(format!("{}/api/unalias?a=x&b=y", s.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("--admin-token"));
    let store_ok = s.terminate().success();
    assert!(store_ok);
    let store = Store::open(dir.path().join("db")).unwrap();
    assert!(
        store.resolve("anon1").unwrap().is_none(),
        "forget is durable"
    );
    assert!(store.verify().unwrap().is_ok());
}

/// The standard KISSmetrics snippet loads `//HOST/i.js` and `//HOST/<KEY>.2.js`: with the host
/// names pointed at idgraph, both answer with a script (the tracker for an accepted key), and an
/// unknown key gets a script that warns in the console, counted as a refused script request.
#[tokio::test]
async fn the_kissmetrics_snippet_paths_serve_the_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), &["--key", "k1", "--no-demo"]);
    let c = reqwest::Client::new();
    let b = &s.base;
    let tracker = get(&c, &format!("{b}/k1.2.js")).await;
    assert_eq!(tracker.status(), 200);
    assert!(
        tracker.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    assert_eq!(tracker.text().await.unwrap(), idgraph::server::KM_JS);
    let i = get(&c, &format!("{b}/i.js")).await;
    assert_eq!(i.status(), 200);
    assert!(i.text().await.unwrap().starts_with("/*"));
    let other = get(&c, &format!("{b}/nope%22x.2.js")).await;
    assert_eq!(
        other.status(),
        200,
        "a script, so that the browser runs the warning"
    );
    let body = other.text().await.unwrap();
    assert!(
        body.contains("console.warn") && body.contains("not accepted"),
        "{body}"
    );
    // The key is quoted twice (a JSON string inside a JS string): it cannot break out.
    assert!(body.contains(r#"\"nope\\\"x\""#), "{body}");
    assert_eq!(
        metric(
            &c,
            b,
            "idgraph_requests_total{endpoint=\"script\",status=\"403\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &c,
            b,
            "idgraph_requests_total{endpoint=\"script\",status=\"200\"}"
        )
        .await,
        2
    );
    assert_eq!(get(&c, &format!("{b}/k1.3.js")).await.status(), 404);
}

/// Writes `bytes` on a fresh loopback connection to the server and returns the stream.
fn raw(s: &Server, bytes: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    c.write_all(bytes.as_bytes()).unwrap();
    c
}

/// What the server sends on `c` until it closes the connection or `wait` passes.
fn answer(c: &mut std::net::TcpStream, wait: Duration) -> String {
    use std::io::Read;
    c.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("db"),
        &[
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--max-connections",
            "3",
            "--shutdown-grace",
            "1s",
        ],
    );
    // Headers that never end: the connection is closed after the header timeout.
    let mut slow = raw(&s, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let t = std::time::Instant::now();
    let got = answer(&mut slow, Duration::from_secs(15));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!got.contains("200 OK"), "{got}");
    // A body that never ends: 408 naming the limit, after the body timeout.
    let mut slow = raw(
        &s,
        "POST /e HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 100\r\n\r\n_k=demo&_p=slow",
    );
    let got = answer(&mut slow, Duration::from_secs(15));
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("(body_timeout)"), "{got}");
    // A declared body past the limit is refused before it is read.
    let mut big = raw(
        &s,
        "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    );
    let got = answer(&mut big, Duration::from_secs(15));
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("(max_request_bytes)"), "{got}");

    // Three connections in use: a fourth waits until one of them closes.
    let held: Vec<_> = (0..3)
        .map(|_| raw(&s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    let mut held: Vec<_> = held
        .into_iter()
        .map(|mut c| {
            assert!(answer(&mut c, Duration::from_secs(5)).contains("200 OK"));
            c
        })
        .collect();
    let mut fourth = raw(&s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let early = answer(&mut fourth, Duration::from_millis(300));
    assert_eq!(early, "", "served past --max-connections");
    held.pop();
    let got = answer(&mut fourth, Duration::from_secs(5));
    assert!(got.contains("200 OK"), "{got}");
    drop(held);

    // An acknowledged request, then a client stuck in a body: shutdown does not wait for it
    // past the grace period, and what was acknowledged is stored.
    let mut ok = raw(
        &s,
        "GET /e?_k=demo&_p=kept&_n=E HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(answer(&mut ok, Duration::from_secs(5)).contains("200 OK"));
    let _stuck = raw(
        &s,
        "POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n_k=demo",
    );
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    assert!(s.terminate().success());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let store = Store::open(dir.path().join("db")).unwrap();
    assert_eq!(store.events("kept").unwrap().len(), 1);
}

#[test]
fn the_demo_key_beyond_loopback_is_announced_loudly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_idgraph"))
        .arg("--db")
        .arg(dir.path().join("db"))
        .args(["serve", "--addr", "0.0.0.0:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("WARNING") && line.contains("\"demo\"") && line.contains("--key"),
        "{line}"
    );
}

/// A client bound to `ip` (any address of 127/8 is loopback on Linux): another client.
fn http_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_past_its_write_budget_gets_429_and_the_others_do_not_notice() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("db"),
        &[
            "--key",
            "k1",
            "--client-write-rate",
            "50000",
            "--client-write-burst",
            "100000",
            "--trusted-proxy",
            "127.0.0.4",
        ],
    );
    let b = &s.base;
    let fat = |c: &reqwest::Client, id: &str, xff: Option<&str>| {
        // 200 values of 150 bytes: ~32 KB sent, ~35 KB of record rewritten.
        let props: String = (0..200)
            .map(|i| format!("&p{i}={}", "v".repeat(150)))
            .collect();
        let mut r = c
            .post(format!("{b}/s"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("_k=k1&_p={id}{props}"));
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        r.send()
    };
    let (heavy, other) = (http_from("127.0.0.2"), http_from("127.0.0.3"));
    assert_eq!(fat(&heavy, "h1", None).await.unwrap().status(), 200);
    assert_eq!(fat(&heavy, "h1", None).await.unwrap().status(), 200);
    // ~135 KB spent of a 100 KB burst: refused before its body is read, nothing stored.
    let r = fat(&heavy, "h2", None).await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&wait), "{wait}");
    let why = r.text().await.unwrap();
    assert!(why.ends_with("(client_write_rate)\n"), "{why}");
    let (st, _) = api(&http(), &format!("{b}/api/people/h2")).await;
    assert_eq!(st, 404, "a refused request stores nothing");
    // Another client is served as before.
    assert_eq!(fat(&other, "o1", None).await.unwrap().status(), 200);
    let line = "idgraph_limited_total{limit=\"client_write_rate\"}";
    assert_eq!(metric(&http(), b, line).await, 1);
    assert!(metric(&http(), b, "idgraph_client_budgets").await >= 2);
    // Behind a trusted proxy, each forwarded client has its own budget; an untrusted peer's
    // X-Forwarded-For is ignored (it can't spend someone else's budget, nor escape its own).
    let proxy = http_from("127.0.0.4");
    for _ in 0..2 {
        let r = fat(&proxy, "x1", Some("198.51.100.1, 203.0.113.9")).await;
        assert_eq!(r.unwrap().status(), 200);
    }
    let r = fat(&proxy, "x1", Some("198.51.100.1, 203.0.113.9")).await;
    assert_eq!(r.unwrap().status(), 429);
    let r = fat(&proxy, "x2", Some("203.0.113.10")).await;
    assert_eq!(r.unwrap().status(), 200);
    let stranger = http_from("127.0.0.5");
    let r = fat(&stranger, "x3", Some("203.0.113.10")).await;
    assert_eq!(r.unwrap().status(), 200);
    // The debt drains at the rate: after Retry-After the client is served again.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    assert_eq!(fat(&heavy, "h2", None).await.unwrap().status(), 200);
    assert!(s.terminate().success());
    let store = Store::open(dir.path().join("db")).unwrap();
    for id in ["h1", "h2", "o1", "x1", "x2", "x3"] {
        assert_eq!(store.properties(id).unwrap().len(), 200, "{id}");
    }
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share_of_connections() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("db"),
        &["--max-connections-per-client", "3"],
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{}", s.port()).parse().unwrap();
    let connect = |from: [u8; 4]| async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((std::net::Ipv4Addr::from(from), 0).into())
            .unwrap();
        let c = sock.connect(to).await.unwrap().into_std().unwrap();
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    };
    // Whether the server answers a request on `c` (a closed connection reads 0 bytes or fails).
    let served = |mut c: std::net::TcpStream| async move {
        tokio::task::spawn_blocking(move || {
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf);
            buf.starts_with(b"HTTP/1.1 200")
        })
        .await
        .unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect([127, 0, 0, 6]).await);
    }
    // Give the server the time to accept them, then one more from the same client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !served(connect([127, 0, 0, 6]).await).await,
        "a 4th is closed"
    );
    assert!(
        served(connect([127, 0, 0, 7]).await).await,
        "another client is served"
    );
    // A closed connection frees its place.
    assert!(served(held.pop().unwrap()).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(served(connect([127, 0, 0, 6]).await).await);
    let refused = metric(&http(), &s.base, "idgraph_connections_refused_total").await;
    assert_eq!(refused, 1);
    assert!(s.terminate().success());
}
