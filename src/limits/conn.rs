//! limit-conn: concurrency per key, with a delay band.
//!
//! A request takes a slot at admission and gives it back when it ends (in every outcome).
//! With `n` the request's position counting itself: `n > conn + burst` is rejected (and
//! holds no slot); `conn < n <= conn + burst` is admitted after
//! `default_conn_delay × floor((n − 1) / conn)`; otherwise it proceeds at once. This is
//! APISIX's code (its docs state the delays differently; reference bug 5), and the delay
//! never adapts, as in APISIX 3.16+ (bug 6).
//!
//! Slots are leases: the store gives each one an expiry that the holder refreshes while its
//! request runs, so a crashed holder's slots come back (bug 7: APISIX uses a fixed 1 h).

/// A limit-conn rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimit {
    /// Concurrent requests admitted without delay (> 0).
    pub conn: u64,
    /// Further concurrent requests admitted after a delay.
    pub burst: u64,
    /// Delay unit in milliseconds (> 0).
    pub default_conn_delay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnDecision {
    /// Take a slot; sleep `delay_ms` first.
    Admit { delay_ms: u64 },
    /// Every slot and the burst band are taken.
    Reject,
}

impl ConnLimit {
    /// Decide a request that finds `in_flight` slots taken.
    pub fn decide(&self, in_flight: u64) -> ConnDecision {
        let n = in_flight + 1;
        if n > self.conn + self.burst {
            return ConnDecision::Reject;
        }
        let delay_ms = if n > self.conn {
            self.default_conn_delay_ms * ((n - 1) / self.conn)
        } else {
            0
        };
        ConnDecision::Admit { delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(l: ConnLimit, k: u64) -> Vec<Option<u64>> {
        (0..k)
            .map(|i| match l.decide(i) {
                ConnDecision::Admit { delay_ms } => Some(delay_ms),
                ConnDecision::Reject => None,
            })
            .collect()
    }

    #[test]
    fn apisix_worked_numbers() {
        // conn 5, burst 3, delay 1 s: 6th-8th wait 1 s each, the 9th is rejected.
        let l = ConnLimit {
            conn: 5,
            burst: 3,
            default_conn_delay_ms: 1000,
        };
        let got = sequence(l, 9);
        assert_eq!(got[..5], [Some(0); 5]);
        assert_eq!(got[5..8], [Some(1000); 3]);
        assert_eq!(got[8], None);
        // conn 1, burst 3: the 2nd, 3rd, 4th wait 1, 2, 3 s.
        let l = ConnLimit {
            conn: 1,
            burst: 3,
            default_conn_delay_ms: 1000,
        };
        assert_eq!(
            sequence(l, 5),
            vec![Some(0), Some(1000), Some(2000), Some(3000), None]
        );
    }

    #[test]
    fn no_burst_rejects_at_conn() {
        let l = ConnLimit {
            conn: 2,
            burst: 0,
            default_conn_delay_ms: 500,
        };
        assert_eq!(sequence(l, 3), vec![Some(0), Some(0), None]);
    }
}
