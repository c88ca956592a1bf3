//! What a request admitted from quota leases holds: slots of this instance's blocks and
//! reservations in its token blocks. Given back here, in memory, when the request ends;
//! a token block that is done (retired, its last request ended) goes back to Redis with
//! what its requests used.

use super::leasable::{leasable, numbers, Leasable};
use super::*;
use crate::limits::lease::LeaseState;

/// One thing a leased admission holds.
pub(super) enum Part {
    /// A slot of the key's block.
    Slot { key: String, alternative: bool },
    /// `reserved` in token block `block` of the key.
    Tokens {
        key: String,
        block: u64,
        reserved: u64,
        window_ms: u64,
        charge: Option<Charge>,
        alternative: bool,
    },
}

impl Part {
    fn alternative(&self) -> bool {
        match self {
            Part::Slot { alternative, .. } | Part::Tokens { alternative, .. } => *alternative,
        }
    }
}

pub(super) struct LeaseHold {
    store: Arc<RedisStore>,
    parts: Vec<Part>,
}

impl LeaseHold {
    pub(super) fn new(store: Arc<RedisStore>, parts: Vec<Part>) -> LeaseHold {
        LeaseHold { store, parts }
    }

    /// Give `parts` back: slots freed, token reservations replaced by what was used
    /// (`finished` with `usage`: its cost; finished without: the reservation; dropped: 0,
    /// as a request's own release charges).
    fn give_back(&self, parts: Vec<Part>, usage: Option<&TokenUsage>, finished: bool) {
        if parts.is_empty() {
            return;
        }
        let mut back = Vec::new();
        // The store stopped leasing (shutdown): the state is still there to put back to.
        let Some(lock) = self.store.quota_leases.as_ref() else {
            return;
        };
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        for p in parts {
            match p {
                Part::Slot { key, .. } => {
                    if let Some(b) = state.slots.get_mut(&key) {
                        b.put();
                    }
                }
                Part::Tokens {
                    key,
                    block,
                    reserved,
                    window_ms,
                    charge,
                    ..
                } => {
                    let used = match (finished, usage) {
                        (false, _) => 0,
                        (true, Some(u)) => {
                            let cost = charge.as_ref().map_or(0, |c| u.cost(c));
                            if u.at_least_reserved {
                                cost.max(reserved)
                            } else {
                                cost
                            }
                        }
                        (true, None) => reserved,
                    };
                    if let Some(b) = state.tokens.get_mut(&key) {
                        let zset = format!("{key}:r");
                        back.extend(
                            b.finish(block, reserved, used)
                                .into_iter()
                                .map(|t| block_release(&key, &zset, window_ms, t.member, t.used)),
                        );
                    }
                }
            }
        }
        // After shutdown began, slots go back as soon as their requests end.
        if !self.store.leasing.load(Ordering::Relaxed) {
            for (key, b) in state.slots.iter_mut() {
                back.extend(b.idle(true).into_iter().map(|m| slot_release(key, m)));
            }
        }
        let now = self.store.lease_now();
        self.store.metrics.lease_units.set(outstanding(&state, now));
        drop(state);
        if !back.is_empty() {
            self.store.give_back_later(back);
        }
    }
}

/// Slots a request that goes to Redis took from its blocks before the call (see
/// `RedisStore::take_free_slots`), held until the answer says which groups admitted it.
pub(super) struct SlotsTaken {
    /// Per check of the call, whether its slot was taken (the call leaves it out; the
    /// caller takes this vector out to decide what it sends).
    pub(super) checks: Vec<bool>,
    pub(super) hold: LeaseHold,
}

impl SlotsTaken {
    /// The slots the admitted groups keep (the required group's once it `passed`, the
    /// first alternative's when it was `first_chosen`); the rest go back to their blocks.
    pub(super) fn keep(self, passed: bool, first_chosen: bool) -> Vec<Part> {
        let mut hold = self.hold;
        let (keep, back) = std::mem::take(&mut hold.parts)
            .into_iter()
            .partition(|p| kept(p, passed, first_chosen));
        hold.parts = back;
        keep
    }
}

/// Whether an admission keeps `part`, taken before its call: see [`SlotsTaken::keep`].
fn kept(part: &Part, passed: bool, first_chosen: bool) -> bool {
    passed && (!part.alternative() || first_chosen)
}

