//! Token limits per window (APISIX ai-rate-limiting, made exact).
//!
//! APISIX admits while any token is left and charges usage after the response, so
//! concurrent requests overshoot by everything in flight (reference bug 11). Here a request
//! reserves an estimate at admission (prompt estimate + `max_tokens`, capped at the limit)
//! and is admitted only if `committed + reserved + estimate <= limit`; when its response
//! ends the reservation is replaced by the real usage. Concurrent admissions can therefore
//! never exceed the limit by more than the reservations underestimated.
//!
//! `any_left` (APISIX's admission, for imported routes): a request is admitted while one
//! token is left, however large it is, and reserves what is left up to its estimate; the
//! remaining it reports is what is left before its own reservation (APISIX's
//! `limit − consumed`). Sequential requests get APISIX's answers; concurrent ones still
//! cannot all pass on the same last tokens.
//!
//! The window is fixed and opened by the first request after the previous one ended, as in
//! limit-count. Reservations of requests still in flight carry into the next window, since
//! their usage will be charged there.

/// A token rule: `limit` tokens per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimit {
    pub limit: u64,
    pub window_ms: u64,
    /// APISIX's admission: while one token is left (see the module doc).
    pub any_left: bool,
}

/// Stored state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenState {
    /// Real usage charged in this window.
    pub committed: u64,
    /// Estimates held by requests in flight.
    pub reserved: u64,
    pub window_end_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDecision {
    /// Store `state`; the request holds `reservation` tokens until it is reconciled.
    Admit {
        state: TokenState,
        reservation: u64,
        remaining: u64,
        reset_ms: u64,
    },
    /// Nothing changes; the window ends in `reset_ms`.
    Reject { remaining: u64, reset_ms: u64 },
}

impl TokenLimit {
    /// The state at `now_ms`, with a new window opened if the last one has ended.
    fn roll(&self, state: Option<TokenState>, now_ms: u64) -> TokenState {
        match state {
            Some(s) if now_ms < s.window_end_ms => s,
            other => TokenState {
                committed: 0,
                reserved: other.map_or(0, |s| s.reserved),
                window_end_ms: now_ms + self.window_ms,
            },
        }
    }

    fn remaining(&self, s: &TokenState) -> u64 {
        self.limit.saturating_sub(s.committed + s.reserved)
    }

    /// Tokens left and time to the window's reset at `now_ms`.
    pub fn peek(&self, state: Option<TokenState>, now_ms: u64) -> (u64, u64) {
        let s = self.roll(state, now_ms);
        (self.remaining(&s), s.window_end_ms - now_ms)
    }

    /// Try to reserve `estimate` tokens for a request at `now_ms`.
    pub fn reserve(&self, state: Option<TokenState>, now_ms: u64, estimate: u64) -> TokenDecision {
        let mut s = self.roll(state, now_ms);
        let left = self.remaining(&s);
        let reservation = if self.any_left {
            estimate.min(left)
        } else {
            estimate.min(self.limit)
        };
        let reset_ms = s.window_end_ms - now_ms;
        if left == 0 || s.committed + s.reserved + reservation > self.limit {
            return TokenDecision::Reject {
                remaining: left,
                reset_ms,
            };
        }
        s.reserved += reservation;
        TokenDecision::Admit {
            state: s,
            reservation,
            remaining: if self.any_left {
                left
            } else {
                self.remaining(&s)
            },
            reset_ms,
        }
    }

