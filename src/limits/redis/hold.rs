//! What an admitted request holds in Redis (concurrency leases, token reservations) and
//! how it is given back.

use super::lease_hold::LeaseHold;
use super::*;

/// One lease an admitted request holds in Redis.
pub(super) struct Held {
    /// Part of the chosen alternative (not the required group).
    pub(super) alternative: bool,
    pub(super) kind: u8,
    pub(super) key: String,
    pub(super) zset: String,
    pub(super) member: String,
    pub(super) window_ms: u64,
    pub(super) tokens: u64,
    pub(super) charge: Option<Charge>,
}

/// The leases an admitted request holds in Redis; given back when finished or dropped.
/// `leased`: its reservations in token blocks this instance holds (a block granted with
/// the request's own reservation in it), given back locally.
pub struct RedisHold {
    pub(super) store: Arc<RedisStore>,
    pub(super) seq: u64,
    pub(super) held: Vec<Held>,
    pub(super) leased: Option<LeaseHold>,
}

impl Hold for RedisHold {
    fn finish(mut self: Box<Self>, usage: Option<TokenUsage>) -> Option<Released> {
        if let Some(leased) = self.leased.take() {
            // Local: nothing to wait for.
            let _ = Box::new(leased).finish(usage.clone());
        }
        let held = std::mem::take(&mut self.held);
        self.give_back(held, usage, true)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn release_choice(&mut self) {
        if let Some(leased) = self.leased.as_mut() {
            leased.release_choice();
        }
        let (alt, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.alternative);
        self.held = keep;
        if !alt.is_empty() {
            let live = self
                .held
                .iter()
                .map(|h| (h.zset.clone(), h.member.clone()))
                .collect();
            self.store.lock_leases().insert(self.seq, live);
            self.give_back(alt, None, false);
        }
    }
}

impl RedisHold {
    /// Send releases for `held`; `finished` charges usage and asks for an acknowledgement.
    fn give_back(
        &mut self,
        held: Vec<Held>,
        usage: Option<TokenUsage>,
        finished: bool,
    ) -> Option<Released> {
        if held.is_empty() {
            return None;
        }
        if self.held.is_empty() {
            self.store.lock_leases().remove(&self.seq);
        }
        let releases = held
            .into_iter()
            .map(|h| {
                let used = match (finished, &usage) {
                    (false, _) => 0,
                    (true, Some(u)) => {
                        let cost = h.charge.as_ref().map_or(0, |c| u.cost(c));
                        if u.at_least_reserved {
                            cost.max(h.tokens)
                        } else {
                            cost
                        }
                    }
                    (true, None) => h.tokens,
                };
                Release {
                    kind: h.kind,
                    key: h.key,
                    zset: h.zset,
                    member: h.member,
                    window_ms: h.window_ms,
                    used,
                }
            })
            .collect();
        let (tx, rx) = if finished {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.store.send_release(ReleaseMsg::now(releases, tx));
        rx
    }
}

impl Drop for RedisHold {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.give_back(held, None, false);
    }
}
