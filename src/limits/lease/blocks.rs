//! Slot blocks (conn) and token blocks (tokens, spend): leases held in Redis as members
//! of the limit's set, like running requests' own, and handed out here (see [`super`]).

use super::Traffic;

/// The most slots one conn key's block holds.
pub const MAX_SLOTS: u64 = 256;

/// The conn slots this instance holds for one key: members of the key's set in Redis,
/// refreshed like requests' leases, and how many local requests use them.
#[derive(Debug, Default)]
pub struct SlotBlock {
    /// The members held in Redis (each one slot).
    pub members: Vec<String>,
    pub in_use: u64,
    /// The most in use since the last tidy.
    peak: u64,
    pub(super) traffic: Traffic,
}

impl SlotBlock {
    fn held(&self) -> u64 {
        self.members.len() as u64
    }

    /// The slots to ask for with a request that goes to Redis: none for a key that is
    /// not hot or while slots are free; else as many as held (doubling), at least two.
    pub fn want(&mut self, now_ms: u64) -> u64 {
        self.traffic.note(now_ms);
        if !self.traffic.hot() || self.in_use < self.held() {
            return 0;
        }
        let want = self
            .held()
            .max(2)
            .min(MAX_SLOTS.saturating_sub(self.held()));
        self.traffic.ask(want, now_ms)
    }

    /// The call that asked has answered.
    pub fn answered(&mut self) {
        self.traffic.answered();
    }

    /// Whether a slot is free.
    pub fn ready(&self) -> bool {
        self.in_use < self.held()
    }

    /// Take a free slot.
    pub fn take(&mut self, now_ms: u64) -> bool {
        if !self.ready() {
            return false;
        }
        self.traffic.note(now_ms);
        self.take_noted()
    }

    /// Take a free slot for a request whose traffic [`Self::want`] has noted already.
    pub fn take_noted(&mut self) -> bool {
        if !self.ready() {
            return false;
        }
        self.in_use += 1;
        self.peak = self.peak.max(self.in_use);
        true
    }

    /// Put a slot back (its request ended).
    pub fn put(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// Add granted slots.
    pub fn grant(&mut self, members: impl IntoIterator<Item = String>) {
        self.traffic.answered();
        self.members.extend(members);
    }

    /// The members to give back: the slots that stayed unused since the last tidy (all
    /// of them when `all`, on shutdown: only those not in use).
    pub fn idle(&mut self, all: bool) -> Vec<String> {
        let keep = if all { self.in_use } else { self.peak };
        let keep = keep.min(self.held()) as usize;
        self.peak = self.in_use;
        self.members.split_off(keep)
    }

    /// Held slots not in use (counted as outstanding).
    pub fn free(&self) -> u64 {
        self.held().saturating_sub(self.in_use)
    }

    /// Whether the block can be forgotten: nothing held, no recent traffic.
    pub fn forgettable(&self, now_ms: u64) -> bool {
        self.members.is_empty() && self.in_use == 0 && !self.traffic.recent(now_ms)
    }
}

/// One block of tokens (or micro-dollars) reserved in Redis as the member `member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBlock {
    pub id: u64,
    pub member: String,
    pub size: u64,
    /// Reserved by local requests still running.
    pub reserved: u64,
    /// Used by local requests that ended (committed when the block goes back).
    pub used: u64,
}

impl TokenBlock {
    fn free(&self) -> u64 {
        self.size
            .saturating_sub(self.reserved)
            .saturating_sub(self.used)
    }

    fn overdrawn(&self) -> bool {
        self.reserved.saturating_add(self.used) > self.size
    }
}

/// The token blocks of one key: the current one (reservations come from it) and retired
/// ones whose requests are still running.
#[derive(Debug, Default)]
pub struct TokenBlocks {
    current: Option<TokenBlock>,
    retired: Vec<TokenBlock>,
    /// What Redis had left for others after the last grant (for the quota headers).
    others: u64,
    /// The window's length, and when it resets (local ms, for the quota headers).
    pub window_ms: u64,
    reset_at: u64,
    /// Whether the current block served a request since the last tidy.
    touched: bool,
    next_id: u64,
    pub(super) traffic: Traffic,
}

