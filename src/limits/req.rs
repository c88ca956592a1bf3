//! limit-req: APISIX's leaky bucket, in milli-requests.
//!
//! State per key is `(excess, last_ms)`. A request leaks the bucket for the time elapsed
//! since the last admitted request, then adds 1000 milli-requests. Above `burst` it is
//! rejected and the state is left unchanged; otherwise it is admitted, possibly after a
//! delay of `excess / rate` (skipped with `nodelay`, which still uses the burst allowance).
//!
//! Differences from APISIX, all fixes listed in the reference's bug table:
//! - the clock is monotonic, so a wall-clock step cannot leak the bucket (bug 3);
//! - idle state may be dropped once drained ([`ReqLimit::drained_at`], at most
//!   `(burst + 1) / rate` after the last request), not after APISIX's shorter Redis TTL
//!   (bug 1).
//!
//! Excess is truncated to whole milli-requests as in APISIX's local mode (bug 4: match).

/// A limit-req rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReqLimit {
    /// Requests per second (> 0).
    pub rate: f64,
    /// Extra requests allowed above the rate (>= 0, fractional allowed).
    pub burst: f64,
    /// Admit without sleeping (the burst is still used).
    pub nodelay: bool,
}

/// Stored state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReqState {
    /// Excess in milli-requests.
    pub excess: u64,
    pub last_ms: u64,
}

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqDecision {
    /// Store `state`; sleep `delay_ms` first (0 with `nodelay`).
    Admit { state: ReqState, delay_ms: u64 },
    /// Keep the old state; the request would be admitted after `retry_after_ms`.
    Reject { retry_after_ms: u64 },
}

impl ReqLimit {
    fn r(&self) -> f64 {
        self.rate * 1000.0
    }

    fn b(&self) -> f64 {
        self.burst * 1000.0
    }

    /// The bucket's excess (milli-requests) once a request at `now_ms` is added.
    pub fn excess_after(&self, state: Option<ReqState>, now_ms: u64) -> f64 {
        match state {
            None => 0.0,
            Some(s) => {
                let elapsed = now_ms.saturating_sub(s.last_ms) as f64;
                (s.excess as f64 - self.r() * elapsed / 1000.0 + 1000.0).max(0.0)
            }
        }
    }

    /// Decide one request at `now_ms`.
    pub fn decide(&self, state: Option<ReqState>, now_ms: u64) -> ReqDecision {
        let excess = self.excess_after(state, now_ms);
        if excess > self.b() {
            // Admitted once the leaked excess plus this request fits in the burst.
            let wait_ms = ((excess - self.b()) * 1000.0 / self.r()).ceil() as u64;
            return ReqDecision::Reject {
                retry_after_ms: wait_ms.max(1),
            };
        }
        let delay_ms = if self.nodelay {
            0
        } else {
            let d = excess * 1000.0 / self.r();
            if d >= 1.0 {
                d as u64
            } else {
                0
            }
        };
        ReqDecision::Admit {
            state: ReqState {
                excess: excess as u64,
                last_ms: now_ms,
            },
            delay_ms,
        }
    }

    /// The bucket's level at `now_ms` in requests (what it holds, without a new request).
    pub fn level(&self, state: Option<ReqState>, now_ms: u64) -> f64 {
        (self.excess_after(state, now_ms) - 1000.0).max(0.0) / 1000.0
    }

