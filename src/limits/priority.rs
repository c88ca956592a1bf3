//! The batch priority class: batch requests go through the same admission call as realtime
//! ones, but each of their checks must leave room for the realtime traffic seen lately on
//! that counter, so batch work only uses the headroom realtime traffic leaves.
//!
//! [`RealtimeRates`] measures realtime demand per counter (admission calls per second,
//! the larger of the last full second and the current one). A batch check carries that
//! rate ([`super::admission::Check::yield_to`]); it is admitted only if it leaves, after
//! itself:
//! - limit-count: `ceil(rate × time to the window's reset) + 1` requests, and batch work
//!   is paced evenly over the window (a realtime request arriving after a quiet spell
//!   finds the rest of the window's share unused);
//! - tokens: the same, in this request's estimates;
//! - limit-req: `1 + ceil(rate / limit rate)` requests of the burst (1 without realtime
//!   traffic, when the burst has room for one);
//! - limit-conn: `1 + ceil(rate / 4)` slots below `conn` (a quarter second of realtime
//!   arrivals; 1 without realtime traffic when `conn` ≥ 2); the delay band is never used
//!   by batch work.
//!
//! A batch check without room is rejected without changing any counter. Without realtime
//! traffic, batch work can use the whole limit (windows and buckets at their full rate).
//! The functions here are pure; the stores (local, `admit.lua`, synced counts) apply them
//! inside their atomic update.

use super::admission::Check;
use super::conn::ConnLimit;
use super::count::{CountLimit, CountState};
use super::queue::Queues;
use super::req::{ReqLimit, ReqState};
use super::tokens::{TokenLimit, TokenState};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The rate given to a batch check whose counter has realtime requests queued: no room.
pub const QUEUED: f64 = 1e9;

/// Give a batch request's checks the realtime rate each must leave room for: none at all
/// ([`QUEUED`]) while realtime requests wait in the counter's queue, or, with
/// `deployments_queued`, in its model's deployments queue.
pub fn yield_to_realtime(
    checks: &mut [Check<'_>],
    rates: &RealtimeRates,
    queues: &Queues,
    deployments_queued: bool,
) {
    for c in checks {
        c.yield_to = Some(if deployments_queued || queues.depth(&c.key) > 0 {
            QUEUED
        } else {
            rates.rate(&c.key)
        });
    }
}

/// Requests of a fixed window (count, tokens) to leave for realtime traffic at `rate`.
pub fn window_reserve(rate: f64, reset_ms: u64) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    (rate * reset_ms as f64 / 1000.0).ceil().min(1e12) as u64 + 1
}

/// Whether `used + need` stays on a window's pace: batch work spreads a window's budget
/// evenly over it, so a realtime request arriving at any moment finds the part of the
/// budget that belongs to the rest of the window. Only an empty window may be opened ahead
/// of the pace. `Err`: when it will be on pace.
fn paced(limit: u64, window_ms: u64, reset_ms: u64, used: u64, need: u64) -> Result<(), u64> {
    let (limit, w) = (u128::from(limit.max(1)), u128::from(window_ms.max(1)));
    let elapsed = u128::from(window_ms.saturating_sub(reset_ms));
    let want = u128::from(used) + u128::from(need);
    // want <= limit * elapsed / w
    if used == 0 || want * w <= limit * elapsed {
        return Ok(());
    }
    let at = (want * w).div_ceil(limit);
    Err((at.saturating_sub(elapsed) as u64).clamp(1, reset_ms.max(1)))
}

/// `Err(retry_after_ms)` when a batch request at `now_ms` would not leave room.
pub fn count_room(
    l: &CountLimit,
    state: Option<CountState>,
    now_ms: u64,
    rate: f64,
) -> Result<(), u64> {
    let (consumed, reset_ms) = match l.current(state, now_ms) {
        // A sliding window also carries the previous window's remaining weight.
        Some(s) if l.sliding => {
            let left = s.window_end_ms - now_ms;
            let weighted = s.previous.min(l.count) * left / l.window_ms.max(1);
            (s.consumed + weighted, left)
        }
        Some(s) => (s.consumed, s.window_end_ms - now_ms),
        None if l.sliding => (0, l.window_ms - now_ms % l.window_ms.max(1)),
        None => (0, l.window_ms),
    };
    if consumed + 1 + window_reserve(rate, reset_ms) > l.count {
        // The reserve shrinks as the window runs out: look again soon.
        return Err(reset_ms.clamp(1, 250));
    }
    paced(l.count, l.window_ms, reset_ms, consumed, 1)
}