impl TokenBlocks {
    /// The block to ask for with a request of `need` that goes to Redis: none for a key
    /// that is not hot; else [`super::HORIZON_MS`] of requests at `need` each, also while
    /// the current block has room (a request that goes to Redis anyway, because another of
    /// its leases ran out, renews the block: its own reservation then goes into the new
    /// block, where it needs no release call of its own, and the old block goes back
    /// riding a later call).
    pub fn want(&mut self, need: u64, now_ms: u64) -> u64 {
        self.traffic.note(now_ms);
        let per = self.traffic.per_horizon();
        if per == 0 {
            return 0;
        }
        let want = need.max(1).saturating_mul(per.clamp(4, super::MAX_UNITS));
        self.traffic.ask(want, now_ms)
    }

    /// The call that asked has answered.
    pub fn answered(&mut self) {
        self.traffic.answered();
    }

    /// Whether the current block has `need` free.
    pub fn ready(&self, need: u64) -> bool {
        self.current.as_ref().is_some_and(|b| b.free() >= need)
    }

    /// Reserve `need` in the current block: its id, and what is left to this instance's
    /// knowledge and when the window resets (for the quota headers).
    pub fn reserve(&mut self, need: u64, now_ms: u64) -> Option<(u64, u64, u64)> {
        let b = self.current.as_mut().filter(|b| b.free() >= need)?;
        self.traffic.note(now_ms);
        b.reserved = b.reserved.saturating_add(need);
        self.touched = true;
        let left = self.others.saturating_add(b.free());
        Some((b.id, left, self.reset_at.saturating_sub(now_ms)))
    }

    /// A request of block `id` ended: `reserved` released, `used` charged. Returns the
    /// blocks to give back (retired with nothing running). A block overdrawn is retired.
    pub fn finish(&mut self, id: u64, reserved: u64, used: u64) -> Vec<TokenBlock> {
        let current = self.current.as_mut().filter(|b| b.id == id);
        let block = match current {
            Some(b) => Some(b),
            None => self.retired.iter_mut().find(|b| b.id == id),
        };
        if let Some(b) = block {
            b.reserved = b.reserved.saturating_sub(reserved);
            b.used = b.used.saturating_add(used);
        }
        if self.current.as_ref().is_some_and(TokenBlock::overdrawn) {
            self.retire();
        }
        self.done()
    }

    /// A granted block becomes the current one (the previous one retires); Redis had
    /// `others` left after it, and its window resets at `reset_at`. Returns the blocks to
    /// give back.
    pub fn grant(
        &mut self,
        member: String,
        size: u64,
        others: u64,
        reset_at: u64,
    ) -> Vec<TokenBlock> {
        self.grant_reserved(member, size, others, reset_at, 0).0
    }

    /// [`Self::grant`] of a block that already holds `reserved` for the request that asked
    /// for it (admit.lua puts that request's reservation in the block); also the block's id.
    pub fn grant_reserved(
        &mut self,
        member: String,
        size: u64,
        others: u64,
        reset_at: u64,
        reserved: u64,
    ) -> (Vec<TokenBlock>, u64) {
        self.traffic.answered();
        self.retire();
        self.reset_at = reset_at;
        self.touched = true;
        self.next_id += 1;
        self.current = Some(TokenBlock {
            id: self.next_id,
            member,
            size,
            reserved,
            used: 0,
        });
        self.others = others;
        (self.done(), self.next_id)
    }

    fn retire(&mut self) {
        if let Some(b) = self.current.take() {
            self.retired.push(b);
        }
    }

