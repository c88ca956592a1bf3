//! Rate shares of a limit-req bucket (see [`super`]): a share is a leaky bucket of its own
//! — `rate` milli-requests per second, `burst` milli-requests — that Redis has taken out of
//! the rule's bucket (which then leaks at the rate left and holds the burst left), so all
//! buckets together never admit more than the rule's rate and burst. Only `nodelay` rules
//! are shared: a share never delays, it admits or sends the request to Redis.

use super::Traffic;

/// One share held: its bucket, run here.
#[derive(Debug, Clone, PartialEq)]
pub struct RateShare {
    pub member: String,
    /// Milli-requests per second.
    pub rate: u64,
    /// Milli-requests the bucket may hold above one request.
    pub burst: u64,
    excess: f64,
    last_ms: u64,
}

impl RateShare {
    /// The bucket's excess with one more request at `now_ms` (APISIX's leaky bucket).
    fn with_one(&self, now_ms: u64) -> f64 {
        let leaked = self.rate as f64 * now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        (self.excess - leaked + 1000.0).max(0.0)
    }

    /// A share granted but not kept (no room to track it): given back at once.
    pub fn unused(member: String, rate: u64) -> RateShare {
        RateShare {
            member,
            rate,
            burst: rate / 10,
            excess: 0.0,
            last_ms: 0,
        }
    }

    /// The excess now, without a request: what goes back with the share.
    pub fn excess_now(&self, now_ms: u64) -> u64 {
        let leaked = self.rate as f64 * now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        (self.excess - leaked).max(0.0).ceil() as u64
    }
}

/// The share this instance holds of one bucket.
#[derive(Debug, Default)]
pub struct Shares {
    current: Option<RateShare>,
    /// Requests the share admitted since the last tidy or grant, and when that was.
    admitted: u64,
    since_ms: u64,
    /// The share held now was held through the whole period since the last tidy.
    whole_period: bool,
    /// The rule's rate, milli-requests per second (what a return leaks with).
    pub rule_rate: u64,
    pub(super) traffic: Traffic,
}

impl Shares {
    /// The share to ask for with a request that goes to Redis (milli-requests per second):
    /// none for a key that is not hot or while the share held admits; else three times the
    /// key's pace (a share too small for random arrivals would be replaced, a call each
    /// time; near the limit admit.lua grants less).
    pub fn want(&mut self, now_ms: u64) -> u64 {
        self.traffic.note(now_ms);
        if !self.traffic.hot() || self.ready(now_ms) {
            return 0;
        }
        let want = self.traffic.per_second().saturating_mul(3000);
        self.traffic.ask(want, now_ms)
    }

    /// Take the share held out of use, to give back: with the call that asks for the next
    /// one, ahead of its grant, so that Redis never counts two shares of this instance.
    pub fn retire(&mut self) -> Option<RateShare> {
        self.current.take()
    }

    /// The call that asked has answered.
    pub fn answered(&mut self) {
        self.traffic.answered();
    }

    /// Whether the share admits a request now.
    pub fn ready(&self, now_ms: u64) -> bool {
        self.current
            .as_ref()
            .is_some_and(|s| s.with_one(now_ms) <= s.burst as f64)
    }

    /// Admit a request in the share's bucket.
    pub fn admit(&mut self, now_ms: u64) -> bool {
        let Some(s) = self.current.as_mut() else {
            return false;
        };
        let excess = s.with_one(now_ms);
        if excess > s.burst as f64 {
            return false;
        }
        s.excess = excess;
        s.last_ms = now_ms;
        self.traffic.note(now_ms);
        self.admitted += 1;
        true
    }

    /// A granted share of `rate` (its burst a tenth of it, as admit.lua grants) becomes
    /// the one held, empty; the one held before, to give back.
    pub fn grant(&mut self, member: String, rate: u64, now_ms: u64) -> Option<RateShare> {
        self.traffic.answered();
        (self.admitted, self.since_ms, self.whole_period) = (0, now_ms, false);
        self.current.replace(RateShare {
            member,
            rate,
            burst: rate / 10,
            excess: 0.0,
            last_ms: now_ms,
        })
    }

