//! The status page (`/status`, its data at `/status.json`), for operators: every model's
//! deployments (provider, key fingerprint, limit usage, cool-down), the queues with their
//! depth, the latest batches with their progress, and the request counters. The page
//! (`status.html`) fetches the JSON every second and redraws itself.
//!
//! It is served only when `admin.key` is set, to requests carrying it
//! (`Authorization: Bearer <key>`, or `?key=` for a browser). Provider keys never appear:
//! a deployment is named by its id (`deployment:<provider>:<model>:<key digest>`).

use crate::limits::local::{LocalStore, Slot};
use crate::limits::rules::{Rule, RuleKind};
use crate::state::GatewayState;
use serde_json::{json, Value};

pub const PAGE: &str = include_str!("status.html");

/// Whether `headers`/`query` carry the admin key.
pub fn authorized(state: &GatewayState, auth: Option<&str>, query: Option<&str>) -> bool {
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

/// A rule's current usage in the local store (scope-wide counters; per-key ones are
/// summarised by their count).
fn usage(store: &LocalStore, r: &Rule) -> Value {
    if r.key.is_some() {
        return json!({"rule": &*r.id, "per_key": true});
    }
    let now = store.now_ms();
    let slot = store.update(&r.id, |s| (s, s));
    let (used, limit, what) = match (r.kind.clone(), slot) {
        (RuleKind::Req(l), s) => {
            let excess = s.and_then(Slot::req).map_or(0.0, |st| {
                let leaked = l.rate * now.saturating_sub(st.last_ms) as f64;
                (st.excess as f64 - leaked).max(0.0) / 1000.0
            });
            (excess, l.burst.max(1.0), "burst in use")
        }
        (RuleKind::Conn(l), s) => (
            s.and_then(Slot::conn).unwrap_or(0) as f64,
            l.conn as f64,
            "in flight",
        ),
        (RuleKind::Count(l), s) => (
            s.and_then(Slot::count)
                .filter(|c| now < c.window_end_ms)
                .map_or(0, |c| c.consumed) as f64,
            l.count as f64,
            "requests this window",
        ),
        (RuleKind::Tokens(l, _), s) => (
            s.and_then(Slot::tokens)
                .filter(|t| now < t.window_end_ms)
                .map_or(0, |t| t.committed + t.reserved) as f64,
            l.limit as f64,
            "tokens this window",
        ),
    };
    json!({"rule": &*r.id, "used": used, "limit": limit, "what": what})
}

/// The page's data.
pub async fn snapshot(state: &GatewayState) -> Value {
    let rt = state.runtime.load_full();
    let store = &state.limiter.local;
    let cooling: std::collections::HashMap<String, f64> = state
        .cooldowns
        .all()
        .into_iter()
        .map(|(id, left)| (id.to_string(), left.as_secs_f64()))
        .collect();
    let models: Vec<Value> = rt
        .listed_models
        .iter()
        .filter_map(|name| rt.model(name))
        .map(|m| {
            let deployments: Vec<Value> = m
                .deployments
                .iter()
                .map(|d| {
                    json!({"id": &*d.id, "provider": &*d.provider.name, "model": d.model,
                           "cooldown_seconds": cooling.get(&*d.id),
                           "limits": d.limits.iter().map(|r| usage(store, r)).collect::<Vec<_>>()})
                })
                .collect();
            json!({"name": &*m.name, "deployments": deployments,
                   "limits": m.limits.iter().map(|r| usage(store, r)).collect::<Vec<_>>()})
        })
        .collect();
    let queues: Vec<Value> = state
        .queues
        .snapshot()
        .into_iter()
        .map(|(k, n)| json!({"queue": k.replace('\u{1f}', " "), "depth": n}))
        .collect();
    let batches = match &state.batch {
        Some(b) => b.overview(20).await.unwrap_or_default(),
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
        "queues": queues,
        "batches": batches,
    })
}