    /// Retired blocks with no request running, taken out to give back.
    fn done(&mut self) -> Vec<TokenBlock> {
        let (done, running) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|b| b.reserved == 0);
        self.retired = running;
        done
    }

    /// Each tidy: retire the current block once it was used (so usage reaches Redis within
    /// a tidy period), when it served nothing since the last tidy (an idle block only
    /// holds room others could use), or when `all` (shutdown); the blocks to give back.
    pub fn tidy(&mut self, all: bool) -> Vec<TokenBlock> {
        if all || !self.touched || self.current.as_ref().is_some_and(|b| b.used > 0) {
            self.retire();
        }
        self.touched = false;
        self.done()
    }

    /// Free room in the current block (counted as outstanding).
    pub fn free(&self) -> u64 {
        self.current.as_ref().map_or(0, TokenBlock::free)
    }

    /// Every member still held (refreshed with the requests' leases).
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.current
            .iter()
            .chain(&self.retired)
            .map(|b| b.member.as_str())
    }

    /// Whether the blocks can be forgotten: nothing held, no recent traffic.
    pub fn forgettable(&self, now_ms: u64) -> bool {
        self.current.is_none() && self.retired.is_empty() && !self.traffic.recent(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time in the tick after a request was noted every 10 ms over 0..1000 ms (100 a
    /// second, busy for a second).
    fn hot(now: u64) -> u64 {
        now + 1000
    }

    #[test]
    fn a_slot_block_grows_when_full_and_gives_back_what_stayed_idle() {
        let mut b = SlotBlock::default();
        for ms in (0..1000).step_by(10) {
            assert_eq!(b.want(ms), 0, "not hot yet");
        }
        assert_eq!(b.want(hot(0)), 2);
        b.grant(["l#1".to_string(), "l#2".to_string()]);
        assert!(b.take(hot(1)) && b.take(hot(2)) && !b.take(hot(3)));
        assert_eq!(b.want(hot(4)), 2, "doubles when full");
        b.grant(["m#1".to_string(), "m#2".to_string()]);
        assert!(b.take(hot(5)));
        b.put();
        b.put();
        b.put();
        // The peak was 3: one of four stayed idle.
        assert_eq!(b.idle(false), vec!["m#2".to_string()]);
        assert_eq!((b.free(), b.in_use), (3, 0));
        // Nothing was in use over the next period: all three go back.
        assert_eq!(b.idle(false).len(), 3);
        assert!(b.forgettable(10_000));
    }

    #[test]
    fn token_blocks_reserve_charge_retire_and_give_back_when_their_requests_end() {
        let mut t = TokenBlocks::default();
        for ms in (0..1000).step_by(10) {
            t.want(100, ms);
        }
        assert_eq!(t.want(100, hot(0)), 100 * 100);
        assert!(t.grant("l#t|1000".into(), 1000, 5000, 60_000).is_empty());
        let (id, left, reset) = t.reserve(300, hot(1)).unwrap();
        assert_eq!((left, reset), (5000 + 700, 60_000 - 1001));
        assert!(t.reserve(800, hot(2)).is_none());
        // Used less than reserved: the rest is free again.
        assert!(t.finish(id, 300, 120).is_empty());
        assert_eq!(t.free(), 880);
        // An overdraft retires the block; it goes back once its requests ended.
        let (a, ..) = t.reserve(400, hot(3)).unwrap();
        let (b, ..) = t.reserve(400, hot(3)).unwrap();
        assert!(t.finish(a, 400, 900).is_empty());
        assert_eq!(t.free(), 0, "retired");
        let back = t.finish(b, 400, 10);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].used, back[0].reserved), (120 + 900 + 10, 0));
        assert!(t.members().next().is_none());
    }

    #[test]
    fn a_request_that_goes_to_redis_renews_the_block_of_a_hot_key() {
        let mut t = TokenBlocks::default();
        assert_eq!(t.want(100, 0), 0, "not hot");
        for ms in (0..1000).step_by(10) {
            t.want(100, ms);
        }
        let want = t.want(100, hot(0));
        assert_eq!(want, 100 * 100);
        t.grant("a".into(), want, 0, 60_000);
        // The block still has room: a request that goes to Redis for another lease asks
        // for the next block all the same (its reservation goes into it).
        t.reserve(100, hot(1)).unwrap();
        assert!(t.ready(100));
        assert!(t.want(100, hot(2)) > 0);
    }

    #[test]
    fn a_used_block_retires_at_tidy_and_a_new_grant_replaces_the_current_one() {
        let mut t = TokenBlocks::default();
        t.grant("a".into(), 100, 0, 0);
        assert!(t.tidy(false).is_empty(), "just granted: kept");
        let (id, ..) = t.reserve(10, 0).unwrap();
        // A new grant retires the current block, which still has a request running.
        assert!(t.grant("b".into(), 100, 0, 0).is_empty());
        assert_eq!(t.members().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(t.finish(id, 10, 7)[0].used, 7);
        t.reserve(5, 0).unwrap();
        assert!(t.tidy(true).is_empty(), "running requests keep it");
        // A block that served nothing over a tidy period goes back.
        t.grant("c".into(), 100, 0, 0);
        assert!(t.tidy(false).is_empty());
        assert_eq!(t.tidy(false)[0].member, "c");
    }
}
