//! Count units: slices of a shared fixed-window count (see [`super`] for the exactness
//! argument). Each unit was counted in Redis when it was granted; it is spent for one
//! request before the window that counted it ends, or handed back to that same window.

use super::{Traffic, MAX_UNITS};
use std::collections::HashMap;

/// How far two readings of one window's end (Redis time) may differ.
pub const WINDOW_END_SLACK_MS: u64 = 2;

/// One counter's lease and traffic.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Units left to spend.
    units: u64,
    /// Spend only before this (local monotonic ms).
    deadline_ms: u64,
    /// The window's end in Redis time, which identifies it when units are returned.
    window_end: u64,
    /// What Redis had left for others after the last grant (for the quota headers).
    others: u64,
    traffic: Traffic,
}

/// A request's quota as a lease reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseQuota {
    /// What is left in the window as this instance knows it.
    pub remaining: u64,
    pub reset_ms: u64,
}

/// Units handed back: the counter, its window's end in Redis time, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    pub key: String,
    pub window_end: u64,
    pub units: u64,
}

/// The count units of one instance, keyed by Redis counter key; at most `max` counters.
#[derive(Debug)]
pub struct Units {
    map: HashMap<String, Entry>,
    max: usize,
}

impl Units {
    pub fn new(max: usize) -> Units {
        Units {
            map: HashMap::new(),
            max,
        }
    }

