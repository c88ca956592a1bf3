//! Delayed sync of limit-count counters (`limits.sync_interval`, APISIX 3.18's option).
//!
//! With the Redis policies, count rules whose `time_window` is longer than `sync_interval`
//! are decided by each gateway from its last view of the shared counter plus its own
//! requests since; every `sync_interval` one call of `lua-compat/sync.lua` pushes the
//! deltas of every such counter and brings back the shared totals. A request whose limits
//! are all such count rules costs no Redis round trip; others still cost one.
//!
//! **Accuracy bound.** A gateway's view lacks at most the other gateways' requests of the
//! last `sync_interval` (plus one round trip). So across the fleet a window can admit at
//! most `count` plus what the other instances admitted within one `sync_interval`: with N
//! instances each admitting r requests/s, at most `(N − 1) × r × sync_interval` too many.
//! A window may also open up to one `sync_interval` late on an instance that had not yet
//! seen it. Within one gateway the count is exact.
//!
//! The order of checks changes slightly: these count rules are decided before the
//! request's other limits (so a request refused by them costs nothing else, and one
//! refused by limit-conn afterwards has been counted, as APISIX counts it).

use super::admission::{Admitted, Budget, Check, Denied, Quota, Rejection, Ticket};
use super::count::{CountDecision, CountLimit, CountState};
use super::redis::{RedisFault, RedisStore};
use super::rules::RuleKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct SyncedCounts {
    interval_ms: u64,
    epoch: Instant,
    map: Mutex<HashMap<String, Entry>>,
    /// Most local views (`limits.local_max_keys`): past it, a counter without a view is
    /// decided in Redis (exactly, one round trip) instead of getting one.
    max_views: usize,
    /// `gateway_limiter_local_keys`: the views count as counters held in memory.
    gauge: prometheus::IntGauge,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The shared total at the last sync.
    remote: u64,
    /// This gateway's requests since then.
    delta: u64,
    window_ms: u64,
    window_end_ms: u64,
    /// Bumped when a window starts afresh here, so a sync of the old window's deltas
    /// that lands afterwards is ignored.
    generation: u64,
}

/// One counter's push: the key, the delta sent and the window length.
pub struct Push {
    pub key: String,
    pub delta: u64,
    pub window_ms: u64,
    pub generation: u64,
}

impl SyncedCounts {
    pub fn new(
        interval: std::time::Duration,
        max_views: usize,
        gauge: prometheus::IntGauge,
    ) -> SyncedCounts {
        SyncedCounts {
            interval_ms: interval.as_millis() as u64,
            epoch: Instant::now(),
            map: Mutex::new(HashMap::new()),
            max_views,
            gauge,
        }
    }

    /// Keep the gauge in step with a change of the map's size.
    fn counted(&self, before: usize, after: usize) {
        self.gauge.add(after as i64 - before as i64);
    }

