//! The status page (`/status`, its data at `/status.json`), for operators: charts of the
//! last 15 minutes ([`crate::history`]), every model's deployments (provider, key
//! fingerprint, limit usage, cool-down), each consumer's limits (a spend budget in USD),
//! the queues with their depth, the latest batches with their progress, and the request
//! counters. The page
//! (`status.html`) fetches the JSON every second and redraws itself.
//!
//! Limit usage comes from this instance's counters with the `local` policy and from Redis
//! (one pipelined read per rule list) with the shared ones.
//!
//! It is served only when `admin.key` is set, to requests carrying it
//! (`Authorization: Bearer <key>`, or `?key=` for a browser). Provider keys never appear:
//! a deployment is named by its id (`deployment:<provider>:<model>:<key digest>`).

use crate::limits::local::{LocalStore, Slot};
use crate::limits::rules::{Rule, RuleKind};
use crate::state::AppState;
use serde_json::{json, Value};

pub const PAGE: &str = include_str!("status.html");

/// Whether `headers`/`query` carry the admin key.
pub fn authorized(state: &AppState, auth: Option<&str>, query: Option<&str>) -> bool {
    let rt = state.runtime.load();
    let Some(key) = rt.config.admin.key.as_ref().map(|k| k.expose().to_string()) else {
        return false;
    };
    if key.is_empty() {
        return false;
    }
    let bearer = auth.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    let given = bearer.map(str::to_string).or(from_query);
    // Compared by digest, so the time taken does not depend on where they differ.
    given.is_some_and(|g| {
        use sha2::{Digest, Sha256};
        Sha256::digest(g.as_bytes()) == Sha256::digest(key.as_bytes())
    })
}

/// A rule's limit and what its usage counts (a spend rule's in USD, its counters hold
/// micro-dollars: see [`shown`]).
fn unit(r: &Rule) -> (f64, &'static str) {
    match &r.kind {
        RuleKind::Spend(l) => (l.limit as f64 / 1e6, "USD this window"),
        RuleKind::Req(l) => (l.burst.max(1.0), "burst in use"),
        RuleKind::Conn(l) => (l.conn as f64, "in flight"),
        RuleKind::Count(l) => (l.count as f64, "requests this window"),
        RuleKind::Tokens(l, _) => (l.limit as f64, "tokens this window"),
    }
}

/// A usage read from a counter, in the unit [`unit`] shows.
fn shown(r: &Rule, used: f64) -> f64 {
    match r.kind {
        RuleKind::Spend(_) => used / 1e6,
        _ => used,
    }
}

/// A rule's current usage in the local store.
fn local_usage(store: &LocalStore, r: &Rule) -> f64 {
    let now = store.now_ms();
    let slot = store.get(&r.id);
    match (&r.kind, slot) {
        (RuleKind::Req(l), s) => l.level(s.and_then(Slot::req), now),
        (RuleKind::Conn(_), s) => s.and_then(Slot::conn).unwrap_or(0) as f64,
        (RuleKind::Count(_), s) => s
            .and_then(Slot::count)
            .filter(|c| now < c.window_end_ms)
            .map_or(0, |c| c.consumed) as f64,
        (RuleKind::Tokens(..) | RuleKind::Spend(_), s) => {
            s.and_then(Slot::tokens)
                .filter(|t| now < t.window_end_ms)
                .map_or(0, |t| t.committed + t.reserved) as f64
        }
    }
}

/// Usage of every rule (scope-wide counters; per-key ones are summarised), from the local
/// store or, with a shared policy, from Redis in one round trip.
async fn usages(state: &AppState, rules: &[&Rule]) -> Vec<Value> {
    let keyless: Vec<&Rule> = rules.iter().copied().filter(|r| r.key.is_none()).collect();
    let shared = match state.limiter.redis() {
        Some(redis) => redis.usage(&keyless).await.ok(),
        None => None,
    };
    let mut shared = shared.map(|v| v.into_iter());
    rules
        .iter()
        .map(|r| {
            if r.key.is_some() {
                return json!({"rule": &*r.id, "per_key": true});
            }
            let used = match shared.as_mut() {
                Some(it) => it.next().unwrap_or(0.0),
                None => local_usage(&state.limiter.local, r),
            };
            let used = shown(r, used);
            let (limit, what) = unit(r);
            json!({"rule": &*r.id, "used": used, "limit": limit, "what": what})
        })
        .collect()
}

/// The page's data.
pub async fn snapshot(state: &AppState) -> Value {
    let rt = state.runtime.load_full();
    let cooling: std::collections::HashMap<String, f64> = state
        .cooldowns
        .all()
        .into_iter()
        .map(|(id, left)| (id.to_string(), left.as_secs_f64()))
        .collect();
    let mut models = Vec::new();
    for m in rt.all_models().filter(|m| !m.deployments.is_empty()) {
        let mut deployments = Vec::new();
        for d in &m.deployments {
            let rules: Vec<&Rule> = d.limits.iter().collect();
            deployments.push(
                json!({"id": &*d.id, "provider": &*d.provider.name, "model": d.model,
                "cooldown_seconds": cooling.get(&*d.id), "limits": usages(state, &rules).await}),
            );
        }
        let rules: Vec<&Rule> = m.limits.iter().collect();
        models.push(json!({"name": &*m.name, "deployments": deployments,
                           "limits": usages(state, &rules).await}));
    }
    // Consumers with limits (their spend against their budget among them), in config
    // order.
    let mut consumers = Vec::new();
    for c in &rt.config.consumers {
        let rules: Vec<&Rule> = rt.consumer_limits(&c.name).iter().collect();
        if !rules.is_empty() {
            consumers.push(json!({"name": c.name, "limits": usages(state, &rules).await}));
        }
    }
    let queues: Vec<Value> = state
        .queues
        .snapshot()
        .into_iter()
        .map(|(k, n)| json!({"queue": k.replace('\u{1f}', " "), "depth": n}))
        .collect();
    let batches = match &state.batch {
        Some(b) => b
            .overview(20)
            .await
            .unwrap_or_default()
            .iter()
            .map(crate::batch::model::Batch::object)
            .collect(),
        None => Vec::new(),
    };
    let m = &state.metrics;
    let requests = m.requests_count();
    json!({
        "generation": rt.generation,
        "policy": format!("{:?}", rt.config.limits.policy).to_lowercase(),
        "limiter_ready": state.limiter.ready(),
        "requests_total": requests,
        "in_flight": m.in_flight.get(),
        "models": models,
        "consumers": consumers,
        "history": state.history.series(),
        "queues": queues,
        "batches": batches,
    })
}
