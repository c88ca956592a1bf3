//! What a request admitted from quota leases holds: slots of this instance's blocks and
//! reservations in its token blocks. Given back here, in memory, when the request ends;
//! a token block that is done (retired, its last request ended) goes back to Redis with
//! what its requests used.

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
