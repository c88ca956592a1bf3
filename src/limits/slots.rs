//! The in-process counter map behind the `local` policy (and the degraded fallback of the
//! Redis policies): bounded, whatever the clients send.
//!
//! A limit keyed by something the client controls (`$http_*`, `$remote_addr`) creates one
//! counter per distinct value, so the map must shed state by design:
//! - **Expiry.** Every stored slot carries the time after which it can no longer change a
//!   decision ([`Stored::until`]: a drained leaky bucket, an ended count window, an ended
//!   token window without reservations). Each shard keeps a min-heap of due times with
//!   exactly one item per entry; every update first pops at most [`EXPIRE_BUDGET`] due
//!   items (dropping the expired, rescheduling the rest), so the work is amortised over
//!   the hot path: no scan of the map, no pause. Slots held by requests in flight
//!   (concurrency, token reservations) are rechecked every [`HELD_RECHECK_MS`].
//! - **A hard cap** (`limits.local_max_keys`, split over the shards). A new key in a full
//!   shard evicts the entry due soonest, skipping held slots where it can
//!   (`gateway_limiter_local_evictions_total`). An evicted key starts afresh on its next
//!   request, as nginx's `limit_req` zone does when it runs out of memory: under a flood
//!   of distinct keys the limiter forgets the state closest to ending rather than growing
//!   or refusing everybody.
//! - Key values are never stored raw when long: see [`super::rules::Rule::counter_key`].

use super::count::CountState;
use super::req::{ReqLimit, ReqState};
use super::tokens::TokenState;
use hashbrown::HashTable;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The stored state of one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Req(ReqState),
    /// Requests in flight.
    Conn(u64),
    Count(CountState),
    Tokens(TokenState),
}

impl Slot {
    pub fn req(self) -> Option<ReqState> {
        match self {
            Slot::Req(s) => Some(s),
            _ => None,
        }
    }
    pub fn conn(self) -> Option<u64> {
        match self {
            Slot::Conn(n) => Some(n),
            _ => None,
        }
    }
    pub fn count(self) -> Option<CountState> {
        match self {
            Slot::Count(s) => Some(s),
            _ => None,
        }
    }
    pub fn tokens(self) -> Option<TokenState> {
        match self {
            Slot::Tokens(s) => Some(s),
            _ => None,
        }
    }
}

/// Held by a request in flight: never expires by time.
const HELD: u64 = u64::MAX;

/// A slot to store and the time (store clock, ms) from which it is equivalent to no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub slot: Slot,
    pub until: u64,
}

impl Stored {
    /// A leaky bucket: empty once its excess plus one request has leaked.
    pub fn req(l: &ReqLimit, s: ReqState) -> Stored {
        Stored {
            slot: Slot::Req(s),
            until: l.drained_at(s),
        }
    }

    /// A count window: over at its end (a sliding one a window later).
    pub fn count(l: &super::count::CountLimit, s: CountState) -> Stored {
        Stored {
            slot: Slot::Count(s),
            until: l.expires_at(&s),
        }
    }

    /// A token window: over at its end unless requests in flight hold reservations.
    pub fn tokens(s: TokenState) -> Stored {
        Stored {
            slot: Slot::Tokens(s),
            until: if s.reserved > 0 {
                HELD
            } else {
                s.window_end_ms
            },
        }
    }

    /// Requests in flight (`n > 0`; zero is stored as nothing).
    pub fn conn(n: u64) -> Stored {
        Stored {
            slot: Slot::Conn(n),
            until: HELD,
        }
    }
}

/// Due items popped per update at most (expired entries dropped or rescheduled).
pub const EXPIRE_BUDGET: usize = 4;
/// How often a held slot's heap item comes due again.
pub const HELD_RECHECK_MS: u64 = 5_000;
/// Heap items looked at to find an entry that is not held before evicting a held one.
const EVICT_TRIES: usize = 8;
const SHARDS: usize = 32;
/// `limits.local_max_keys` when unset.
pub const DEFAULT_MAX_KEYS: usize = crate::config::schema::DEFAULT_LOCAL_MAX_KEYS;