/// As [`count_room`], for a token window and a request expected to use `estimate`.
pub fn tokens_room(
    l: &TokenLimit,
    state: Option<TokenState>,
    now_ms: u64,
    estimate: u64,
    rate: f64,
) -> Result<(), u64> {
    let (remaining, reset_ms) = l.peek(state, now_ms);
    let need = estimate.min(l.limit).max(1);
    let reserve = window_reserve(rate, reset_ms).saturating_mul(need);
    if need.saturating_add(reserve) > remaining {
        return Err(reset_ms.clamp(1, 250));
    }
    paced(l.limit, l.window_ms, reset_ms, l.limit - remaining, need)
}

/// As [`count_room`], for limit-req's bucket: one request of the burst (when there is
/// one) stays free even without realtime traffic, for the next realtime arrival.
pub fn req_room(l: &ReqLimit, state: Option<ReqState>, now_ms: u64, rate: f64) -> Result<(), u64> {
    let reserve = if rate > 0.0 {
        1.0 + (rate / l.rate).ceil()
    } else if l.burst >= 1.0 {
        1.0
    } else {
        return Ok(());
    };
    let over = l.excess_after(state, now_ms) + reserve * 1000.0 - l.burst * 1000.0;
    if over <= 0.0 {
        Ok(())
    } else {
        Err(((over * 1000.0 / (l.rate * 1000.0)).ceil() as u64).clamp(1, 60_000))
    }
}

/// As [`count_room`], for limit-conn with `in_flight` slots taken: one slot (when there
/// are two or more) stays free even without realtime traffic.
pub fn conn_room(l: &ConnLimit, in_flight: u64, rate: f64) -> Result<(), u64> {
    let reserve = if rate > 0.0 {
        1 + (rate / 4.0).ceil().min(1e12) as u64
    } else {
        u64::from(l.conn >= 2)
    };
    if in_flight + 1 + reserve <= l.conn {
        Ok(())
    } else {
        Err(50)
    }
}

/// Realtime admission calls per counter, for the batch priority class. Counted only while
/// batch work is waiting or running ([`RealtimeRates::set_active`]), so realtime requests
/// pay nothing for it otherwise; when a batch starts, the rates fill within a second.
///
/// Bounded whatever the keys: counters idle for two seconds are forgotten at most once a
/// second (not on every call), and past [`MAX_TRACKED`] counters new ones are not
/// measured (a batch check on them then leaves room for no realtime demand).
pub struct RealtimeRates {
    map: Mutex<HashMap<std::sync::Arc<str>, Seconds>>,
    epoch: Instant,
    active: std::sync::atomic::AtomicBool,
    /// The second of the last sweep of idle counters.
    swept: std::sync::atomic::AtomicU64,
}

/// Most counters whose realtime rate is measured at once.
pub const MAX_TRACKED: usize = 65_536;

/// Calls in the current and the previous whole second.
#[derive(Clone, Copy)]
struct Seconds {
    second: u64,
    current: u32,
    previous: u32,
}

impl Default for RealtimeRates {
    fn default() -> Self {
        RealtimeRates {
            map: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            active: std::sync::atomic::AtomicBool::new(false),
            swept: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Seconds {
    fn at(self, second: u64) -> Seconds {
        match second.saturating_sub(self.second) {
            0 => self,
            1 => Seconds {
                second,
                current: 0,
                previous: self.current,
            },
            _ => Seconds {
                second,
                current: 0,
                previous: 0,
            },
        }
    }
}

impl RealtimeRates {
    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<std::sync::Arc<str>, Seconds>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether batch work is waiting or running (set by the dispatcher).
    pub fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::Relaxed);
    }

    /// Count one realtime admission call on each counter (while batch work is active).
    pub fn note<'k>(&self, keys: impl Iterator<Item = &'k std::sync::Arc<str>>) {
        if !self.active.load(Relaxed) {
            return;
        }
        let now = self.second();
        let mut map = self.lock();
        use std::sync::atomic::Ordering::Relaxed;
        if map.len() > 4096 && self.swept.swap(now, Relaxed) != now {
            map.retain(|_, s| now.saturating_sub(s.second) < 2);
        }
        for k in keys {
            if map.len() >= MAX_TRACKED && !map.contains_key(k) {
                continue;
            }
            let s = map.entry(k.clone()).or_insert(Seconds {
                second: now,
                current: 0,
                previous: 0,
            });
            *s = s.at(now);
            s.current = s.current.saturating_add(1);
        }
    }

