//! Quota leases: slices of shared limits that one instance spends without calling Redis.
//!
//! With the Redis policies every admission used to run every limit's commands inside Redis,
//! which one node serves for the whole fleet. A hot limit now costs Redis a call per
//! *lease* instead of per request. When an admission goes to Redis anyway, each of its
//! realtime checks may ask for a lease, which `lua-compat/admit.lua` grants in the same
//! atomic decision, at most a quarter of what the limit has left:
//!
//! - a fixed-window **count** ([`units`]): `w` more units counted at once;
//! - **conn** ([`blocks::SlotBlock`]): `w` more slots, held as lease members like a
//!   running request's and refreshed with them; a request that goes to Redis for its
//!   other checks takes a free slot of the block before its call, which leaves the conn
//!   check out (no release call when it ends);
//! - **tokens** and **spend** ([`blocks::TokenBlocks`]): a block of `w` reserved like one
//!   request's estimate, together with the asking request's own reservation (one member,
//!   `<lease>#t|w+r`: that request is charged through the block, without a release call);
//! - **req** with `nodelay` ([`shares::Shares`]): a rate share, a leaky bucket of its own
//!   taken out of the rule's (which then leaks at the rate left and holds the burst left),
//!   once the request's group has passed.
//!
//! The instance then admits requests whose every check (the required group's and the
//! first deployment's) has room in what it holds, without a call: a unit spent, a slot
//! taken (and put back when the request ends), an estimate reserved in the block (and
//! the real usage charged to it). A token block goes back to Redis through the usual
//! release — its member removed, what its requests used committed — once it is retired
//! (spent, overdrawn, or at the next tidy) and its last request has ended.
//!
//! **Exactness.** What an instance hands out was counted, taken or reserved in Redis
//! before it was granted, in the same atomic script that checked the limit, so Redis never
//! holds less than the fleet has admitted: no limit ever admits past its bound, whatever
//! the number of instances. Count units are spent only before `sent + reset` on this
//! instance's monotonic clock (`sent`: when the call left; `reset`: what Redis said
//! remained of the window when it ran), so never after the window that counted them has
//! ended in Redis. Slots and blocks are leases refreshed like a request's: a crashed
//! instance's expire after `lease_ttl`. A request that uses more tokens than its estimate
//! retires its block at once, so the overdraft reaches Redis when the block's last request
//! ends, as a request's own release would.
//!
//! **What leases cost** is the other way: what is leased and not yet used is refused to
//! other instances. That under-admission is at most the outstanding leases (the
//! `gateway_limiter_lease_units` gauge), each grant at most a quarter of what was left, so
//! leases shrink to nothing — one call per request, as without them — near a limit.
//!
//! **Sizing.** Only a hot key leases: one this instance has seen busy for at least
//! [`WARM_MS`] (or [`FAST_WARM_MS`] at [`FAST_PER_SECOND`] and more), at a pace of at
//! least [`HOT_PER_SECOND`] requests a second over the last tenths of a second. Count
//! units cover [`HORIZON_MS`] of that rate; a slot block doubles when it runs out and
//! gives back what stayed idle over a tidy period; a token block covers [`HORIZON_MS`] of
//! requests at the current estimate; a rate share is three times the key's pace.
//!
//! **Returns.** Unused count units go back (`lua-compat/lease_return.lua`) on shutdown,
//! only into the window they were taken from (identified by its end in Redis time); slots
//! and blocks go back through the release path. A crashed instance returns nothing: its
//! count units are lost until the window ends, its slots and blocks after `lease_ttl`.
//!
//! This module is pure state (unit-tested with a fake clock); `super::redis::leases` does
//! the I/O.

pub mod blocks;
pub mod shares;
pub mod units;

pub use blocks::{SlotBlock, TokenBlocks};
pub use shares::Shares;
pub use units::{LeaseQuota, Return, Units};

/// How much traffic a lease covers: this many milliseconds at the previous second's rate
/// (near a limit a grant is smaller: at most a quarter of what is left).
pub const HORIZON_MS: u64 = 1000;
/// A key leases once this instance saw it this many times in the previous second.
pub const HOT_PER_SECOND: u64 = 10;
/// The most count units asked for at once.
pub const MAX_UNITS: u64 = 4096;

/// How long one measure of a key's traffic lasts: a key's rate is what it saw in the
/// previous tenth of a second, so a key that turns hot leases within two tenths.
const TICK_MS: u64 = 100;

/// How long a key must stay busy before it leases.
pub const WARM_MS: u64 = 1000;
/// A key this busy (requests a second, in each of the two previous ticks) leases after
/// [`FAST_WARM_MS`] instead: a fleet's hot keys spend less of their first second in Redis,
/// while a test's or a client's short burst still stays exact per request.
pub const FAST_PER_SECOND: u64 = 1000;
/// How long a key at [`FAST_PER_SECOND`] must stay busy before it leases.
pub const FAST_WARM_MS: u64 = 300;