    /// The units to ask for with a request of `key` that goes to Redis (0: none). Counts
    /// the request in the key's traffic. A key seen for the first time is tracked only
    /// while there is room.
    pub fn want(&mut self, key: &str, now_ms: u64) -> u64 {
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            return 0;
        }
        let e = self.map.entry(key.to_string()).or_default();
        e.traffic.note(now_ms);
        let want = e.traffic.per_horizon().min(MAX_UNITS);
        // What is held still serves the next requests; once less than half of a horizon's
        // is left, a request that goes to Redis anyway (another of its leases ran out)
        // tops it up, so the leases of a key's limits run out, and renew, together.
        if e.units > 0 && now_ms < e.deadline_ms && e.units.saturating_mul(2) >= want {
            return 0;
        }
        e.traffic.ask(want, now_ms)
    }

    /// The call that asked for `key`'s lease has answered.
    pub fn answered(&mut self, key: &str) {
        if let Some(e) = self.map.get_mut(key) {
            e.traffic.answered();
        }
    }

    /// Drop the units of `key` (never spent).
    pub fn forget(&mut self, key: &str) {
        if let Some(e) = self.map.get_mut(key) {
            e.units = 0;
        }
    }

    /// Whether units of `key` were asked for and not answered yet.
    pub fn asking(&self, key: &str, now_ms: u64) -> bool {
        self.map.get(key).is_some_and(|e| e.traffic.asking(now_ms))
    }

    /// The units of `key` spendable now.
    pub fn held(&self, key: &str, now_ms: u64) -> u64 {
        self.map
            .get(key)
            .filter(|e| now_ms < e.deadline_ms)
            .map_or(0, |e| e.units)
    }

    /// Whether `key` has a unit to spend now.
    pub fn ready(&self, key: &str, now_ms: u64) -> bool {
        self.map
            .get(key)
            .is_some_and(|e| e.units > 0 && now_ms < e.deadline_ms)
    }

    /// Spend one unit of `key` (call after [`Self::ready`] said yes for every key of the
    /// admission, under the same lock).
    pub fn spend(&mut self, key: &str, now_ms: u64) -> Option<LeaseQuota> {
        let e = self.map.get_mut(key)?;
        if e.units == 0 || now_ms >= e.deadline_ms {
            return None;
        }
        e.units -= 1;
        e.traffic.note(now_ms);
        Some(LeaseQuota {
            remaining: e.others.saturating_add(e.units),
            reset_ms: e.deadline_ms - now_ms,
        })
    }

    /// Record a grant of `units` for `key`: Redis had `others` left for everyone else
    /// after it, the window ends at `window_end` (Redis time), and the units may be spent
    /// until `deadline_ms`. Units still held from the same window are kept; units of an
    /// ended window are dropped.
    pub fn grant(
        &mut self,
        key: &str,
        units: u64,
        others: u64,
        window_end: u64,
        deadline_ms: u64,
        now_ms: u64,
    ) {
        let Some(e) = self.map.get_mut(key) else {
            return; // untracked (the table was full): the units are lost, never overspent
        };
        e.traffic.answered();
        // Redis time is read in milliseconds at the start of a call and the key's expiry at
        // its end: one window's end reads back within a millisecond or two (another
        // window's ends at least one window later).
        let same_window = e.window_end.abs_diff(window_end) <= WINDOW_END_SLACK_MS;
        if e.units > 0 && (now_ms >= e.deadline_ms || !same_window) {
            e.units = 0;
        }
        if e.units == 0 {
            e.window_end = window_end;
            e.deadline_ms = deadline_ms;
        } else {
            e.deadline_ms = e.deadline_ms.min(deadline_ms);
        }
        e.units = e.units.saturating_add(units);
        e.others = others;
    }

    /// Units held and still spendable (the worst case under-admission).
    pub fn outstanding(&self, now_ms: u64) -> u64 {
        self.map
            .values()
            .filter(|e| now_ms < e.deadline_ms)
            .map(|e| e.units)
            .sum()
    }

    /// Take every spendable unit back out, to return, and forget counters without traffic
    /// in the last two seconds (the table stays bounded by traffic, not by history).
    pub fn drain(&mut self, now_ms: u64) -> Vec<Return> {
        let mut out = Vec::new();
        self.map.retain(|key, e| {
            if e.units > 0 && now_ms < e.deadline_ms {
                out.push(Return {
                    key: key.clone(),
                    window_end: e.window_end,
                    units: e.units,
                });
            }
            e.units = 0;
            e.traffic.recent(now_ms)
        });
        out
    }

    /// Take back the spendable units of counters without traffic in this second or the
    /// last (idle units only keep others from the window), to return.
    pub fn drain_idle(&mut self, now_ms: u64) -> Vec<Return> {
        let mut out = Vec::new();
        for (key, e) in self.map.iter_mut() {
            if e.units > 0 && now_ms < e.deadline_ms && !e.traffic.recent(now_ms) {
                out.push(Return {
                    key: key.clone(),
                    window_end: e.window_end,
                    units: e.units,
                });
                e.units = 0;
            }
        }
        out
    }

    /// Forget counters whose lease ended and that saw no traffic for two seconds.
    pub fn prune(&mut self, now_ms: u64) {
        self.map
            .retain(|_, e| (e.units > 0 && now_ms < e.deadline_ms) || e.traffic.recent(now_ms));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_counter_leases_a_slice_of_its_rate_and_spends_it_locally() {
        let mut l = Units::new(10);
        // A request every 2 ms for a second: no lease while warming up.
        for i in (0..1000).step_by(2) {
            assert_eq!(l.want("k", i), 0);
        }
        // Then a second of that pace (500/s).
        assert_eq!(l.want("k", 1000), 500);
        l.grant("k", 50, 1000 - 50, 9_000_000, 60_000, 1000);
        assert!(l.ready("k", 1001));
        let q = l.spend("k", 1001).unwrap();
        assert_eq!(
            q,
            LeaseQuota {
                remaining: 950 + 49,
                reset_ms: 58_999
            }
        );
        assert_eq!(l.outstanding(1001), 49);
        // Less than half of a horizon's held: a request that goes to Redis anyway (another
        // of its leases ran out) tops them up.
        assert_eq!(l.want("k", 1002), 500);
        l.grant("k", 400, 500, 9_000_000, 60_000, 1002);
        // Half a horizon's or more held: not asked for again.
        assert_eq!(l.want("k", 1003), 0);
        // Past the deadline nothing is spent, and the units are not outstanding.
        assert!(!l.ready("k", 60_000));
        assert_eq!(l.spend("k", 60_000), None);
        assert_eq!(l.outstanding(60_000), 0);
    }

    #[test]
    fn grants_of_one_window_add_up_and_windows_do_not_mix() {
        let mut l = Units::new(10);
        l.want("k", 0);
        l.grant("k", 5, 100, 60_000, 50_000, 0);
        // Same window: units add up, the earlier deadline stays.
        l.grant("k", 3, 90, 60_000, 55_000, 10);
        assert_eq!(l.outstanding(10), 8);
        assert_eq!(l.spend("k", 10).unwrap().reset_ms, 49_990);
        // A reading of the same window's end a millisecond off is the same window.
        l.grant("k", 1, 85, 60_001, 55_000, 10);
        assert_eq!(l.outstanding(10), 8);
        // Another window's grant drops what was left of the old one.
        l.grant("k", 2, 80, 120_000, 110_000, 10);
        assert_eq!(l.outstanding(10), 2);
        assert_eq!(
            l.drain(10),
            vec![Return {
                key: "k".into(),
                window_end: 120_000,
                units: 2
            }]
        );
        assert_eq!(l.outstanding(10), 0);
    }

    #[test]
    fn idle_units_are_taken_back() {
        let mut l = Units::new(10);
        l.want("k", 0);
        l.grant("k", 5, 100, 60_000, 50_000, 0);
        assert!(l.drain_idle(1_999).is_empty(), "still recent");
        assert_eq!(l.drain_idle(2_000)[0].units, 5);
        assert_eq!(l.outstanding(2_000), 0);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_quiet_counters() {
        let mut l = Units::new(2);
        l.want("a", 0);
        l.want("b", 0);
        assert_eq!(l.want("c", 0), 0);
        assert_eq!(l.len(), 2);
        // A grant for an untracked key is dropped (never spent).
        l.grant("c", 9, 0, 1, 1_000, 0);
        assert!(!l.ready("c", 1));
        l.prune(5_000);
        assert!(l.is_empty());
    }
}