    /// Realtime calls per second lately on `key` (0 when none in the last two seconds).
    pub fn rate(&self, key: &str) -> f64 {
        let now = self.second();
        self.lock().get(key).map_or(0.0, |s| {
            let s = s.at(now);
            f64::from(s.current.max(s.previous))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_paced_and_leaves_the_realtime_share() {
        let l = CountLimit {
            count: 10,
            window_ms: 1000,
            sliding: false,
        };
        let at = |consumed, now, rate| {
            let s = CountState {
                consumed,
                window_end_ms: 1000,
                previous: 0,
            };
            count_room(&l, Some(s), now, rate)
        };
        assert!(count_room(&l, None, 0, 0.0).is_ok(), "a new window");
        // No realtime traffic: the window's budget, spread evenly.
        assert!(at(4, 500, 0.0).is_ok());
        assert_eq!(at(5, 500, 0.0), Err(100), "on pace again 100 ms later");
        assert!(at(8, 900, 0.0).is_ok());
        assert!(at(9, 999, 0.0).is_err(), "one is always left for realtime");
        // 5 req/s of realtime: what can still arrive in the window, plus one, is kept.
        assert!(at(7, 900, 5.0).is_ok()); // on pace, 1 + 2 kept
        assert!(at(8, 900, 5.0).is_err()); // on pace, but 1 + 2 must be kept
        assert!(at(7, 700, 5.0).is_err()); // 1 + 3 kept: no room
        assert!(count_room(&l, None, 0, 5.0).is_ok());
    }

    #[test]
    fn req_keeps_part_of_the_burst_free() {
        let l = ReqLimit {
            rate: 10.0,
            burst: 5.0,
            nodelay: true,
        };
        // 5 req/s of realtime: 2 requests of the burst stay free.
        let s = |excess| Some(ReqState { excess, last_ms: 0 });
        assert!(req_room(&l, s(2000), 0, 5.0).is_ok()); // 3 after, 2 free
        let retry = req_room(&l, s(3000), 0, 5.0).unwrap_err();
        assert_eq!(retry, 100, "one request leaks in 100 ms");
        assert!(req_room(&l, s(3000), 100, 5.0).is_ok());
        // None: one stays free for the next realtime arrival.
        assert!(req_room(&l, s(3000), 0, 0.0).is_ok());
        assert!(req_room(&l, s(4000), 0, 0.0).is_err());
        let no_burst = ReqLimit { burst: 0.0, ..l };
        assert!(
            req_room(&no_burst, s(0), 100, 0.0).is_ok(),
            "nothing to keep"
        );
    }

    #[test]
    fn conn_and_tokens_leave_room() {
        let c = ConnLimit {
            conn: 4,
            burst: 4,
            default_conn_delay_ms: 100,
        };
        assert!(conn_room(&c, 1, 2.0).is_ok()); // 2 + 2 ≤ 4
        assert!(conn_room(&c, 2, 2.0).is_err());
        assert!(conn_room(&c, 2, 0.0).is_ok());
        assert!(conn_room(&c, 3, 0.0).is_err(), "one slot stays free");
        let t = TokenLimit {
            limit: 1000,
            window_ms: 1000,
            any_left: false,
        };
        // 1 req/s realtime at the window's start: 2 requests of 100 are kept.
        assert!(tokens_room(&t, None, 0, 100, 1.0).is_ok());
        let used = TokenState {
            committed: 750,
            reserved: 0,
            window_end_ms: 1000,
        };
        assert!(
            tokens_room(&t, Some(used), 0, 100, 0.0).is_err(),
            "ahead of pace"
        );
        assert!(tokens_room(&t, Some(used), 900, 100, 0.0).is_ok());
        assert!(tokens_room(&t, Some(used), 800, 100, 0.0).is_err());
        assert!(
            tokens_room(&t, Some(used), 900, 100, 1.0).is_err(),
            "100 + 2 × 100 kept > 250 left"
        );
    }

    #[test]
    fn rates_count_the_last_whole_second() {
        let r = RealtimeRates::default();
        let k: std::sync::Arc<str> = "k".into();
        r.note(std::iter::once(&k));
        assert_eq!(
            r.rate("k"),
            0.0,
            "not counted while no batch work is active"
        );
        r.set_active(true);
        for _ in 0..7 {
            r.note(std::iter::once(&k));
        }
        assert_eq!(r.rate("k"), 7.0);
        assert_eq!(r.rate("other"), 0.0);
        let s = Seconds {
            second: 10,
            current: 7,
            previous: 3,
        };
        assert_eq!(s.at(11).previous, 7);
        assert_eq!(s.at(12).previous, 0, "two seconds without calls: rate 0");
    }
}
