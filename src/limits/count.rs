//! limit-count: a fixed window of `window_ms` opened by the first request of a key.
//!
//! The counter is incremented first and the request rejected iff the new total exceeds
//! `count`, so rejected requests count too and do not move the window's end (APISIX's
//! semantics, kept: reference bug 8). Remaining and reset feed the quota headers.

/// A limit-count rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountLimit {
    pub count: u64,
    pub window_ms: u64,
}

/// Stored state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountState {
    pub consumed: u64,
    pub window_end_ms: u64,
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
    /// The live state at `now_ms`: `None` when there is none or its window has ended.
    pub fn current(&self, state: Option<CountState>, now_ms: u64) -> Option<CountState> {
        state.filter(|s| now_ms < s.window_end_ms)
    }

    /// Count a request of `cost` at `now_ms`.
    pub fn hit(&self, state: Option<CountState>, now_ms: u64, cost: u64) -> CountDecision {
        let state = match self.current(state, now_ms) {
            Some(s) => CountState {
                consumed: s.consumed + cost,
                ..s
            },
            None => CountState {
                consumed: cost,
                window_end_ms: now_ms + self.window_ms,
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
        };
        let d = l.hit(None, 0, 7);
        assert!(d.admitted && d.remaining == 3);
        let d = l.hit(Some(d.state), 1, 4);
        assert!(!d.admitted && d.remaining == 0 && d.state.consumed == 11);
    }
}