    /// Whether the views are at their cap.
    fn full(&self) -> bool {
        self.lock().len() >= self.max_views
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a count rule is decided locally (APISIX: only when the window is longer
    /// than the interval).
    pub fn applies(&self, l: &CountLimit) -> bool {
        l.window_ms > self.interval_ms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decide one request on `key`; `charge` records it (rejected requests count too).
    /// `yield_to`: see [`super::priority`]; a batch request without room is neither
    /// admitted nor recorded (`Err(retry_after_ms)`).
    pub fn decide(
        &self,
        key: &str,
        l: &CountLimit,
        now: u64,
        charge: bool,
        yield_to: Option<f64>,
    ) -> Result<CountDecision, u64> {
        let mut map = self.lock();
        let state = map.get(key).map(|e| CountState {
            consumed: e.remote + e.delta,
            window_end_ms: e.window_end_ms,
        });
        if let Some(rate) = yield_to {
            super::priority::count_room(l, state, now, rate)?;
        }
        let d = l.hit(state, now, 1);
        if charge {
            let fresh = state.is_none_or(|s| now >= s.window_end_ms);
            let before = map.len();
            let e = map.entry(key.to_string()).or_insert(Entry {
                remote: 0,
                delta: 0,
                window_ms: l.window_ms,
                window_end_ms: d.state.window_end_ms,
                generation: 0,
            });
            if fresh {
                *e = Entry {
                    remote: 0,
                    delta: 0,
                    window_ms: l.window_ms,
                    window_end_ms: d.state.window_end_ms,
                    generation: e.generation + 1,
                };
            }
            e.delta += 1;
            self.counted(before, map.len());
        }
        Ok(d)
    }

    /// Whether this gateway has a view of `key` (otherwise it fetches one first).
    pub fn knows(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Take in the shared total of a counter seen for the first time.
    pub fn seed(&self, key: &str, window_ms: u64, consumed: i64, pttl_ms: i64) {
        let now = self.now_ms();
        let mut map = self.lock();
        let before = map.len();
        map.entry(key.to_string()).or_insert(Entry {
            remote: consumed.max(0) as u64,
            delta: 0,
            window_ms,
            // No window in Redis: an ended one, so the first request here opens one.
            window_end_ms: if pttl_ms < 0 { 0 } else { now + pttl_ms as u64 },
            generation: 0,
        });
        self.counted(before, map.len());
    }

    /// Every counter to sync, with the delta to push (0 only fetches the shared total).
    /// Counters whose window ended with nothing to push are forgotten.
    pub fn pushes(&self) -> Vec<Push> {
        let now = self.now_ms();
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| e.delta > 0 || now < e.window_end_ms);
        self.counted(before, map.len());
        map.iter()
            .map(|(k, e)| Push {
                key: k.clone(),
                delta: e.delta,
                window_ms: e.window_ms,
                generation: e.generation,
            })
            .collect()
    }

    /// The shared total after `push`: `consumed` and the window's `pttl_ms` (negative when
    /// Redis has no window open).
    pub fn synced(&self, push: &Push, consumed: i64, pttl_ms: i64) {
        let now = self.now_ms();
        let mut map = self.lock();
        let key = push.key.as_str();
        let Some(e) = map.get_mut(key) else { return };
        if e.generation != push.generation {
            return; // a new window started here meanwhile; its deltas go next time
        }
        e.delta = e.delta.saturating_sub(push.delta);
        if pttl_ms < 0 {
            if e.delta == 0 {
                map.remove(key);
                self.gauge.dec();
            }
            return;
        }
        e.remote = consumed.max(0) as u64;
        e.window_end_ms = now + pttl_ms as u64;
    }
}

/// The count limit of a check that is decided locally, if it is one.
fn synced_count(sync: &SyncedCounts, c: &Check<'_>) -> Option<CountLimit> {
    match c.rule.kind {
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
                && (!full || sync.knows(&store.key(&c.rule.kind, &c.key)))
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
            &store.key(&c.rule.kind, &c.key),
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
        quotas.push(Quota::of_count(&l, &d, c.rule.answer.quota_header));
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
    estimate_tokens: u64,
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
            synced_count(sync, c).map(|l| (store.key(&c.rule.kind, &c.key), l.window_ms))
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
        store
            .admit(&required_rest, &remote_alts, estimate_tokens)
            .await?
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

#[cfg(test)]
mod tests {
    use super::*;

    const L: CountLimit = CountLimit {
        count: 5,
        window_ms: 60_000,
    };

    #[test]
    fn local_view_plus_own_requests_then_the_shared_total() {
        let s = SyncedCounts::new(
            std::time::Duration::from_millis(100),
            1000,
            crate::limits::slots::SlotMetrics::new().keys,
        );
        assert!(s.applies(&L));
        assert!(!s.applies(&CountLimit {
            count: 1,
            window_ms: 100
        }));
        for _ in 0..3 {
            assert!(s.decide("k", &L, 10, true, None).unwrap().admitted);
        }
        let p = s.pushes();
        assert_eq!((p.len(), p[0].delta), (1, 3));
        // Meanwhile one more request here; Redis says another gateway added 1 (total 4).
        assert!(s.decide("k", &L, 20, true, None).unwrap().admitted);
        s.synced(&p[0], 4, 59_000);
        // View: 4 shared + 1 own = 5: the next is the 6th.
        let d = s.decide("k", &L, 30, false, None).unwrap();
        assert!(!d.admitted && d.remaining == 0);
        assert_eq!(s.pushes()[0].delta, 1);
    }

    #[test]
    fn window_end_starts_afresh_and_idle_counters_are_forgotten() {
        let s = SyncedCounts::new(
            std::time::Duration::from_millis(100),
            1000,
            crate::limits::slots::SlotMetrics::new().keys,
        );
        for _ in 0..6 {
            s.decide("k", &L, 0, true, None).unwrap();
        }
        let old = s.pushes();
        assert!(!s.decide("k", &L, 59_999, false, None).unwrap().admitted);
        assert!(s.decide("k", &L, 60_000, true, None).unwrap().admitted);
        // The old window's push lands after the new window began here: ignored.
        s.synced(&old[0], 6, 10);
        let now = s.pushes();
        assert_eq!(
            (now[0].delta, now[0].generation),
            (1, old[0].generation + 1)
        );
        // Redis had no window: nothing pending, so the counter is forgotten.
        s.synced(&now[0], 0, -1);
        assert!(s.pushes().is_empty());
    }
}
