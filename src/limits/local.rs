//! The in-process store (`local` policy): the state of every counter, sharded behind
//! mutexes so that each decision on a key is atomic (APISIX's local limit-req reads and
//! writes without a lock across workers: reference bug 2). Time is a monotonic clock.

use super::count::CountState;
use super::req::ReqState;
use super::tokens::TokenState;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
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

const SHARDS: usize = 32;

pub struct LocalStore {
    shards: Vec<Mutex<HashMap<String, Slot>>>,
    hasher: RandomState,
    epoch: Instant,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }
}

impl LocalStore {
    /// Milliseconds on the store's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, Slot>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard only means another request panicked mid-update of plain data.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read-modify-write one counter atomically. `f` gets the current slot (if any) and
    /// returns the slot to store (`None` removes it) and a result.
    pub fn update<R>(&self, key: &str, f: impl FnOnce(Option<Slot>) -> (Option<Slot>, R)) -> R {
        let mut shard = self.shard(key);
        let (new, result) = f(shard.get(key).copied());
        match new {
            Some(s) => {
                if let Some(slot) = shard.get_mut(key) {
                    *slot = s;
                } else {
                    shard.insert(key.to_string(), s);
                }
            }
            None => {
                shard.remove(key);
            }
        }
        result
    }

    /// Number of counters held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
