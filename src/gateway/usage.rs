//! How much of each limit rule is in use, for whoever reads it (the status page, the Admin
//! API's usage, a key holder's own `GET /v1/me`): from this instance's counters with the
//! `local` policy, and from Redis in one pipelined read with the shared ones, so every
//! instance reads the fleet's usage.

use super::GatewayState;
use crate::limits::local::{LocalStore, Slot};
use crate::limits::rules::{Rule, RuleKind};
use serde_json::{json, Value};

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
pub async fn usages(state: &GatewayState, rules: &[&Rule]) -> Vec<Value> {
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
            let remaining = (limit - used).max(0.0);
            json!({"rule": &*r.id, "used": used, "limit": limit, "remaining": remaining,
                "what": what})
        })
        .collect()
}