    /// Each tidy: the share to give back when its holder used less than half of it over a
    /// whole period since the last tidy (nothing at all, idle, included), or when `all`
    /// (shutdown).
    ///
    /// Shares are granted in the order instances ask, each at most a quarter of the rate
    /// left: the first ones to ask get large shares, the last ones small ones, and a share
    /// in use never fills, so it would be kept for good while the others' overflow meets a
    /// bucket that leaks only what the shares leave (requests refused below the rate).
    /// Given back, it is asked for again at the holder's pace, against the rate left by
    /// then: the instances' shares even out within a few periods.
    pub fn tidy(&mut self, all: bool, now_ms: u64) -> Option<RateShare> {
        let elapsed = now_ms.saturating_sub(self.since_ms).max(1);
        let used = self.admitted.saturating_mul(1_000_000) / elapsed;
        let under_half = self.whole_period
            && self
                .current
                .as_ref()
                .is_some_and(|s| used.saturating_mul(2) < s.rate);
        (self.admitted, self.since_ms) = (0, now_ms);
        self.whole_period = self.current.is_some();
        match all || under_half {
            true => {
                self.whole_period = false;
                self.current.take()
            }
            false => None,
        }
    }

    /// The member held, to refresh.
    pub fn member(&self) -> Option<&str> {
        self.current.as_ref().map(|s| s.member.as_str())
    }

    /// Whether it can be forgotten: nothing held, no recent traffic.
    pub fn forgettable(&self, now_ms: u64) -> bool {
        self.current.is_none() && !self.traffic.recent(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_admits_its_rate_and_burst_then_sends_requests_to_redis() {
        let mut s = Shares::default();
        for ms in (0..1000).step_by(10) {
            assert_eq!(s.want(ms), 0, "not hot");
        }
        // Busy for a second at 100 a second: ask for 300 requests/s.
        assert_eq!(s.want(1000), 300_000);
        assert!(s.grant("l#r|20000|2000".into(), 20_000, 1000).is_none());
        // A bucket of 20/s holding two: two at once, then one per 50 ms.
        assert!(s.admit(1000) && s.admit(1000));
        assert!(!s.ready(1000) && !s.admit(1000));
        assert!(s.want(1000) > 0, "a full share asks for another");
        assert!(s.admit(1050));
        assert!(!s.admit(1050));
        // Retired when its call asks for the next: it goes back with what its bucket
        // holds, and admits nothing more.
        let old = s.retire().unwrap();
        assert_eq!(old.excess_now(1100), 1000);
        assert_eq!(old.member, "l#r|20000|2000");
        assert!(!s.ready(2000) && !s.admit(2000) && s.member().is_none());
        assert!(s.grant("m#r|40000|4000".into(), 40_000, 1100).is_none());
        assert!(s.admit(1100));
    }

    #[test]
    fn an_idle_share_goes_back_at_tidy() {
        let mut s = Shares::default();
        s.grant("a".into(), 10_000, 0);
        assert!(s.tidy(false, 100).is_none(), "just granted");
        let back = s.tidy(false, 5_100).unwrap();
        assert_eq!(back.member, "a");
        assert!(s.member().is_none() && s.forgettable(5_000));
    }

    #[test]
    fn a_share_used_under_half_over_a_whole_period_goes_back_to_be_asked_again() {
        let mut s = Shares::default();
        // 100 requests/s granted; used at 40/s.
        s.grant("a".into(), 100_000, 0);
        let admit_for = |s: &mut Shares, from: u64, to: u64, every: u64| {
            for ms in (from..to).step_by(every as usize) {
                assert!(s.admit(ms), "{ms}");
            }
        };
        admit_for(&mut s, 0, 1_000, 25);
        // The period it was granted in is not a whole one: kept.
        assert!(s.tidy(false, 1_000).is_none());
        admit_for(&mut s, 1_000, 6_000, 25);
        let back = s.tidy(false, 6_000).expect("under half of it used");
        assert_eq!(back.member, "a");
        // One used over half (60/s of 100/s) is kept.
        s.grant("b".into(), 100_000, 6_000);
        assert!(s.tidy(false, 6_500).is_none());
        for ms in (6_500..11_500).step_by(16) {
            s.admit(ms);
        }
        assert!(s.tidy(false, 11_500).is_none(), "used over half");
        assert_eq!(s.member(), Some("b"));
    }
}