/// How long an ask for a lease holds back the next one of the same key.
const ASK_MS: u64 = 1000;

/// Requests of one key in the current tick and the two before, and whether a lease was
/// asked for and not answered yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    tick: u64,
    this_tick: u64,
    last_tick: u64,
    tick_before: u64,
    last_ms: u64,
    /// When the key's current busy streak began (no two quiet ticks since).
    since_ms: Option<u64>,
    asked_ms: Option<u64>,
}

impl Traffic {
    /// Count a request at `now_ms`.
    pub fn note(&mut self, now_ms: u64) {
        let tick = now_ms / TICK_MS;
        if tick != self.tick {
            let gap = tick.saturating_sub(self.tick);
            (self.tick_before, self.last_tick) = match gap {
                1 => (self.last_tick, self.this_tick),
                2 => (self.this_tick, 0),
                _ => {
                    self.since_ms = None;
                    (0, 0)
                }
            };
            self.this_tick = 0;
            self.tick = tick;
        }
        self.this_tick = self.this_tick.saturating_add(1);
        self.last_ms = now_ms;
        self.since_ms.get_or_insert(now_ms);
    }

    /// Requests per second at the pace of the busier of the two previous ticks (a
    /// random arrival's quiet tick does not shrink a lease).
    fn rate(&self) -> u64 {
        self.last_tick
            .max(self.tick_before)
            .saturating_mul(1000 / TICK_MS)
    }

    /// Whether the key is hot enough to lease: [`HOT_PER_SECOND`] requests per second,
    /// busy for at least [`WARM_MS`], or [`FAST_PER_SECOND`] sustained over both previous
    /// ticks and busy for [`FAST_WARM_MS`] (a short burst stays exact per request).
    pub fn hot(&self) -> bool {
        let busy_ms = self.since_ms.map_or(0, |s| self.last_ms.saturating_sub(s));
        let sustained = self
            .last_tick
            .min(self.tick_before)
            .saturating_mul(1000 / TICK_MS);
        let warm = busy_ms >= WARM_MS || (busy_ms >= FAST_WARM_MS && sustained >= FAST_PER_SECOND);
        warm && self.rate() >= HOT_PER_SECOND
    }

    /// Requests expected within [`HORIZON_MS`] at the current pace (0: the key is not hot
    /// enough to lease).
    pub fn per_horizon(&self) -> u64 {
        match self.hot() {
            true => self.rate().saturating_mul(HORIZON_MS) / 1000,
            false => 0,
        }
    }

    /// Requests per second at the current pace (0: the key is not hot enough to lease).
    pub fn per_second(&self) -> u64 {
        match self.hot() {
            true => self.rate(),
            false => 0,
        }
    }

    /// Whether this request may ask for a lease of `want` (> 0): not while another
    /// request's ask is in flight (requests of one key that miss together would each get
    /// a lease; one is enough), unless that ask is older than [`ASK_MS`] (its call failed).
    pub fn ask(&mut self, want: u64, now_ms: u64) -> u64 {
        if want == 0
            || self
                .asked_ms
                .is_some_and(|t| now_ms < t.saturating_add(ASK_MS))
        {
            return 0;
        }
        self.asked_ms = Some(now_ms);
        want
    }

    /// Whether a lease asked for less than [`ASK_MS`] ago has not been answered yet.
    pub fn asking(&self, now_ms: u64) -> bool {
        self.asked_ms
            .is_some_and(|t| now_ms < t.saturating_add(ASK_MS))
    }

    /// The call that asked has answered (whatever it granted).
    pub fn answered(&mut self) {
        self.asked_ms = None;
    }

    /// Whether the key saw a request in the last second or so.
    pub fn recent(&self, now_ms: u64) -> bool {
        now_ms / 1000 <= self.last_ms / 1000 + 1
    }
}

/// Every lease of one instance, bounded to `max` keys in all.
#[derive(Debug)]
pub struct LeaseState {
    pub units: Units,
    pub slots: std::collections::HashMap<String, SlotBlock>,
    pub tokens: std::collections::HashMap<String, TokenBlocks>,
    pub shares: std::collections::HashMap<String, Shares>,
    /// The numbers (a digest of the rule's limit) each key's leases were granted under.
    pub numbers: std::collections::HashMap<String, u64>,
    max: usize,
}

impl LeaseState {
    pub fn new(max: usize) -> LeaseState {
        LeaseState {
            units: Units::new(max),
            slots: Default::default(),
            tokens: Default::default(),
            shares: Default::default(),
            numbers: Default::default(),
            max,
        }
    }