/// Gauges and counters of the map (registered by [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct SlotMetrics {
    /// `gateway_limiter_local_keys`: counters held in memory.
    pub keys: prometheus::IntGauge,
    /// `gateway_limiter_local_evictions_total`: live counters dropped because the map was full.
    pub evictions: prometheus::IntCounter,
}

impl Default for SlotMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotMetrics {
    /// The instruments, not yet registered.
    pub fn new() -> SlotMetrics {
        SlotMetrics {
            keys: prometheus::IntGauge::new(
                "gateway_limiter_local_keys",
                "Limit counters held in this instance's memory (limits.local_max_keys caps them).",
            )
            .expect("valid metric"),
            evictions: prometheus::IntCounter::new(
                "gateway_limiter_local_evictions_total",
                "Live limit counters dropped because limits.local_max_keys was reached.",
            )
            .expect("valid metric"),
        }
    }
}

struct Entry {
    /// `None`: released (a concurrency count back at zero); dropped when its item is due.
    slot: Option<Slot>,
    until: u64,
}

impl Entry {
    fn live(&self, now: u64) -> Option<Slot> {
        self.slot.filter(|_| now < self.until)
    }
}

/// One counter of a shard: its key, the key's hash (by the store's seeded SipHash,
/// computed once per operation and kept for the table's growth) and its state.
struct Keyed {
    key: Arc<str>,
    hash: u64,
    entry: Entry,
}

/// A heap item: (due, hash, key).
type Due = Reverse<(u64, u64, Arc<str>)>;

#[derive(Default)]
struct Shard {
    map: HashTable<Keyed>,
    /// One item per entry of `map`, earliest first.
    due: BinaryHeap<Due>,
}

fn due_for(until: u64, now: u64) -> u64 {
    until.min(now.saturating_add(HELD_RECHECK_MS))
}

fn same(hash: u64, key: &str) -> impl Fn(&Keyed) -> bool + '_ {
    move |k| k.hash == hash && *k.key == *key
}

impl Shard {
    fn find(&self, hash: u64, key: &str) -> Option<&Entry> {
        self.map.find(hash, same(hash, key)).map(|k| &k.entry)
    }

    fn remove(&mut self, hash: u64, key: &str) {
        if let Ok(o) = self.map.find_entry(hash, same(hash, key)) {
            o.remove();
        }
    }

    /// Pop at most `budget` due items: drop what has expired, reschedule the rest.
    /// Returns how many entries were dropped.
    fn expire(&mut self, now: u64, budget: usize) -> usize {
        let mut dropped = 0;
        for _ in 0..budget {
            match self.due.peek() {
                Some(Reverse((due, _, _))) if *due <= now => {}
                _ => break,
            }
            let Some(Reverse((_, hash, key))) = self.due.pop() else {
                break;
            };
            match self.find(hash, &key) {
                Some(e) if e.live(now).is_some() => {
                    let due = due_for(e.until, now);
                    self.due.push(Reverse((due, hash, key)));
                }
                Some(_) => {
                    self.remove(hash, &key);
                    dropped += 1;
                }
                None => {}
            }
        }
        dropped
    }

    /// Make room for one entry: drop the entry due soonest, preferring one no request
    /// holds. Returns whether a live entry was evicted.
    fn evict(&mut self, now: u64) -> bool {
        for attempt in 0..=EVICT_TRIES {
            let Some(Reverse((due, hash, key))) = self.due.pop() else {
                return false;
            };
            let Some(e) = self.find(hash, &key) else {
                continue;
            };
            let live = e.live(now).is_some();
            if live && e.until == HELD && attempt < EVICT_TRIES {
                let due = due.max(now).saturating_add(HELD_RECHECK_MS);
                self.due.push(Reverse((due, hash, key)));
                continue;
            }
            self.remove(hash, &key);
            return live;
        }
        false
    }
}

pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// The shard the next update also tidies (round robin), so shards that no current
    /// key hashes to shed their ended state too.
    cursor: std::sync::atomic::AtomicUsize,
    hasher: RandomState,
    epoch: Instant,
    metrics: SlotMetrics,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore::new(DEFAULT_MAX_KEYS, SlotMetrics::new())
    }
}

impl LocalStore {
    /// A store holding at most about `max_keys` counters.
    pub fn new(max_keys: usize, metrics: SlotMetrics) -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            cursor: std::sync::atomic::AtomicUsize::new(0),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            metrics,
        }
    }

    /// Milliseconds on the store's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The key's hash and its shard. The shard is chosen by bits the shard's table does
    /// not index by (it uses the low bits for the bucket and the top 7 as a tag), so a
    /// shard's keys spread over all of its buckets.
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(key);
        let i = ((hash >> 32) as usize) % SHARDS;
        // A poisoned shard only means another request panicked mid-update of plain data.
        (
            hash,
            self.shards[i].lock().unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Expire a little in the next shard of the round robin, if nobody holds it.
    fn tidy_next(&self, now: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = self.cursor.fetch_add(1, Relaxed) % SHARDS;
        if let Ok(mut shard) = self.shards[i].try_lock() {
            let dropped = shard.expire(now, EXPIRE_BUDGET);
            if dropped > 0 {
                self.metrics.keys.sub(dropped as i64);
            }
        }
    }

    /// Read-modify-write one counter atomically at `now`. `f` gets the live slot (if any)
    /// and returns what to store (`None`: nothing) and a result.
    pub fn update_at<R>(
        &self,
        key: &str,
        now: u64,
        f: impl FnOnce(Option<Slot>) -> (Option<Stored>, R),
    ) -> R {
        let result = self.update_shard(key, now, f);
        self.tidy_next(now);
        result
    }

    fn update_shard<R>(
        &self,
        key: &str,
        now: u64,
        f: impl FnOnce(Option<Slot>) -> (Option<Stored>, R),
    ) -> R {
        let (hash, mut shard) = self.shard(key);
        let dropped = shard.expire(now, EXPIRE_BUDGET);
        let found = shard
            .map
            .find_mut(hash, same(hash, key))
            .map(|k| &mut k.entry);
        let (new, result) = f(found.as_ref().and_then(|e| e.live(now)));
        match (found, new) {
            (Some(e), Some(s)) => {
                e.slot = Some(s.slot);
                e.until = s.until;
            }
            (Some(e), None) => {
                e.slot = None;
                e.until = now;
            }
            (None, Some(s)) => {
                let mut removed = dropped;
                if shard.map.len() >= self.per_shard {
                    if shard.evict(now) {
                        self.metrics.evictions.inc();
                    }
                    removed += 1;
                }
                let key: Arc<str> = key.into();
                shard
                    .due
                    .push(Reverse((due_for(s.until, now), hash, key.clone())));
                let entry = Entry {
                    slot: Some(s.slot),
                    until: s.until,
                };
                shard
                    .map
                    .insert_unique(hash, Keyed { key, hash, entry }, |k| k.hash);
                self.metrics.keys.add(1 - removed as i64);
                return result;
            }
            (None, None) => {}
        }
        if dropped > 0 {
            self.metrics.keys.sub(dropped as i64);
        }
        result
    }

    /// [`Self::update_at`] now.
    pub fn update<R>(&self, key: &str, f: impl FnOnce(Option<Slot>) -> (Option<Stored>, R)) -> R {
        self.update_at(key, self.now_ms(), f)
    }

    /// The live slot of a counter, if any.
    pub fn get(&self, key: &str) -> Option<Slot> {
        let now = self.now_ms();
        let (hash, shard) = self.shard(key);
        shard.find(hash, key).and_then(|e| e.live(now))
    }

    /// Number of live counters (for tests and the status page).
    pub fn len(&self) -> usize {
        let now = self.now_ms();
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.map.iter().filter(|k| k.entry.live(now).is_some()).count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries and heap items held, live or awaiting their drop (for tests).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(m, h), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (m + s.map.len(), h + s.due.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::count::CountLimit;

    fn count_at(store: &LocalStore, key: &str, now: u64, window: u64) -> u64 {
        let l = CountLimit {
            count: 100,
            window_ms: window,
            sliding: false,
        };
        store.update_at(key, now, |s| {
            let d = l.hit(s.and_then(Slot::count), now, 1);
            (Some(Stored::count(&l, d.state)), d.state.consumed)
        })
    }

    #[test]
    fn ended_windows_are_dropped_on_later_updates_without_a_scan() {
        let store = LocalStore::new(1_000_000, SlotMetrics::new());
        for i in 0..1000 {
            count_at(&store, &format!("k{i}"), 0, 1000);
        }
        assert_eq!(store.len(), 1000);
        assert_eq!(store.metrics.keys.get(), 1000);
        // After the windows ended, each update drops at most EXPIRE_BUDGET entries of its
        // shard and of the next one of the round robin: 800 updates tidy each of the 32
        // shards 25 times (100 entries), far above the ~31 a shard holds (random hashing
        // put up to 53 in one: 400 updates were not always enough).
        for i in 0..800 {
            count_at(&store, "hot", 2000 + i, 60_000);
        }
        let (entries, items) = store.sizes();
        assert!(entries <= 1, "left: {entries}");
        assert_eq!(items, entries);
        assert_eq!(store.metrics.keys.get() as usize, entries);
        assert_eq!(store.metrics.evictions.get(), 0);
        // Expired state reads as none even before it is dropped.
        assert_eq!(count_at(&store, "x", 0, 1000), 1);
        assert_eq!(count_at(&store, "x", 1000, 1000), 1);
    }

    #[test]
    fn the_cap_evicts_the_entry_due_soonest_and_counts_it() {
        let store = LocalStore::new(SHARDS * 4, SlotMetrics::new());
        for i in 0..10_000 {
            count_at(&store, &format!("k{i}"), i, 1_000_000);
        }
        let (entries, items) = store.sizes();
        assert!(entries <= SHARDS * 4, "{entries}");
        assert_eq!(items, entries);
        assert_eq!(store.metrics.keys.get() as usize, entries);
        assert_eq!(store.metrics.evictions.get() as usize, 10_000 - entries);
        // The newest keys survive: the oldest windows end first.
        assert_eq!(count_at(&store, "k9999", 10_000, 1_000_000), 2);
    }

    #[test]
    fn held_slots_are_kept_past_eviction_and_released_ones_dropped() {
        let store = LocalStore::new(SHARDS * 4, SlotMetrics::new());
        let held = "held";
        store.update_at(held, 0, |_| (Some(Stored::conn(1)), ()));
        for i in 0..5_000 {
            count_at(&store, &format!("k{i}"), 1, 1_000_000);
        }
        assert_eq!(
            store.update_at(held, 2, |s| (
                s.map(|s| Stored {
                    slot: s,
                    until: HELD
                }),
                s
            )),
            Some(Slot::Conn(1))
        );
        // Released: read as none at once, dropped when its item comes due.
        store.update_at(held, 3, |_| (None, ()));
        assert_eq!(store.update_at(held, 4, |s| (None, s)), None);
        for i in 0..2_000 {
            store.update_at(&format!("c{i}"), HELD_RECHECK_MS * 2, |_| (None, ()));
        }
        let (entries, items) = store.sizes();
        assert_eq!(items, entries);
        assert_eq!(store.metrics.keys.get() as usize, entries);
    }

    #[test]
    fn a_drained_bucket_expires_when_it_equals_no_state() {
        let l = ReqLimit {
            rate: 2.0,
            burst: 1.0,
            nodelay: true,
        };
        let s = Stored::req(
            &l,
            ReqState {
                excess: 1000,
                last_ms: 10,
            },
        );
        // 2000 milli-requests at 2 requests/s: 1 s.
        assert_eq!(s.until, 1010);
        let Slot::Req(st) = s.slot else { panic!() };
        assert_eq!(l.excess_after(Some(st), 1010), l.excess_after(None, 1010));
        assert!(l.excess_after(Some(st), 1009) > 0.0);
    }
}
