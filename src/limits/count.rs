//! limit-count: a fixed window of `window_ms` opened by the first request of a key, or
//! (APISIX 3.18's `window_type: sliding`) windows aligned to the epoch with the previous
//! one weighted by how much of it still overlaps the sliding interval.
//!
//! Fixed: the counter is incremented first and the request rejected iff the new total
//! exceeds `count`, so rejected requests count too and do not move the window's end
//! (APISIX's semantics, kept: reference bug 8).
//!
//! Sliding (`shared/reference/apisix-ai-routes.md` §4.2): with `cur` the current window's
//! count, `last` the previous one's (capped at `count`) and `left` the time to the window's
//! end, `estimated = last × left / window + cur`; a request is rejected iff
//! `cur ≥ count` or `estimated ≥ count`, and only admitted requests count. Remaining is
//! `floor(count − cur − last × left / window)`; reset is the time to the window's end
//! (rounded up to 10 ms), or for a rejection by the estimate, when the previous window's
//! share will have decayed enough. Remaining and reset feed the quota headers.

/// A limit-count rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountLimit {
    pub count: u64,
    pub window_ms: u64,
    /// APISIX 3.18's `window_type: sliding`.
    pub sliding: bool,
}

/// Stored state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountState {
    pub consumed: u64,
    pub window_end_ms: u64,
    /// Sliding windows: the previous window's count (0 for fixed windows).
    pub previous: u64,
}

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountDecision {
    pub admitted: bool,
    /// New state to store (also on rejection: rejected requests count).
    pub state: CountState,
    /// `count − consumed`, at least 0.
    pub remaining: u64,
    /// Time until the window ends.
    pub reset_ms: u64,
}

impl CountLimit {
    /// The live state at `now_ms`: `None` when there is none or its window has ended (for
    /// a sliding window: when neither it nor the previous window holds anything).
    pub fn current(&self, state: Option<CountState>, now_ms: u64) -> Option<CountState> {
        if self.sliding {
            let s = self.rolled(state, now_ms);
            return (s.consumed > 0 || s.previous > 0).then_some(s);
        }
        state.filter(|s| now_ms < s.window_end_ms)
    }

    /// When a stored state can no longer change a decision (a sliding window's count still
    /// weighs on the next window).
    pub fn expires_at(&self, s: &CountState) -> u64 {
        s.window_end_ms + if self.sliding { self.window_ms } else { 0 }
    }

    /// A sliding state moved to the window of `now_ms` (epoch-aligned).
    fn rolled(&self, state: Option<CountState>, now_ms: u64) -> CountState {
        let w = self.window_ms.max(1);
        let end = (now_ms / w + 1) * w;
        match state {
            Some(s) if s.window_end_ms == end => s,
            Some(s) if s.window_end_ms + w == end => CountState {
                consumed: 0,
                window_end_ms: end,
                previous: s.consumed,
            },
            _ => CountState {
                consumed: 0,
                window_end_ms: end,
                previous: 0,
            },
        }
    }

    /// A sliding window's decision.
    fn slide(&self, state: Option<CountState>, now_ms: u64, cost: u64) -> CountDecision {
        let s = self.rolled(state, now_ms);
        let (limit, w) = (self.count as f64, self.window_ms.max(1) as f64);
        let left = (s.window_end_ms - now_ms) as f64;
        let last = s.previous.min(self.count) as f64;
        let weighted = last * left / w;
        let cur = s.consumed as f64;
        // Time to the window's end, rounded up to 10 ms (APISIX: up to 2 decimals).
        let up = |ms: f64| ((ms.max(0.0) / 10.0).ceil() * 10.0) as u64;
        if cur >= limit || weighted + cur >= limit {
            let reset = if cur >= limit || last == 0.0 {
                left
            } else {
                left - (limit - cur) / (last / w)
            };
            return CountDecision {
                admitted: false,
                state: s,
                remaining: 0,
                reset_ms: up(reset),
            };
        }
        let state = CountState {
            consumed: s.consumed + cost,
            ..s
        };
        CountDecision {
            admitted: true,
            state,
            remaining: (limit - state.consumed as f64 - weighted).floor().max(0.0) as u64,
            reset_ms: up(left),
        }
    }

