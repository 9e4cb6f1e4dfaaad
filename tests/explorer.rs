//! The person explorer (`/explore`, `assets/explore.html`) in a real headless Chromium:
//! search → person page → events → graph → explain → repairs (refused without the admin
//! token; with it, the person splits on the page and in the store; forget), hostile values
//! shown as text everywhere, and a person of 10,000 IDs and 100,000 events loading within a
//! bound.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Set
//! `IDGRAPH_SKIP_BROWSER=1` to skip on a machine without them.

mod common;

use std::time::{Duration, Instant};

use common::chromium::{start_browser, wanted};
use common::server::{Server, api, api_json, seg};
use fantoccini::{Client, Locator};
use idgraph::{BulkOptions, Cause, Identity, Op, Properties, Store};
use serde_json::{Value, json};

const ADMIN: &str = "test-admin-token";

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

async fn js(c: &Client, script: &str, args: Vec<Value>) -> Value {
    c.execute(script, args).await.unwrap()
}

/// Polls `script` (a function body returning a value) until it returns something truthy.
async fn wait_for(c: &Client, what: &str, script: &str, args: Vec<Value>) -> Value {
    let t = Instant::now();
    loop {
        let v = js(c, script, args.clone()).await;
        if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the person page to finish loading; returns the page's own measure (ms).
async fn loaded(c: &Client) -> u64 {
    wait_for(
        c,
        "the person page",
        "var m = document.getElementById('main').getAttribute('data-loaded-ms'); return m;",
        vec![],
    )
    .await
    .as_str()
    .unwrap()
    .parse()
    .unwrap()
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Hostile values: each would run script or break markup if the page used it as HTML.
const EVIL_ANON: &str = "anon-<img src=x onerror=window.pwned=1>";
const EVIL_NAMED: &str = "<script>window.pwned=2</script>\"'&";
const EVIL_EVENT: &str = "<img src=y onerror=window.pwned=3>";
const EVIL_VALUE: &str = "\"><svg onload=window.pwned=4>";

/// An anonymous ID in the KISSmetrics format.
const KM_ANON: &str = "0/iZakdrye0ra8yEym0AjmymzxM=";

/// alice@example.com, with KM_ANON and EVIL_ANON (identify), EVIL_NAMED (import), and a tail
/// alice — carol — dave joined through carol only, so unaliasing alice—carol splits off 2.
fn fill(s: &Store) {
    let props = Properties::new()
        .with("plan", "pro")
        .unwrap()
        .with("<b>note</b>", EVIL_VALUE)
        .unwrap();
    let ops = vec![
        Op::set(id("alice@example.com"), props, 150),
        // identify: the named ID first, the anonymous one (so marked) second.
        Op::alias(id("alice@example.com"), id(KM_ANON), 90, Cause::Identify),
        Op::alias(id("alice@example.com"), id(EVIL_ANON), 100, Cause::Identify),
        Op::alias(id(EVIL_NAMED), id("alice@example.com"), 200, Cause::Import),
        Op::alias(id("carol"), id("alice@example.com"), 300, Cause::Api),
        Op::alias(id("dave"), id("carol"), 400, Cause::Api),
        Op::record(
            id(EVIL_ANON),
            EVIL_EVENT,
            Properties::new().with("v", EVIL_VALUE).unwrap(),
            110,
        ),
        Op::record(id("alice@example.com"), "Signed Up", Properties::new(), 120),
        Op::record(id("dave"), "Signed Up", Properties::new(), 130),
        Op::alias(
            id("other@example.com"),
            id("someone@example.com"),
            500,
            Cause::Api,
        ),
    ];
    s.apply_batch(&ops).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_search_person_explain_and_repair() {
    if !wanted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    fill(&Store::open(&db).unwrap());
    let server = Server::start(&db, &["--admin-token", ADMIN]);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let (_driver, c, _profile) = start_browser().await;

    // The overview: counts from /metrics, the largest persons, recent IDs.
    c.goto(&format!("{base}/explore")).await.unwrap();
    wait_for(
        &c,
        "the overview's counts",
        "var e = document.getElementById('counts'); return e && e.textContent.indexOf('Persons') >= 0;",
        vec![],
    )
    .await;
    let counts = text_of(&c, "#counts").await;
    assert!(
        counts.contains("IDs\n8\n") && counts.contains("Persons\n2\n"),
        "{counts}"
    );
    wait_for(
        &c,
        "the hubs",
        "return document.querySelectorAll('#hubs li').length >= 2;",
        vec![],
    )
    .await;
    let hubs = text_of(&c, "#hubs").await;
    assert!(hubs.contains("alice@example.com — 6 IDs"), "{hubs}");

    // Search: the form on the page, then the person page.
    let q = c.find(Locator::Css("#q")).await.unwrap();
    q.send_keys(EVIL_ANON).await.unwrap();
    click(&c, "#search button").await;
    loaded(&c).await;
    assert_eq!(text_of(&c, "#canonical").await, "alice@example.com");
    let summary = text_of(&c, "#summary").await;
    assert!(
        summary.contains("6 IDs, 5 alias links, 3 events"),
        "{summary}"
    );
    assert!(summary.contains(EVIL_ANON), "{summary}");

    // Every hostile value is shown as text: IDs, event names, property names and values.
    let ids = text_of(&c, "#ids").await;
    for x in [EVIL_ANON, EVIL_NAMED, "carol", "dave"] {
        assert!(ids.contains(x), "{x} in {ids}");
    }
    assert!(
        ids.contains("anonymous") && ids.contains("named, canonical"),
        "{ids}"
    );
    // First seen: the time of the op that brought each ID (KM_ANON at 90 s, dave at 400 s).
    assert!(
        ids.contains("1970-01-01 00:01:30 UTC") && ids.contains("1970-01-01 00:06:40 UTC"),
        "{ids}"
    );
    let props = text_of(&c, "#properties").await;
    assert!(
        props.contains("<b>note</b>") && props.contains(EVIL_VALUE),
        "{props}"
    );
    let events = text_of(&c, "#events").await;
    assert!(
        events.contains(EVIL_EVENT) && events.contains(EVIL_VALUE),
        "{events}"
    );
    assert!(events.contains("Newest first: 1–3 of 3"), "{events}");

    // The events timeline: newest first, filter by name.
    let first_event = text_of(&c, "#events tbody tr:first-child").await;
    assert!(first_event.contains("dave"), "newest first: {first_event}");
    js(
        &c,
        "var s = document.getElementById('event-name'); s.value = 'Signed Up'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await;
    wait_for(
        &c,
        "the filtered events",
        "return document.getElementById('events').textContent.indexOf('1–2 of 2') >= 0;",
        vec![],
    )
    .await;
    assert!(!text_of(&c, "#events tbody").await.contains(EVIL_EVENT));

    // The graph: one node per ID, each link labelled with cause and date.
    let nodes = js(
        &c,
        "return document.querySelectorAll('#graph .node').length;",
        vec![],
    )
    .await;
    assert_eq!(nodes, json!(6));
    let labels = js(
        &c,
        "return Array.from(document.querySelectorAll('#graph .link-label')).map(function (t) { return t.textContent; });",
        vec![],
    )
    .await;
    assert_eq!(labels.as_array().unwrap().len(), 5, "{labels}");
    assert!(
        labels.to_string().contains("identify 1970-01-01"),
        "{labels}"
    );
    // Clicking an ID (here by the keyboard: Enter on the focused node) shows its links.
    js(
        &c,
        "var want = arguments[0]; var n = Array.from(document.querySelectorAll('#graph .node')).find(function (g) { return g.getAttribute('data-id') === want; }); \
         n.focus(); n.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));",
        vec![json!("carol")],
    )
    .await;
    let carol = text_of(&c, "#id-links").await;
    assert!(
        carol.contains("Links of carol") && carol.contains("dave"),
        "{carol}"
    );
    assert!(carol.contains("api, 1970-01-01 00:05:00 UTC"), "{carol}");

    // Why: the chain of links between two IDs.
    let a = c.find(Locator::Css("#why-a")).await.unwrap();
    a.clear().await.unwrap();
    a.send_keys(EVIL_ANON).await.unwrap();
    let b = c.find(Locator::Css("#why-b")).await.unwrap();
    b.clear().await.unwrap();
    b.send_keys("dave").await.unwrap();
    click(&c, "#why button").await;
    wait_for(
        &c,
        "the explanation",
        "return document.querySelectorAll('#why-out li').length;",
        vec![],
    )
    .await;
    let chain = text_of(&c, "#why-out").await;
    assert!(chain.contains("through 3 links"), "{chain}");

    // Nothing ran: no hostile markup became an element anywhere.
    let pwned = js(
        &c,
        "return [window.pwned === undefined, document.querySelectorAll('img, svg[onload], [onerror]').length];",
        vec![],
    )
    .await;
    assert_eq!(pwned, json!([true, 0]), "a hostile value became markup");

    // Repair without the admin token: the confirmation says what would change, the server
    // refuses, nothing changes.
    let unalias_carol = "var b = Array.from(document.querySelectorAll('#id-links button.unalias')).find(function (x) { \
                         return x.getAttribute('data-a') === 'carol' && x.getAttribute('data-b') === 'alice@example.com'; }); b.click();";
    js(&c, unalias_carol, vec![]).await;
    let confirm = text_of(&c, "#confirm").await;
    assert!(
        confirm.contains("splits into 2 persons of 4 and 2 IDs"),
        "{confirm}"
    );
    assert!(confirm.contains("No admin token"), "{confirm}");
    click(&c, "#confirm-yes").await;
    wait_for(
        &c,
        "the refusal",
        "return document.querySelector('#notice .error');",
        vec![],
    )
    .await;
    let refused = text_of(&c, "#notice").await;
    assert!(refused.contains("(401)"), "{refused}");
    let p = api_json(&http, &format!("{base}/api/people/carol")).await;
    assert_eq!(
        p["person"], "alice@example.com",
        "the read token repaired nothing"
    );

    // With the admin token (pasted once, kept for the tab): the person splits.
    click(&c, "#tokens summary").await;
    c.find(Locator::Css("#admin-token"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&c, "#token-form button").await;
    loaded(&c).await;
    js(
        &c,
        "Array.from(document.querySelectorAll('#ids a')).find(function (a) { return a.textContent === 'carol'; }).click();",
        vec![],
    )
    .await;
    js(&c, unalias_carol, vec![]).await;
    assert!(!text_of(&c, "#confirm").await.contains("No admin token"));
    click(&c, "#confirm-yes").await;
    wait_for(
        &c,
        "the split",
        "return document.getElementById('done');",
        vec![],
    )
    .await;
    let done = text_of(&c, "#done").await;
    assert!(done.contains("now 2 persons"), "{done}");
    let summary = text_of(&c, "#summary").await;
    assert!(summary.contains("4 IDs, 3 alias links"), "{summary}");
    // … and in the store.
    let carol = api_json(&http, &format!("{base}/api/people/carol")).await;
    assert_eq!(carol["ids"], json!(["carol", "dave"]));
    let alice = api_json(&http, &format!("{base}/api/people/{}", seg(EVIL_ANON))).await;
    assert_eq!(alice["ids"].as_array().unwrap().len(), 4);

    // Forget: the confirmation counts what goes; then the person is gone.
    c.goto(&format!("{base}/explore?id=dave")).await.unwrap();
    loaded(&c).await;
    click(&c, "#forget").await;
    let confirm = text_of(&c, "#confirm").await;
    assert!(
        confirm.contains("deletes 2 IDs, 1 alias link, 1 event and 0 properties"),
        "{confirm}"
    );
    click(&c, "#confirm-yes").await;
    wait_for(
        &c,
        "the forget",
        "return document.getElementById('done');",
        vec![],
    )
    .await;
    assert!(
        text_of(&c, "#done")
            .await
            .contains("Deleted 2 IDs, 1 link, 1 event")
    );
    assert_eq!(api(&http, &format!("{base}/api/people/dave")).await.0, 404);

    // An unknown ID says so.
    c.goto(&format!("{base}/explore?id=nobody")).await.unwrap();
    loaded(&c).await;
    assert!(text_of(&c, "main").await.contains("Unknown ID"));

    // A narrow window: nothing overflows the page sideways.
    c.set_window_size(360, 800).await.unwrap();
    c.goto(&format!("{base}/explore?id=alice@example.com"))
        .await
        .unwrap();
    loaded(&c).await;
    let overflow = js(
        &c,
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        vec![],
    )
    .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "scrolls sideways by {overflow}"
    );
    c.close().await.unwrap();
}

/// The explorer gets the read token by itself only on a loopback name; elsewhere the user
/// pastes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_token_only_for_loopback_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("db"), &[]);
    let http = reqwest::Client::new();
    let page = |host: &'static str| {
        let http = http.clone();
        let url = format!("{}/explore", server.base);
        async move {
            http.get(url)
                .header("Host", host)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let r = http
        .get(format!("{}/explore", server.base))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("object-src 'none'"),
        "{csp}"
    );
    let local = page("localhost").await;
    assert!(local.contains(&format!("var PAGE_TOKEN = \"{}\";", common::server::TOKEN)));
    let remote = page("evil.example").await;
    assert!(
        remote.contains("var PAGE_TOKEN = null;"),
        "no token for another name"
    );
    // Its API answers only with a token.
    let r = http
        .get(format!("{}/api/hubs", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    for bad in [
        "/api/hubs?top=0",
        "/api/refusals?limit=100000",
        "/api/people/x/timeline?limit=0",
    ] {
        let (st, body) = api(&http, &format!("{}{bad}", server.base)).await;
        assert_eq!(st, 400, "{bad}: {body}");
    }
}

/// A person of 10,000 IDs and 100,000 events: the page loads within a bound (the figure is in
/// BENCHMARKS.md), pages its IDs and events, and summarizes the graph instead of drawing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_of_ten_thousand_ids_loads_within_a_second() {
    if !wanted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let s = Store::open(&db).unwrap();
        let mut ops = Vec::new();
        for i in 1..10_000 {
            // A tree: each ID linked to an earlier one (degrees vary, depth stays small).
            ops.push(Op::alias(
                id(&format!("big-{i}")),
                id(&format!("big-{}", i / 7)),
                i,
                Cause::Import,
            ));
        }
        for e in 0..100_000i64 {
            ops.push(Op::record(
                id(&format!("big-{}", e % 10_000)),
                format!("Event {}", e % 5),
                Properties::new(),
                1_000_000 + e,
            ));
        }
        s.bulk_apply(&mut ops, BulkOptions::default()).unwrap();
    }
    let server = Server::start(&db, &[]);
    let base = server.base.clone();
    let (_driver, c, _profile) = start_browser().await;
    let mut times = Vec::new();
    for round in 0..3 {
        c.goto(&format!("{base}/explore?id=big-4321"))
            .await
            .unwrap();
        let ms = loaded(&c).await;
        times.push(ms);
        if round == 0 {
            let want = api_json(
                &reqwest::Client::new(),
                &format!("{base}/api/people/big-4321"),
            )
            .await;
            assert_eq!(
                text_of(&c, "#canonical").await,
                want["person"].as_str().unwrap()
            );
            let summary = text_of(&c, "#summary").await;
            assert!(
                summary.contains("10,000 IDs, 9,999 alias links, 100,000 events"),
                "{summary}"
            );
            assert!(text_of(&c, "#graph-summary").await.contains("Not drawn"));
            assert!(text_of(&c, "#ids").await.contains("IDs 1–100 of 10,000"));
            assert!(text_of(&c, "#events").await.contains("1–50 of 100,000"));
            assert_eq!(
                js(
                    &c,
                    "return document.querySelectorAll('#ids tbody tr').length;",
                    vec![]
                )
                .await,
                json!(100)
            );
        }
    }
    eprintln!("a person of 10,000 IDs and 100,000 events: loaded in {times:?} ms (browser time)");
    // The goal is 1 s, asserted in a release build (`cargo test --release --test explorer`,
    // the figure in BENCHMARKS.md); the server of a debug build (what `cargo test` runs)
    // answers ~10x slower, so it gets 5 s.
    let bound = if cfg!(debug_assertions) { 5000 } else { 1000 };
    let best = *times.iter().min().unwrap();
    assert!(best < bound, "loaded in {times:?} ms (bound {bound} ms)");
    c.close().await.unwrap();
}
