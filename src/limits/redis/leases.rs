//! Quota leases on the shared store (what they are and why they are exact:
//! [`crate::limits::lease`]): admissions decided from what this instance holds, without a
//! call; the leases each Redis call asks for and what it granted; their refresh, tidy and
//! return.

use super::leasable::{leasable, numbers, Leasable};
use super::lease_hold::{block_release, outstanding, share_release, slot_release, LeaseHold, Part};
use super::*;
use crate::limits::lease::shares::RateShare;
use crate::limits::lease::{LeaseState, Return};

/// At most this many counters per return call.
const RETURN_CHUNK: usize = 512;

/// How long a request waits for another request's lease ask to be answered (about a
/// hundred round trips to Redis on loopback; a slower answer means Redis is struggling, and
/// the request then asks Redis itself).
const LEASE_WAIT: Duration = Duration::from_millis(50);

impl RedisStore {
    /// Milliseconds on this store's monotonic clock.
    pub(super) fn lease_now(&self) -> u64 {
        self.lease_epoch.elapsed().as_millis() as u64
    }

    pub(super) fn lock_quota(&self) -> Option<std::sync::MutexGuard<'_, LeaseState>> {
        let leases = self.quota_leases.as_ref()?;
        if !self.leasing.load(Ordering::Relaxed) {
            return None;
        }
        Some(leases.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The admission decided from what this instance holds, when every check of the
    /// required group and of the first alternative has room in it (the first alternative
    /// admits, so it is the one chosen). `keys`: each check's keys, in group order.
    pub(super) fn admit_leased(
        self: &Arc<Self>,
        required: &[Check<'_>],
        alternatives: &[Vec<Check<'_>>],
        keys: &[(String, String)],
        estimate: Estimate,
        now: u64,
    ) -> Option<Admitted> {
        let first = alternatives.first().map_or(&[][..], Vec::as_slice);
        let n = required.len() + first.len();
        let checks: Vec<(&Check<'_>, Leasable, &str, bool)> = required
            .iter()
            .map(|c| (c, false))
            .chain(first.iter().map(|c| (c, true)))
            .zip(&keys[..n])
            .map(|((c, alt), (key, _))| Some((c, leasable(c, estimate)?, key.as_str(), alt)))
            .collect::<Option<_>>()?;
        let mut state = self.lock_quota()?;
        let same = |c: &Check<'_>, key: &str| state.numbers.get(key) == Some(&numbers(&c.kind));
        let ready = checks.iter().all(|&(c, l, key, _)| {
            same(c, key)
                && match l {
                    Leasable::Count(_) => state.units.ready(key, now),
                    Leasable::Conn => state.slots.get(key).is_some_and(|b| b.ready()),
                    Leasable::Tokens(need) => state.tokens.get(key).is_some_and(|b| b.ready(need)),
                    Leasable::Req => state.shares.get(key).is_some_and(|s| s.ready(now)),
                }
        });
        if !ready {
            for &(_, l, key, _) in &checks {
                let (kind, held) = match l {
                    Leasable::Count(_) => ("count", state.units.ready(key, now)),
                    Leasable::Conn => ("conn", state.slots.get(key).is_some_and(|b| b.ready())),
                    Leasable::Tokens(need) => (
                        "tokens",
                        state.tokens.get(key).is_some_and(|b| b.ready(need)),
                    ),
                    Leasable::Req => ("req", state.shares.get(key).is_some_and(|s| s.ready(now))),
                };
                if !held {
                    self.metrics.lease_misses.with_label_values(&[kind]).inc();
                }
            }
            return None;
        }
        let mut parts = Vec::new();
        // Quotas as the store reports them: per group, tokens first, then counts.
        let mut token_quotas = Vec::new();
        let mut count_quotas = Vec::new();
        let mut quotas = Vec::new();
        for (i, &(c, l, key, alternative)) in checks.iter().enumerate() {
            match l {
                Leasable::Count(limit) => {
                    let q = state.units.spend(key, now)?;
                    count_quotas.push(Quota {
                        budget: Budget::Requests,
                        limit,
                        remaining: q.remaining,
                        reset_ms: q.reset_ms,
                        apisix_header: c.rule.answer.quota_header.clone(),
                    });
                }
                Leasable::Req => {
                    state.shares.get_mut(key)?.admit(now);
                }
                Leasable::Conn => {
                    state.slots.get_mut(key)?.take(now);
                    parts.push(Part::Slot {
                        key: key.to_string(),
                        alternative,
                    });
                }
                Leasable::Tokens(need) => {
                    let (block, remaining, reset_ms) =
                        state.tokens.get_mut(key)?.reserve(need, now)?;
                    let (budget, limit, header) = match c.kind {
                        RuleKind::Tokens(l, _) => {
                            (Budget::Tokens, l.limit, c.rule.answer.quota_header.clone())
                        }
                        RuleKind::Spend(l) => (Budget::Spend, l.limit, None),
                        _ => continue,
                    };
                    token_quotas.push(Quota {
                        budget,
                        limit,
                        remaining,
                        reset_ms,
                        apisix_header: header,
                    });
                    let window_ms = match c.kind {
                        RuleKind::Tokens(l, _) | RuleKind::Spend(l) => l.window_ms,
                        _ => 0,
                    };
                    parts.push(Part::Tokens {
                        key: key.to_string(),
                        block,
                        reserved: need,
                        window_ms,
                        charge: c.rule.charge(),
                        alternative,
                    });
                }
            }
            // The end of a group: its quotas, tokens first.
            if i + 1 == required.len() || i + 1 == n {
                quotas.append(&mut token_quotas);
                quotas.append(&mut count_quotas);
            }
        }
        drop(state);
        self.metrics.leased.inc();
        let hold: Option<Box<dyn Hold>> = match parts.is_empty() {
            true => None,
            false => Some(Box::new(LeaseHold::new(self.clone(), parts))),
        };
        Some(Admitted {
            ticket: Ticket {
                delay_ms: 0,
                quotas,
                hold,
            },
            choice: (!alternatives.is_empty()).then_some(0),
            skipped: Vec::new(),
        })
    }

    /// The lease each check asks for with a call (0 for checks leases cannot serve), and
    /// the count units this instance holds for each (0 for other checks): a request
    /// decided in Redis reports what Redis has left plus these, so one instance's quota
    /// headers stay exact with leases. One look at the table for both.
    pub(super) fn lease_wants(
        &self,
        checks: &[&Check<'_>],
        keys: &[(String, String)],
        estimate: Estimate,
        now: u64,
    ) -> (Vec<u64>, Vec<u64>) {
        let Some(mut state) = self.lock_quota() else {
            return (vec![0; checks.len()], vec![0; checks.len()]);
        };
        let mut retired = Vec::new();
        let out = checks
            .iter()
            .zip(keys)
            .map(|(c, (key, zset))| match leasable(c, estimate) {
                Some(Leasable::Count(_)) => {
                    let same = state.numbers.get(key) == Some(&numbers(&c.kind));
                    let held = if same { state.units.held(key, now) } else { 0 };
                    (state.units.want(key, now), held)
                }
                Some(Leasable::Conn) => (state.slots_of(key).map_or(0, |b| b.want(now)), 0),
                Some(Leasable::Tokens(need)) => {
                    (state.tokens_of(key).map_or(0, |b| b.want(need, now)), 0)
                }
                Some(Leasable::Req) => {
                    let Some(s) = state.shares_of(key) else {
                        return (0, 0);
                    };
                    let want = s.want(now);
                    // The share held (full: that is why it asks) goes back first, riding
                    // this call ahead of the grant: never two shares held at once.
                    if let Some(old) = (want > 0).then(|| s.retire()).flatten() {
                        retired.push(share_release(key, zset, s.rule_rate, &old, now));
                    }
                    (want, 0)
                }
                None => (0, 0),
            })
            .unzip();
        drop(state);
        if !retired.is_empty() {
            self.give_back_later(retired);
        }
        out
    }

    /// Record what a call granted (`call.lease`, the call's lease id, names slot and block
    /// members). `sent`: when the call left (count units are spent only before `sent +
    /// reset`). `in_hold`: per check, whether the request holds what it took there (its
    /// group admitted it; `Some(true)` in the chosen alternative). A token block granted
    /// with the request's own reservation in it (admit.lua) has that reservation taken in
    /// it here: the request's part of the block, at the check's index. Where a block cannot be
    /// kept, the request holds the block's member as its own reservation instead.
    pub(super) fn record_grants(
        &self,
        call: &AdmitCall<'_, '_>,
        answers: &[CheckAnswer],
        in_hold: &[Option<bool>],
        sent: u64,
    ) -> Vec<Option<Part>> {
        let (lease, checks, keys, wants) = (call.lease, call.checks, call.keys, call.wants);
        let mut parts: Vec<Option<Part>> = Vec::new();
        if wants.iter().all(|w| *w == 0) {
            return parts;
        }
        let Some(mut state) = self.lock_quota() else {
            return parts;
        };
        let now = self.lease_now();
        let mut back = Vec::new();
        let checks = checks.iter().zip(keys).zip(wants).zip(answers).enumerate();
        for (i, (((c, (key, zset)), &want), a)) in checks {
            if want == 0 {
                continue;
            }
            match c.kind {
                RuleKind::Count(_) => state.units.answered(key),
                RuleKind::Conn(_) => state.slots.get_mut(key).map_or((), |b| b.answered()),
                RuleKind::Tokens(..) | RuleKind::Spend(_) => {
                    state.tokens.get_mut(key).map_or((), |b| b.answered())
                }
                RuleKind::Req(_) => state.shares.get_mut(key).map_or((), |s| s.answered()),
            }
            if a.granted == 0 {
                continue;
            }
            // Leases of other numbers (before a reload) no longer serve this key.
            if state.numbers.insert(key.clone(), numbers(&c.kind)) != Some(numbers(&c.kind)) {
                back.extend(state.clear(key).into_iter().map(|m| slot_release(key, m)));
            }
            match c.kind {
                RuleKind::Count(_) => {
                    let others = a.remaining.unwrap_or(0).saturating_sub(a.granted);
                    let window_end = a.redis_now.saturating_add(a.reset_ms);
                    let deadline = sent.saturating_add(a.reset_ms);
                    state
                        .units
                        .grant(key, a.granted, others, window_end, deadline, now);
                }
                RuleKind::Conn(_) => {
                    let members = (1..=a.granted).map(|j| format!("{lease}#{j}"));
                    match state.slots_of(key) {
                        Some(b) => b.grant(members),
                        None => back.extend(members.map(|m| slot_release(key, m))),
                    }
                }
                RuleKind::Tokens(l, _) | RuleKind::Spend(l) => {
                    let own = call.own_tokens(c, a);
                    let size = a.granted.saturating_add(own);
                    let member = format!("{lease}#t|{size}");
                    let others = a.remaining.unwrap_or(0).saturating_sub(a.granted);
                    let reset_at = sent.saturating_add(a.reset_ms);
                    let done = match state.tokens_of(key) {
                        Some(b) => {
                            b.window_ms = l.window_ms;
                            // The request's own reservation is in the block's member: taken
                            // in the block at once when the request holds it.
                            let held = in_hold[i].map_or(0, |_| own);
                            let (done, block) =
                                b.grant_reserved(member, size, others, reset_at, held);
                            if let Some(alternative) = in_hold[i] {
                                parts.resize_with(in_hold.len(), || None);
                                parts[i] = Some(Part::Tokens {
                                    key: key.clone(),
                                    block,
                                    reserved: own,
                                    window_ms: l.window_ms,
                                    charge: c.rule.charge(),
                                    alternative,
                                });
                            }
                            done
                        }
                        // No room to keep it: the request holds the block's member as its
                        // own reservation (admit.rs), released with its usage.
                        None if in_hold[i].is_some() => Vec::new(),
                        None => {
                            back.push(block_release(key, zset, l.window_ms, member, 0));
                            Vec::new()
                        }
                    };
                    back.extend(
                        done.into_iter()
                            .map(|b| block_release(key, zset, l.window_ms, b.member, b.used)),
                    );
                }
                RuleKind::Req(l) => {
                    let g = a.granted;
                    let member = format!("{lease}#r|{g}|{}", g / 10);
                    let rule_rate = (l.rate * 1000.0).ceil() as u64;
                    let old = match state.shares_of(key) {
                        Some(s) => {
                            s.rule_rate = rule_rate;
                            s.grant(member, g, now)
                        }
                        None => Some(RateShare::unused(member, g)),
                    };
                    back.extend(old.map(|o| share_release(key, zset, rule_rate, &o, now)));
                }
            }
        }
        self.metrics.lease_units.set(outstanding(&state, now));
        drop(state);
        // Requests that waited for this answer try what it brought.
        self.lease_answered.notify_waiters();
        if !back.is_empty() {
            self.give_back_later(back);
        }
        parts
    }

    /// A request none of whose checks may ask for a lease, while another request of one of
    /// its keys asked for one and waits for the answer (requests of a key that miss
    /// together): it waits for that answer (at most [`LEASE_WAIT`]) and is admitted from
    /// what it brought when that has room for every check, instead of a call of its own
    /// (and, for a token check, a release call when it ends). `None`: decide it in Redis.
    pub(super) async fn wait_for_lease(
        self: &Arc<Self>,
        required: &[Check<'_>],
        alternatives: &[Vec<Check<'_>>],
        keys: &[(String, String)],
        estimate: Estimate,
    ) -> Option<Admitted> {
        // Only where leases may serve every check (not batch requests, sliding windows...).
        let first = alternatives.first().map_or(&[][..], Vec::as_slice);
        if required
            .iter()
            .chain(first)
            .any(|c| leasable(c, estimate).is_none())
        {
            return None;
        }
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let waits = &self.metrics.lease_waits;
        let mut waited = false;
        loop {
            // Any answer wakes every waiter (created before the check: none is missed);
            // one that answered another key's ask leaves this request waiting.
            let answered = self.lease_answered.notified();
            let asking = {
                let state = self.lock_quota()?;
                let now = self.lease_now();
                keys.iter().any(|(k, _)| state.asking(k, now))
            };
            let timed_out = asking && tokio::time::timeout_at(deadline, answered).await.is_err();
            if !asking || timed_out {
                if waited || timed_out {
                    waits.with_label_values(&["redis"]).inc();
                }
                return None;
            }
            waited = true;
            let now = self.lease_now();
            if let Some(admitted) = self.admit_leased(required, alternatives, keys, estimate, now) {
                waits.with_label_values(&["leased"]).inc();
                return Some(admitted);
            }
        }
    }

    /// Every slot and block member held, to refresh with the requests' leases.
    pub(super) fn lease_members(&self) -> Vec<(String, String)> {
        let Some(state) = self.lock_quota() else {
            return Vec::new();
        };
        let slots = state
            .slots
            .iter()
            .flat_map(|(k, b)| b.members.iter().map(move |m| (k.clone(), m.clone())));
        let blocks = state
            .tokens
            .iter()
            .flat_map(|(k, b)| b.members().map(move |m| (format!("{k}:r"), m.to_string())));
        let shares = state
            .shares
            .iter()
            .filter_map(|(k, s)| Some((format!("{k}:s"), s.member()?.to_string())));
        slots.chain(blocks).chain(shares).collect()
    }

    /// Each refresh tick: give back idle count units, idle slots and used or idle token
    /// blocks, forget quiet keys, update the outstanding gauge.
    pub(super) async fn tidy_leases(&self) {
        let back = self.take_back(false);
        if !back.is_empty() {
            self.give_back_later(back);
        }
        let idle = self.idle_units();
        self.return_units(idle).await;
    }

    fn idle_units(&self) -> Vec<Return> {
        match self.lock_quota() {
            Some(mut state) => state.units.drain_idle(self.lease_now()),
            None => Vec::new(),
        }
    }

    /// Return count units to their windows, one call per node (per slot if the cluster
    /// map was stale); how many went back.
    async fn return_units(&self, back: Vec<Return>) -> u64 {
        let mut returned = 0;
        for run in self.by_node(back, |r| r.key.as_str()) {
            for chunk in run.chunks(RETURN_CHUNK) {
                match self.return_chunk(chunk).await {
                    -1 => {
                        self.topology_stale();
                        for run in self.by_slot(chunk.to_vec(), |r| r.key.as_str()) {
                            returned += self.return_chunk(&run).await.max(0) as u64;
                        }
                    }
                    n => returned += n.max(0) as u64,
                }
            }
        }
        returned
    }

    /// The releases of what is idle (or of everything not in use, when `all`).
    fn take_back(&self, all: bool) -> Vec<Release> {
        let Some(mut state) = self.lock_quota() else {
            return Vec::new();
        };
        let now = self.lease_now();
        state.units.prune(now);
        let mut back = Vec::new();
        for (key, b) in state.slots.iter_mut() {
            back.extend(b.idle(all).into_iter().map(|m| slot_release(key, m)));
        }
        state.slots.retain(|_, b| !b.forgettable(now));
        for (key, b) in state.tokens.iter_mut() {
            let zset = format!("{key}:r");
            let window_ms = b.window_ms;
            back.extend(
                b.tidy(all)
                    .into_iter()
                    .map(|t| block_release(key, &zset, window_ms, t.member, t.used)),
            );
        }
        state.tokens.retain(|_, b| !b.forgettable(now));
        for (key, s) in state.shares.iter_mut() {
            if let Some(old) = s.tidy(all, now) {
                back.push(share_release(
                    key,
                    &format!("{key}:s"),
                    s.rule_rate,
                    &old,
                    now,
                ));
            }
        }
        state.shares.retain(|_, s| !s.forgettable(now));
        let LeaseState {
            units,
            slots,
            tokens,
            shares,
            numbers,
            ..
        } = &mut *state;
        numbers.retain(|k, _| {
            units.held(k, now) > 0
                || slots.contains_key(k)
                || tokens.contains_key(k)
                || shares.contains_key(k)
        });
        self.metrics.lease_units.set(outstanding(&state, now));
        back
    }

    /// Stop leasing and give back what is held (shutdown): count units to their window,
    /// free slots and idle blocks through the release path. Blocks and slots of requests
    /// still running go back when they end, as any request's own leases.
    pub async fn return_leases(&self) {
        let mut releases = self.take_back(true);
        releases.extend(self.lazy.take_all());
        if !releases.is_empty() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send_release(ReleaseMsg::now(releases, Some(tx)));
            let _ = rx.await;
        }
        let back = self.stop_leasing();
        let total: u64 = back.iter().map(|r| r.units).sum();
        let returned = self.return_units(back).await;
        if total > 0 {
            tracing::info!(
                units = total,
                returned,
                "quota lease units given back to Redis"
            );
        }
    }

    /// Stop taking leases; the count units still held, to return.
    fn stop_leasing(&self) -> Vec<Return> {
        let Some(mut state) = self.lock_quota() else {
            return Vec::new();
        };
        self.leasing.store(false, Ordering::Relaxed);
        self.metrics.lease_units.set(0);
        state.units.drain(self.lease_now())
    }

    /// One call of lease_return.lua: the units given back (0 on failure: the lease's
    /// units then stay counted until their window ends), -1 if a key is not on the node
    /// the cluster map said.
    async fn return_chunk(&self, chunk: &[Return]) -> i64 {
        let mut inv = self.lease_return.prepare_invoke();
        inv.arg(chunk.len());
        for r in chunk {
            inv.arg(r.window_end).arg(r.units);
        }
        let keys = chunk.iter().map(|r| r.key.as_str());
        call::push_keys(self.policy == LimitPolicy::RedisCluster, &mut inv, keys);
        self.call::<i64>("lease_return", &inv).await.unwrap_or(0)
    }
}