    /// When the bucket has drained so far that its state decides as no state at all (a
    /// request then finds `excess_after` 0): its state can be dropped from then on. At most
    /// `(burst + 1) / rate` after the last request, where APISIX's Redis TTL is shorter.
    pub fn drained_at(&self, s: ReqState) -> u64 {
        let drain_ms = ((s.excess as f64 + 1000.0) / self.rate).ceil() as u64;
        s.last_ms.saturating_add(drain_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a sequence of request times; return admitted (with delay) or rejected.
    fn run(limit: ReqLimit, times: &[u64]) -> Vec<Result<u64, u64>> {
        let mut state = None;
        times
            .iter()
            .map(|&t| match limit.decide(state, t) {
                ReqDecision::Admit { state: s, delay_ms } => {
                    state = Some(s);
                    Ok(delay_ms)
                }
                ReqDecision::Reject { retry_after_ms } => Err(retry_after_ms),
            })
            .collect()
    }

    #[test]
    fn burst_zero_rejects_within_one_interval() {
        let l = ReqLimit {
            rate: 1.0,
            burst: 0.0,
            nodelay: false,
        };
        let got = run(l, &[0, 500, 1000, 1999, 2000]);
        assert_eq!(got, vec![Ok(0), Err(500), Ok(0), Err(1), Ok(0)]);
    }

    #[test]
    fn delays_unless_nodelay_and_rejects_above_burst() {
        // rate 0.1, burst 4: the 2nd back-to-back request waits 10 s (APISIX example).
        let l = ReqLimit {
            rate: 0.1,
            burst: 4.0,
            nodelay: false,
        };
        let got = run(l, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(
            got[..5],
            [Ok(0), Ok(10_000), Ok(20_000), Ok(30_000), Ok(40_000)]
        );
        assert!(got[5].is_err(), "6th exceeds burst 4");
        let n = ReqLimit { nodelay: true, ..l };
        let got = run(n, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(got[..5], [Ok(0), Ok(0), Ok(0), Ok(0), Ok(0)]);
        assert!(got[5].is_err(), "nodelay still rejects above burst");
    }

    #[test]
    fn rejects_leave_state_unchanged() {
        let l = ReqLimit {
            rate: 2.0,
            burst: 0.0,
            nodelay: true,
        };
        let s0 = match l.decide(None, 0) {
            ReqDecision::Admit { state, .. } => state,
            r => panic!("{r:?}"),
        };
        assert!(matches!(
            l.decide(Some(s0), 100),
            ReqDecision::Reject {
                retry_after_ms: 400
            }
        ));
        // A stream of rejected requests does not push the next admission back.
        assert!(matches!(
            l.decide(Some(s0), 499),
            ReqDecision::Reject { .. }
        ));
        assert!(matches!(l.decide(Some(s0), 500), ReqDecision::Admit { .. }));
    }

    #[test]
    fn fractional_burst_and_truncation() {
        let l = ReqLimit {
            rate: 3.0,
            burst: 0.5,
            nodelay: true,
        };
        // 2nd request after 100 ms: excess = 0 - 300 + 1000 = 700 > 500 → reject;
        // after 200 ms: 1000 - 600 = 400 → admit.
        assert_eq!(run(l, &[0, 100]), vec![Ok(0), Err(67)]);
        assert_eq!(run(l, &[0, 200]), vec![Ok(0), Ok(0)]);
        match l.decide(
            Some(ReqState {
                excess: 0,
                last_ms: 0,
            }),
            333,
        ) {
            ReqDecision::Admit { state, .. } => assert_eq!(state.excess, 1), // 1000 - 999 = 1
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn retry_after_is_exact() {
        let l = ReqLimit {
            rate: 10.0,
            burst: 2.0,
            nodelay: true,
        };
        let mut state = None;
        for _ in 0..3 {
            if let ReqDecision::Admit { state: s, .. } = l.decide(state, 0) {
                state = Some(s);
            }
        }
        let ReqDecision::Reject { retry_after_ms } = l.decide(state, 0) else {
            panic!()
        };
        assert_eq!(retry_after_ms, 100);
        assert!(matches!(l.decide(state, 99), ReqDecision::Reject { .. }));
        assert!(matches!(l.decide(state, 100), ReqDecision::Admit { .. }));
    }

    #[test]
    fn drained_state_decides_as_no_state() {
        // APISIX's Redis TTL for rate 0.1, burst 0 is 1 s; the bucket needs 10 s.
        let l = ReqLimit {
            rate: 0.1,
            burst: 0.0,
            nodelay: false,
        };
        let s = ReqState {
            excess: 0,
            last_ms: 5,
        };
        assert_eq!(l.drained_at(s), 10_005);
        let l = ReqLimit {
            rate: 2.0,
            burst: 3.0,
            nodelay: false,
        };
        let full = ReqState {
            excess: 3000,
            last_ms: 0,
        };
        assert_eq!(l.drained_at(full), 2_000, "(burst + 1) / rate");
        assert_eq!(l.level(Some(full), 0), 3.0);
        assert_eq!(l.level(Some(full), 1_000), 1.0);
        assert_eq!(
            l.excess_after(Some(full), l.drained_at(full)),
            l.excess_after(None, l.drained_at(full))
        );
        assert_eq!(l.level(Some(full), 2_000), 0.0);
    }
}
