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
//!
//! This module holds the views; [`super::synced_admit`] decides an admission call with
//! them and Redis.

use super::count::{CountDecision, CountLimit, CountState};
use std::collections::HashMap;
use std::sync::Mutex;
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
    pub fn full(&self) -> bool {
        self.lock().len() >= self.max_views
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a count rule is decided locally (APISIX: only when the window is longer
    /// than the interval). Sliding windows are always decided in the shared store.
    pub fn applies(&self, l: &CountLimit) -> bool {
        !l.sliding && l.window_ms > self.interval_ms
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
            previous: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    const L: CountLimit = CountLimit {
        count: 5,
        window_ms: 60_000,
        sliding: false,
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
            window_ms: 100,
            sliding: false,
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
