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

use crate::gateway::usage::usages;
use crate::limits::rules::Rule;
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
