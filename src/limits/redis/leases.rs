//! Quota leases on the shared store (the algorithm and its exactness argument are in
//! [`crate::limits::lease`]): admissions decided from held units without a call, the
//! units each Redis call asks for and records, and the return of unused units
//! (`lua-compat/lease_return.lua`) on shutdown.

use super::*;
use crate::limits::lease::{granted, Leases, Return};

/// At most this many counters per return call.
const RETURN_CHUNK: usize = 512;

/// A check a lease can serve: a realtime fixed-window count.
fn leasable(c: &Check<'_>) -> bool {
    matches!(c.kind, RuleKind::Count(l) if !l.sliding) && c.yield_to.is_none()
}

impl RedisStore {
    /// Milliseconds on this store's monotonic clock.
    pub(super) fn lease_now(&self) -> u64 {
        self.lease_epoch.elapsed().as_millis() as u64
    }

    fn lock_quota(&self) -> Option<std::sync::MutexGuard<'_, Leases>> {
        let leases = self.quota_leases.as_ref()?;
        if !self.leasing.load(Ordering::Relaxed) {
            return None;
        }
        Some(leases.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The admission decided from held units, when every check of the required group and
    /// of the first alternative is a fixed-window count with a unit left (the first
    /// alternative admits, so it is the one chosen). `keys`: each check's counter, in group
    /// order.
    pub(super) fn admit_leased(
        &self,
        required: &[Check<'_>],
        alternatives: &[Vec<Check<'_>>],
        keys: &[(String, String)],
        now: u64,
    ) -> Option<Admitted> {
        let first = alternatives.first().map_or(&[][..], Vec::as_slice);
        let n = required.len() + first.len();
        let checks = || required.iter().chain(first);
        if !checks().all(leasable) {
            return None;
        }
        let mut leases = self.lock_quota()?;
        if !keys[..n].iter().all(|(k, _)| leases.ready(k, now)) {
            return None;
        }
        let mut quotas = Vec::with_capacity(n);
        for (c, (key, _)) in checks().zip(keys) {
            let q = leases.spend(key, now)?;
            let RuleKind::Count(l) = c.kind else {
                continue;
            };
            quotas.push(Quota {
                budget: Budget::Requests,
                limit: l.count,
                remaining: q.remaining,
                reset_ms: q.reset_ms,
                apisix_header: c.rule.answer.quota_header.clone(),
            });
        }
        drop(leases);
        self.metrics.leased.inc();
        Some(Admitted {
            ticket: Ticket {
                delay_ms: 0,
                quotas,
                hold: None,
            },
            choice: (!alternatives.is_empty()).then_some(0),
            skipped: Vec::new(),
        })
    }

    /// The units each check asks for with a call (0 for checks leases cannot serve).
    pub(super) fn lease_wants(
        &self,
        checks: &[&Check<'_>],
        keys: &[(String, String)],
        now: u64,
    ) -> Vec<u64> {
        let Some(mut leases) = self.lock_quota() else {
            return vec![0; checks.len()];
        };
        checks
            .iter()
            .zip(keys)
            .map(|(c, (key, _))| match leasable(c) {
                true => leases.want(key, now),
                false => 0,
            })
            .collect()
    }

    /// Record the units a call granted: for each count check that asked and was
    /// evaluated, `min(want, remaining / 4)`, as admit.lua counted them. `sent`: when the
    /// call left (the units are spent only before `sent + reset`).
    pub(super) fn record_grants(
        &self,
        wants: &[u64],
        keys: &[(String, String)],
        answers: &[CheckAnswer],
        sent: u64,
    ) {
        if wants.iter().all(|w| *w == 0) {
            return;
        }
        let Some(mut leases) = self.lock_quota() else {
            return;
        };
        let now = self.lease_now();
        for ((&want, (key, _)), a) in wants.iter().zip(keys).zip(answers) {
            let Some(remaining) = a.remaining.filter(|_| want > 0) else {
                continue;
            };
            let units = granted(want, remaining);
            if units > 0 {
                let window_end = a.redis_now.saturating_add(a.reset_ms);
                let deadline = sent.saturating_add(a.reset_ms);
                leases.grant(key, units, remaining - units, window_end, deadline, now);
            }
        }
        self.metrics.lease_units.set(leases.outstanding(now) as i64);
    }

    /// Forget quiet counters and update the outstanding-units gauge (each refresh tick).
    pub(super) fn tidy_leases(&self) {
        if let Some(mut leases) = self.lock_quota() {
            let now = self.lease_now();
            leases.prune(now);
            self.metrics.lease_units.set(leases.outstanding(now) as i64);
        }
    }

    /// Stop leasing and give every unused unit back to its window (shutdown). Units whose
    /// return fails are lost until their window ends (never overspent).
    pub async fn return_leases(&self) {
        let back = self.stop_leasing();
        let total: u64 = back.iter().map(|r| r.units).sum();
        let mut returned = 0;
        for run in self.by_slot(back, |r| r.key.as_str()) {
            for chunk in run.chunks(RETURN_CHUNK) {
                returned += self.return_chunk(chunk).await;
            }
        }
        if total > 0 {
            tracing::info!(
                units = total,
                returned,
                "quota lease units given back to Redis"
            );
        }
    }

    /// Stop taking leases; the units still held, to return.
    fn stop_leasing(&self) -> Vec<Return> {
        let Some(mut leases) = self.lock_quota() else {
            return Vec::new();
        };
        self.leasing.store(false, Ordering::Relaxed);
        self.metrics.lease_units.set(0);
        leases.drain(self.lease_now())
    }

    async fn return_chunk(&self, chunk: &[Return]) -> u64 {
        let mut inv = self.lease_return.prepare_invoke();
        for r in chunk {
            inv.key(&r.key).arg(r.window_end).arg(r.units);
        }
        self.call::<u64>("lease_return", &inv).await.unwrap_or(0)
    }
}