    /// Count a request of `cost` at `now_ms`.
    pub fn hit(&self, state: Option<CountState>, now_ms: u64, cost: u64) -> CountDecision {
        if self.sliding {
            return self.slide(state, now_ms, cost);
        }
        let state = match self.current(state, now_ms) {
            Some(s) => CountState {
                consumed: s.consumed + cost,
                ..s
            },
            None => CountState {
                consumed: cost,
                window_end_ms: now_ms + self.window_ms,
                previous: 0,
            },
        };
        CountDecision {
            admitted: state.consumed <= self.count,
            state,
            remaining: self.count.saturating_sub(state.consumed),
            reset_ms: state.window_end_ms - now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_opens_at_first_request_and_rejects_count_plus_one() {
        let l = CountLimit {
            count: 2,
            window_ms: 60_000,
            sliding: false,
        };
        let d1 = l.hit(None, 5_000, 1);
        assert!(d1.admitted);
        assert_eq!((d1.remaining, d1.reset_ms), (1, 60_000));
        let d2 = l.hit(Some(d1.state), 20_000, 1);
        assert!(d2.admitted);
        assert_eq!((d2.remaining, d2.reset_ms), (0, 45_000));
        let d3 = l.hit(Some(d2.state), 30_000, 1);
        assert!(!d3.admitted);
        assert_eq!((d3.remaining, d3.reset_ms), (0, 35_000));
        assert_eq!(d3.state.consumed, 3, "rejected requests count");
        // The window ends 60 s after the first request, not on a wall-clock boundary.
        let d4 = l.hit(Some(d3.state), 64_999, 1);
        assert!(!d4.admitted);
        let d5 = l.hit(Some(d4.state), 65_000, 1);
        assert!(d5.admitted);
        assert_eq!((d5.remaining, d5.reset_ms), (1, 60_000));
    }

    #[test]
    fn cost_above_one() {
        let l = CountLimit {
            count: 10,
            window_ms: 1000,
            sliding: false,
        };
        let d = l.hit(None, 0, 7);
        assert!(d.admitted && d.remaining == 3);
        let d = l.hit(Some(d.state), 1, 4);
        assert!(!d.admitted && d.remaining == 0 && d.state.consumed == 11);
    }

    #[test]
    fn sliding_windows_weigh_the_previous_one() {
        // The reference's worked numbers: count 10 per 60 s; the previous window had 8,
        // the current one has 3, 15 s into it.
        let l = CountLimit {
            count: 10,
            window_ms: 60_000,
            sliding: true,
        };
        let base = 60_000 * 1_000; // an epoch-aligned window start
        let s = CountState {
            consumed: 3,
            window_end_ms: base + 60_000,
            previous: 8,
        };
        let d = l.hit(Some(s), base + 15_000, 1);
        assert!(d.admitted, "estimated 8/60×45 + 3 = 9 < 10");
        assert_eq!((d.remaining, d.reset_ms), (0, 45_000), "floor(10 − 4 − 6)");
        assert_eq!(d.state.consumed, 4);
        let r = l.hit(Some(d.state), base + 15_000, 1);
        assert!(!r.admitted, "estimated 6 + 4 = 10");
        assert_eq!((r.remaining, r.reset_ms), (0, 0), "45 − (10−4)/(8/60) = 0");
        assert_eq!(r.state.consumed, 4, "a rejection is not counted");
        // count 2 per 5 s: 200, 200, 503; the next window starts with the old one's weight.
        let l = CountLimit {
            count: 2,
            window_ms: 5_000,
            sliding: true,
        };
        let t = 5_000 * 1_000 + 1_000;
        let a = l.hit(None, t, 1);
        let b = l.hit(Some(a.state), t, 1);
        let c = l.hit(Some(b.state), t, 1);
        assert!(a.admitted && b.admitted && !c.admitted);
        assert_eq!((a.remaining, b.remaining, c.remaining), (1, 0, 0));
        assert_eq!(c.reset_ms, 4_000, "cur ≥ count: to the window's end");
        // 1 s into the next window the old one still weighs 2 × 4/5 = 1.6: one more fits,
        // the next is rejected until the weight has decayed below 1 (in 1.5 s).
        let d = l.hit(Some(c.state), t + 5_000, 1);
        assert!(d.admitted);
        assert_eq!((d.remaining, d.state.previous, d.state.consumed), (0, 2, 1));
        let e = l.hit(Some(d.state), t + 5_000, 1);
        assert!(!e.admitted);
        assert_eq!(e.reset_ms, 1_500, "4 s − (2 − 1)/(2/5 s)");
        assert!(
            !l.hit(Some(e.state), t + 6_500, 1).admitted,
            "at reset the estimate is 2"
        );
        assert!(
            l.hit(Some(e.state), t + 6_510, 1).admitted,
            "just after it, below 2"
        );
        // Two windows later nothing weighs.
        assert_eq!(l.current(Some(e.state), t + 15_000), None);
    }
}
