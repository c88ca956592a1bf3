//! An admission call with `sync_interval`: the synced count checks are decided from this
//! gateway's views ([`super::synced`]), the rest in Redis in one round trip
//! ([`super::redis`]).

use super::admission::{Admitted, Budget, Check, Denied, Estimate, Quota, Rejection, Ticket};
use super::count::CountLimit;
use super::redis::{RedisFault, RedisStore};
use super::rules::RuleKind;
use super::synced::SyncedCounts;
use std::sync::Arc;

/// The count limit of a check that is decided locally, if it is one.
fn synced_count(sync: &SyncedCounts, c: &Check<'_>) -> Option<CountLimit> {
    match c.kind {
        RuleKind::Count(l) if sync.applies(&l) => Some(l),
        _ => None,
    }
}

/// Which checks of a group this call decides locally, fixed once per admission call: the
/// synced count rules, except (when the views are full) those without a view yet.
fn local_checks(
    store: &RedisStore,
    sync: &SyncedCounts,
    checks: &[Check<'_>],
    full: bool,
) -> Vec<bool> {
    checks
        .iter()
        .map(|c| {
            synced_count(sync, c).is_some()
                && (!full || sync.knows(&store.key(c.rule, &c.kind, &c.key)))
        })
        .collect()
}

/// Decide the synced count checks of a group: `Ok(quotas)` when all admit.
fn decide_group(
    store: &RedisStore,
    sync: &SyncedCounts,
    checks: &[Check<'_>],
    local: &[bool],
    charge: bool,
) -> Result<Vec<Quota>, Rejection> {
    let now = sync.now_ms();
    let mut quotas = Vec::new();
    for (c, _) in checks.iter().zip(local).filter(|(_, l)| **l) {
        let Some(l) = synced_count(sync, c) else {
            continue;
        };
        let d = match sync.decide(
            &store.key(c.rule, &c.kind, &c.key),
            &l,
            now,
            charge,
            c.yield_to,
        ) {
            Ok(d) => d,
            Err(retry) => {
                return Err(Rejection {
                    rule: c.rule.id.clone(),
                    budget: Budget::Requests,
                    retry_after_ms: retry,
                    quotas,
                    alternative: None,
                })
            }
        };
        quotas.push(Quota::of_count(&l, &d, c.rule.answer.quota_header.clone()));
        if !d.admitted {
            return Err(Rejection {
                rule: c.rule.id.clone(),
                budget: Budget::Requests,
                retry_after_ms: d.reset_ms.max(1),
                quotas,
                alternative: None,
            });
        }
    }
    Ok(quotas)
}

fn rest<'r>(checks: &[Check<'r>], local: &[bool]) -> Vec<Check<'r>> {
    checks
        .iter()
        .zip(local)
        .filter(|(_, l)| !**l)
        .map(|(c, _)| c.clone())
        .collect()
}

/// An admission call with the synced count checks decided here and the rest in Redis
/// (skipped when nothing is left for it).
pub async fn admit(
    store: &Arc<RedisStore>,
    sync: &SyncedCounts,
    required: &[Check<'_>],
    alternatives: &[Vec<Check<'_>>],
    estimate: Estimate,
) -> Result<Result<Admitted, Denied>, RedisFault> {
    let full = sync.full();
    let local_required = local_checks(store, sync, required, full);
    let local_alts: Vec<Vec<bool>> = alternatives
        .iter()
        .map(|a| local_checks(store, sync, a, full))
        .collect();
    // Counters this gateway has no view of yet: fetch the shared totals first (one round
    // trip, once per counter and window).
    let unknown: Vec<(String, u64)> = required
        .iter()
        .zip(&local_required)
        .chain(
            alternatives
                .iter()
                .zip(&local_alts)
                .flat_map(|(a, l)| a.iter().zip(l)),
        )
        .filter(|(_, l)| **l)
        .filter_map(|(c, _)| {
            synced_count(sync, c).map(|l| (store.key(c.rule, &c.kind, &c.key), l.window_ms))
        })
        .filter(|(k, _)| !sync.knows(k))
        .collect();
    if !unknown.is_empty() {
        store.fetch_counts(&unknown).await?;
    }
    let mut quotas = match decide_group(store, sync, required, &local_required, true) {
        Ok(q) => q,
        Err(r) => return Ok(Err(Denied::Limited(r))),
    };
    // Alternatives whose synced counts have no room are not offered to Redis.
    let mut offered = Vec::new();
    let mut best: Option<Rejection> = None;
    for (i, alt) in alternatives.iter().enumerate() {
        match decide_group(store, sync, alt, &local_alts[i], false) {
            Ok(_) => offered.push((i, rest(alt, &local_alts[i]))),
            Err(mut r) => {
                r.alternative = Some(i);
                if best
                    .as_ref()
                    .is_none_or(|b| r.retry_after_ms < b.retry_after_ms)
                {
                    best = Some(r);
                }
            }
        }
    }
    let required_rest = rest(required, &local_required);
    let remote_alts: Vec<Vec<Check<'_>>> = offered.iter().map(|(_, c)| c.clone()).collect();
    let nothing_remote = required_rest.is_empty() && remote_alts.iter().all(Vec::is_empty);
    let decision = if nothing_remote {
        Ok(Admitted {
            ticket: Ticket::free(),
            choice: (!remote_alts.is_empty()).then_some(0),
            skipped: Vec::new(),
        })
    } else {
        store.admit(&required_rest, &remote_alts, estimate).await?
    };
    let mut decision = match decision {
        Ok(a) => a,
        Err(Denied::NoAlternative(mut r, held)) => {
            r.alternative = r.alternative.and_then(|j| offered.get(j)).map(|(i, _)| *i);
            let best = match best {
                Some(b) if b.retry_after_ms <= r.retry_after_ms => b,
                _ => r,
            };
            return Ok(Err(Denied::NoAlternative(best, held)));
        }
        Err(other) => return Ok(Err(other)),
    };
    if !alternatives.is_empty() {
        let Some(&(i, _)) = decision.choice.and_then(|j| offered.get(j)) else {
            // Every alternative was refused by its synced counts.
            let best = best.unwrap_or_else(no_reason);
            return Ok(Err(Denied::NoAlternative(best, Box::new(decision.ticket))));
        };
        // Charge the chosen alternative's synced counts.
        if let Ok(q) = decide_group(store, sync, &alternatives[i], &local_alts[i], true) {
            quotas.extend(q);
        }
        decision.choice = Some(i);
    }
    quotas.append(&mut decision.ticket.quotas);
    decision.ticket.quotas = quotas;
    Ok(Ok(decision))
}

/// Not reached: no alternative was chosen, so one was refused and said why.
fn no_reason() -> Rejection {
    Rejection {
        rule: Arc::from("limits"),
        budget: Budget::Requests,
        retry_after_ms: 1000,
        quotas: Vec::new(),
        alternative: Some(0),
    }
}