    /// Replace a reservation by the tokens really used (0 when the request failed before
    /// using any). Returns the new state.
    pub fn reconcile(
        &self,
        state: Option<TokenState>,
        now_ms: u64,
        reservation: u64,
        used: u64,
    ) -> TokenState {
        let mut s = self.roll(state, now_ms);
        s.reserved = s.reserved.saturating_sub(reservation);
        s.committed += used;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: TokenLimit = TokenLimit {
        limit: 100,
        window_ms: 60_000,
        any_left: false,
    };

    fn admit(d: TokenDecision) -> (TokenState, u64) {
        match d {
            TokenDecision::Admit {
                state, reservation, ..
            } => (state, reservation),
            r => panic!("expected admission, got {r:?}"),
        }
    }

    #[test]
    fn concurrent_requests_cannot_over_admit() {
        // Three requests each estimating 40 tokens arrive together: the third must wait,
        // where APISIX would admit all three (consumed is still 0 at every pre-check).
        let (s, r1) = admit(L.reserve(None, 0, 40));
        let (s, r2) = admit(L.reserve(Some(s), 1, 40));
        assert!(matches!(
            L.reserve(Some(s), 2, 40),
            TokenDecision::Reject { remaining: 20, .. }
        ));
        // The first finishes having used only 10: room for the third now.
        let s = L.reconcile(Some(s), 3, r1, 10);
        assert_eq!((s.committed, s.reserved), (10, 40));
        let (s, _) = admit(L.reserve(Some(s), 4, 40));
        let s = L.reconcile(Some(s), 5, r2, 45);
        assert_eq!((s.committed, s.reserved), (55, 40));
    }

    #[test]
    fn apisix_example_sequential_usage() {
        // limit 30 / 60 s, each response uses 10: 200, 200, 200, then rejected.
        let l = TokenLimit {
            limit: 30,
            window_ms: 60_000,
            any_left: false,
        };
        let mut state = None;
        let mut seen = vec![];
        for t in 0..4 {
            match l.reserve(state, t * 10, 1) {
                TokenDecision::Admit {
                    state: s,
                    reservation,
                    remaining,
                    ..
                } => {
                    seen.push(remaining + reservation);
                    state = Some(l.reconcile(Some(s), t * 10 + 5, reservation, 10));
                }
                TokenDecision::Reject {
                    remaining,
                    reset_ms,
                } => {
                    seen.push(remaining);
                    assert_eq!(reset_ms, 60_000 - 30);
                }
            }
        }
        assert_eq!(seen, vec![30, 20, 10, 0]);
    }

    #[test]
    fn oversized_estimate_needs_the_whole_window() {
        let (s, r) = admit(L.reserve(None, 0, 5_000));
        assert_eq!(r, 100);
        assert!(matches!(
            L.reserve(Some(s), 1, 1),
            TokenDecision::Reject { .. }
        ));
    }

    #[test]
    fn window_rolls_and_in_flight_reservations_carry_over() {
        let (s, r) = admit(L.reserve(None, 0, 30));
        let s = L.reconcile(Some(s), 10, r, 90); // used more than estimated
        let (s, r2) = admit(L.reserve(Some(s), 20, 10));
        assert_eq!(s.committed + s.reserved, 100);
        assert!(matches!(
            L.reserve(Some(s), 30, 1),
            TokenDecision::Reject { .. }
        ));
        // A new window: committed resets, the in-flight 10 stays reserved.
        let (s, _) = admit(L.reserve(Some(s), 60_000, 90));
        assert_eq!(
            (s.committed, s.reserved, s.window_end_ms),
            (0, 100, 120_000)
        );
        let s = L.reconcile(Some(s), 60_001, r2, 10);
        assert_eq!((s.committed, s.reserved), (10, 90));
    }

    #[test]
    fn any_left_admits_while_a_token_is_left_as_apisix() {
        // ai-rate-limiting.t T2-T7: limit 30, no max_tokens (estimate 1030), 10 tokens a
        // response: 200, 200, 200, 503 with Remaining 30, 20, 10, 0.
        let l = TokenLimit {
            limit: 30,
            window_ms: 60_000,
            any_left: true,
        };
        let mut state = None;
        let mut seen = vec![];
        for t in 0..4 {
            match l.reserve(state, t * 10, 1030) {
                TokenDecision::Admit {
                    state: s,
                    reservation,
                    remaining,
                    reset_ms,
                } => {
                    assert_eq!(reservation, remaining);
                    if t == 0 {
                        assert_eq!(reset_ms, 60_000);
                    }
                    seen.push(remaining);
                    state = Some(l.reconcile(Some(s), t * 10 + 5, reservation, 10));
                }
                TokenDecision::Reject { remaining, .. } => seen.push(remaining),
            }
        }
        assert_eq!(seen, vec![30, 20, 10, 0]);
        // Two at once on the last 10: the first holds them, the second is refused.
        let l2 = TokenLimit { limit: 10, ..l };
        let TokenDecision::Admit { state: s, .. } = l2.reserve(None, 0, 1030) else {
            panic!()
        };
        assert!(matches!(
            l2.reserve(Some(s), 1, 5),
            TokenDecision::Reject { remaining: 0, .. }
        ));
    }
}
