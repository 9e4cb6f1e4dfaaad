//! The JSON query API (`/api/people/...`, `/api/explain`, `/api/hubs`, `/api/refusals`)
//! and the admin API (`POST /api/unalias`, `DELETE /api/people/{id}`).

use super::*;
use rustc_hash::{FxHashMap, FxHashSet};

/// Most events one page of `/api/people/{id}/timeline` holds.
pub const MAX_TIMELINE_PAGE: usize = 1000;

/// Most entries `/api/hubs` and `/api/refusals` list.
pub const MAX_LIST: usize = 1000;

pub(super) fn json_response(v: impl Serialize) -> Response {
    axum::Json(v).into_response()
}

pub(super) fn unknown(id: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("unknown ID {}", crate::error::shown(id)),
    )
}

pub(super) async fn person(State(s): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
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

pub(super) async fn person_events(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
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
pub(super) struct TimelinePage {
    /// Events to skip, newest first.
    pub(super) offset: Option<usize>,
    /// Events to return (default 50, at most [`MAX_TIMELINE_PAGE`]).
    pub(super) limit: Option<usize>,
    /// Only events of this name (case-insensitive).
    pub(super) name: Option<String>,
}

/// One page of a person's events, newest first, optionally of one name; with the total and
/// the event names of the whole person (for a filter).
pub(super) async fn person_timeline(
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
pub(super) struct Top {
    pub(super) top: Option<usize>,
}

/// A list's length from `?top=` / `?limit=`: default 10, at most [`MAX_LIST`].
pub(super) fn list_len(n: Option<usize>) -> std::result::Result<usize, String> {
    match n.unwrap_or(10) {
        n @ 1..=MAX_LIST => Ok(n),
        n => Err(format!("{n}: give 1 to {MAX_LIST} entries")),
    }
}

/// `400` with the reason, counted.
pub(super) fn bad_request(s: &AppState, why: String) -> Response {
    s.metrics.count("api", StatusCode::BAD_REQUEST);
    text(StatusCode::BAD_REQUEST, why)
}

pub(super) async fn hubs(State(s): St, headers: HeaderMap, Query(q): Query<Top>) -> Response {
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
pub(super) struct Limit {
    pub(super) limit: Option<usize>,
}

/// The refusal log: its size and the latest refusals, newest first.
pub(super) async fn refusals(State(s): St, headers: HeaderMap, Query(q): Query<Limit>) -> Response {
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

pub(super) async fn person_links(
    State(s): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
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
pub(super) struct GraphFormat {
    pub(super) format: Option<String>,
}

pub(super) async fn person_graph(
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
pub(super) struct Pair {
    pub(super) a: Option<String>,
    pub(super) b: Option<String>,
}

impl Pair {
    fn both(self) -> Option<(String, String)> {
        self.a.zip(self.b)
    }
}

pub(super) fn need_both() -> Response {
    text(StatusCode::BAD_REQUEST, "give both IDs: ?a=<ID>&b=<ID>")
}

pub(super) async fn explain(State(s): St, headers: HeaderMap, Query(q): Query<Pair>) -> Response {
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

pub(super) async fn unalias(State(s): St, headers: HeaderMap, Query(q): Query<Pair>) -> Response {
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

pub(super) async fn forget(State(s): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let state = s.clone();
    s.call(&headers, Access::Admin, move |store| {
        match store.forget(&id)? {
            None => Ok(unknown(&id)),
            Some(f) => {
                store.flush()?;
                // Nothing the server keeps shows them again: the request log (which the
                // explorer's recent IDs come from) loses every entry naming them.
                state.scrub_log(&f.ids);
                state
                    .metrics
                    .erase_due
                    .lock()
                    .get_or_insert_with(std::time::Instant::now);
                Ok(json_response(f))
            }
        }
    })
    .await
}