impl RedisStore {
    /// For a request that goes to Redis for its other checks: its conn checks (of the
    /// required group and the first alternative, as a leased admission's) whose slot block
    /// has a free slot take that slot here. The call leaves them out — Redis counts the
    /// block's slots already, so this is as exact as a leased admission — and the request
    /// ends without a release call. `None` when no check can (or every one could: then
    /// nothing needed Redis). `eligible`: how many checks, from the first, may.
    pub(super) fn take_free_slots(
        self: &Arc<Self>,
        checks: &[&Check<'_>],
        keys: &[(String, String)],
        estimate: Estimate,
        (required, eligible): (usize, usize),
    ) -> Option<SlotsTaken> {
        let mut state = self.lock_quota()?;
        let free: Vec<usize> = (0..eligible.min(checks.len()))
            .filter(|&i| {
                let (c, key) = (checks[i], keys[i].0.as_str());
                matches!(leasable(c, estimate), Some(Leasable::Conn))
                    && state.numbers.get(key) == Some(&numbers(&c.kind))
                    && state.slots.get(key).is_some_and(|b| b.ready())
            })
            .collect();
        if free.is_empty() || free.len() == checks.len() {
            return None;
        }
        let mut taken = vec![false; checks.len()];
        let mut parts = Vec::with_capacity(free.len());
        for i in free {
            let key = &keys[i].0;
            // Two checks of one key: the second may find the block full.
            if state.slots.get_mut(key).is_some_and(|b| b.take_noted()) {
                taken[i] = true;
                parts.push(Part::Slot {
                    key: key.clone(),
                    alternative: i >= required,
                });
            }
        }
        drop(state);
        Some(SlotsTaken {
            checks: taken,
            hold: LeaseHold::new(self.clone(), parts),
        })
    }
}

impl Hold for LeaseHold {
    fn finish(mut self: Box<Self>, usage: Option<TokenUsage>) -> Option<Released> {
        let parts = std::mem::take(&mut self.parts);
        self.give_back(parts, usage.as_ref(), true);
        None
    }

    fn release_choice(&mut self) {
        let (alt, keep) = std::mem::take(&mut self.parts)
            .into_iter()
            .partition(Part::alternative);
        self.parts = keep;
        self.give_back(alt, None, false);
    }

    fn is_shared(&self) -> bool {
        true
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        let parts = std::mem::take(&mut self.parts);
        self.give_back(parts, None, false);
    }
}

/// Units, slots and token room held and not in use: the most other instances can be
/// refused while under a limit.
pub(super) fn outstanding(state: &LeaseState, now: u64) -> i64 {
    let slots: u64 = state.slots.values().map(|b| b.free()).sum();
    let tokens: u64 = state.tokens.values().map(|b| b.free()).sum();
    state
        .units
        .outstanding(now)
        .saturating_add(slots)
        .saturating_add(tokens) as i64
}

/// The release of one slot of a block.
pub(super) fn slot_release(key: &str, member: String) -> Release {
    Release {
        kind: Release::CONN,
        key: key.to_string(),
        zset: key.to_string(),
        member,
        window_ms: 0,
        used: 0,
    }
}

/// The release of a token block: its member removed, `used` committed to the window.
pub(super) fn block_release(
    key: &str,
    zset: &str,
    window_ms: u64,
    member: String,
    used: u64,
) -> Release {
    Release {
        kind: Release::TOKENS,
        key: key.to_string(),
        zset: zset.to_string(),
        member,
        window_ms,
        used,
    }
}

/// The release of a rate share: its member removed, its bucket's excess added to the
/// rule's bucket (leaked there at the rule's rate less the shares').
pub(super) fn share_release(
    key: &str,
    zset: &str,
    rule_rate: u64,
    share: &crate::limits::lease::shares::RateShare,
    now: u64,
) -> Release {
    Release {
        kind: Release::SHARE,
        key: key.to_string(),
        zset: zset.to_string(),
        member: share.member.clone(),
        window_ms: rule_rate,
        used: share.excess_now(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_taken_before_the_call_stay_only_with_the_groups_admitted() {
        let slot = |alternative| Part::Slot {
            key: "k".into(),
            alternative,
        };
        // The required group's: kept once it passed.
        assert!(kept(&slot(false), true, false));
        assert!(!kept(&slot(false), false, false));
        // The first alternative's: kept when it was the one chosen.
        assert!(kept(&slot(true), true, true));
        assert!(!kept(&slot(true), true, false));
        assert!(!kept(&slot(true), false, true));
    }
}