    /// Whether another key may be tracked.
    pub fn room(&self) -> bool {
        self.units.len() + self.slots.len() + self.tokens.len() + self.shares.len() < self.max
    }

    /// Whether a lease of `key` (of any kind) was asked for and not answered yet: a
    /// request that would ask for one too waits for that answer instead.
    pub fn asking(&self, key: &str, now_ms: u64) -> bool {
        self.units.asking(key, now_ms)
            || self
                .slots
                .get(key)
                .is_some_and(|b| b.traffic.asking(now_ms))
            || self
                .tokens
                .get(key)
                .is_some_and(|b| b.traffic.asking(now_ms))
            || self
                .shares
                .get(key)
                .is_some_and(|s| s.traffic.asking(now_ms))
    }

    /// The slot block of `key`, created when there is room.
    pub fn slots_of(&mut self, key: &str) -> Option<&mut SlotBlock> {
        if !self.slots.contains_key(key) && !self.room() {
            return None;
        }
        Some(self.slots.entry(key.to_string()).or_default())
    }

    /// Forget the count units and slots `key` holds (granted under other numbers): the
    /// units stay counted until their window ends, never spent; the slots not in use are
    /// returned (to give back), the others expire unrefreshed while their requests run.
    /// Token blocks and rate shares are replaced by the grant that follows.
    pub fn clear(&mut self, key: &str) -> Vec<String> {
        self.units.forget(key);
        self.slots
            .remove(key)
            .map_or_else(Vec::new, |mut b| b.idle(true))
    }

    /// The rate share of `key`, created when there is room.
    pub fn shares_of(&mut self, key: &str) -> Option<&mut Shares> {
        if !self.shares.contains_key(key) && !self.room() {
            return None;
        }
        Some(self.shares.entry(key.to_string()).or_default())
    }

    /// The token blocks of `key`, created when there is room.
    pub fn tokens_of(&mut self, key: &str) -> Option<&mut TokenBlocks> {
        if !self.tokens.contains_key(key) && !self.room() {
            return None;
        }
        Some(self.tokens.entry(key.to_string()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ask_is_pending_until_answered_or_too_old() {
        let mut t = Traffic::default();
        assert!(!t.asking(0));
        assert_eq!(t.ask(5, 100), 5);
        assert!(t.asking(100 + ASK_MS - 1));
        assert!(
            !t.asking(100 + ASK_MS),
            "its call failed: no longer waited for"
        );
        t.answered();
        assert!(!t.asking(101));
    }

    #[test]
    fn traffic_rolls_over_ticks_and_forgets_gaps() {
        let mut t = Traffic::default();
        // Busy for a second first (a short burst does not lease).
        for ms in 0..1000 {
            t.note(ms);
        }
        for ms in 1000..1050 {
            t.note(ms);
        }
        t.note(1100);
        assert_eq!((t.per_horizon(), t.per_second()), (1000, 1000));
        // A quiet tick does not set the pace while the one before was busy; a gap of two
        // quiet ticks forgets it, and the key must warm up again.
        t.note(1200);
        assert_eq!(t.per_horizon(), 500);
        t.note(1500);
        assert_eq!(t.per_horizon(), 0);
        for ms in 1501..1700 {
            t.note(ms);
        }
        assert!(!t.hot(), "warming up again");
        // A key at a thousand requests a second and more leases after 300 ms, not 1 s;
        // one busy tick is not enough.
        let mut f = Traffic::default();
        for i in 0..300 {
            f.note(5000 + i / 3);
        }
        for ms in [5150, 5250, 5300] {
            f.note(ms);
        }
        assert!(!f.hot(), "one busy tick, then a trickle");
        let mut f = Traffic::default();
        for i in 0..600 {
            f.note(5000 + i / 2);
        }
        f.note(5300);
        assert!(f.hot(), "1,000 requests a second over three ticks");
        let mut f = Traffic::default();
        for i in 0..90 {
            f.note(5000 + i * 10 / 3);
        }
        f.note(5300);
        assert!(!f.hot(), "300 requests a second waits the full second");
        assert!(t.recent(2999) && !t.recent(3000));
        // One ask at a time, until answered or a second old.
        assert_eq!((t.ask(5, 500), t.ask(5, 501), t.ask(0, 502)), (5, 0, 0));
        t.answered();
        assert_eq!(t.ask(5, 503), 5);
        assert_eq!((t.ask(5, 1502), t.ask(5, 1503)), (0, 5));
    }

    #[test]
    fn the_state_is_bounded_across_kinds() {
        let mut s = LeaseState::new(2);
        assert!(s.slots_of("a").is_some());
        assert!(s.tokens_of("b").is_some());
        assert!(s.slots_of("c").is_none() && s.tokens_of("c").is_none());
        assert!(s.slots_of("a").is_some());
    }
}
