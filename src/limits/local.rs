//! The in-process store (`local` policy): the state of every counter, sharded behind
//! mutexes so that each decision on a key is atomic (APISIX's local limit-req reads and
//! writes without a lock across workers: reference bug 2). Time is a monotonic clock.
//!
//! [`admit`] evaluates the groups of an admission call against it (see
//! [`super::admission`] for the order and semantics); [`LocalHold`] is what an admitted
//! request holds here.

use super::admission::{
    Admitted, Budget, Check, Denied, Estimate, Hold, Quota, Rejection, Ticket, TokenUsage,
};
use super::conn::ConnDecision;
use super::priority;
use super::req::ReqDecision;
use super::rules::{Rule, RuleKind};
pub use super::slots::{LocalStore, Slot, Stored};
use super::tokens::{TokenDecision, TokenLimit};
use crate::limits::admission::Charge;
use std::sync::Arc;

struct Reservation {
    key: Arc<str>,
    limit: TokenLimit,
    charge: Charge,
    tokens: u64,
}

/// The slots and reservations an admitted request holds in the local store.
pub struct LocalHold {
    store: Arc<LocalStore>,
    conn: Vec<Arc<str>>,
    reservations: Vec<Reservation>,
    /// Where the chosen alternative's part begins in `conn` and `reservations`.
    choice_at: (usize, usize),
}

impl Hold for LocalHold {
    fn finish(
        mut self: Box<Self>,
        usage: Option<TokenUsage>,
    ) -> Option<super::admission::Released> {
        let now = self.store.now_ms();
        for r in std::mem::take(&mut self.reservations) {
            let used = usage.as_ref().map_or(r.tokens, |u| {
                let cost = u.cost(&r.charge);
                if u.at_least_reserved {
                    cost.max(r.tokens)
                } else {
                    cost
                }
            });
            release_tokens(&self.store, &r, now, used);
        }
        None
    }
    fn release_choice(&mut self) {
        let (c, r) = self.choice_at;
        self.truncate(c, r);
    }
    fn is_shared(&self) -> bool {
        false
    }
}

impl LocalHold {
    /// Give back what was taken after the first `conn` slots and `res` reservations.
    fn truncate(&mut self, conn: usize, res: usize) {
        let now = self.store.now_ms();
        for key in self.conn.drain(conn..) {
            release_slot(&self.store, &key);
        }
        for r in self.reservations.drain(res..) {
            release_tokens(&self.store, &r, now, 0);
        }
    }
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        self.truncate(0, 0);
    }
}

/// A concurrency count stored back unchanged.
fn keep(slot: Option<Slot>) -> Option<Stored> {
    slot.and_then(Slot::conn)
        .filter(|n| *n > 0)
        .map(Stored::conn)
}

fn release_slot(store: &LocalStore, key: &str) {
    store.update(key, |slot| match slot {
        Some(Slot::Conn(n)) if n > 1 => (Some(Stored::conn(n - 1)), ()),
        _ => (None, ()),
    });
}

fn release_tokens(store: &LocalStore, r: &Reservation, now: u64, used: u64) {
    store.update(&r.key, |slot| {
        let state = slot.and_then(Slot::tokens);
        (
            Some(Stored::tokens(
                r.limit.reconcile(state, now, r.tokens, used),
            )),
            (),
        )
    });
}

/// Evaluate one admission call (required group, then the first alternative that passes)
/// for a request expected to use `estimate`.
pub fn admit(
    store: &Arc<LocalStore>,
    required: &[Check<'_>],
    alternatives: &[Vec<Check<'_>>],
    estimate: Estimate,
) -> Result<Admitted, Denied> {
    let now = store.now_ms();
    let mut hold = LocalHold {
        store: store.clone(),
        conn: Vec::new(),
        reservations: Vec::new(),
        choice_at: (0, 0),
    };
    let mut quotas = Vec::new();
    let mut delay_ms = 0;
    group(
        &mut hold,
        required,
        estimate,
        now,
        &mut quotas,
        &mut delay_ms,
    )
    .map_err(Denied::Limited)?;
    hold.choice_at = (hold.conn.len(), hold.reservations.len());
    let mut choice = None;
    let mut best: Option<Rejection> = None;
    let mut skipped = Vec::new();
    for (i, checks) in alternatives.iter().enumerate() {
        let (q, d) = (quotas.len(), delay_ms);
        match group(&mut hold, checks, estimate, now, &mut quotas, &mut delay_ms) {
            Ok(()) => {
                choice = Some(i);
                break;
            }
            Err(mut r) => {
                r.alternative = Some(i);
                skipped.push(r.rule.clone());
                quotas.truncate(q);
                delay_ms = d;
                if best
                    .as_ref()
                    .is_none_or(|b| r.retry_after_ms < b.retry_after_ms)
                {
                    best = Some(r);
                }
            }
        }
    }
    let ticket = Ticket {
        delay_ms,
        quotas,
        hold: Some(Box::new(hold)),
    };
    if let (None, Some(r)) = (choice, best) {
        return Err(Denied::NoAlternative(r, Box::new(ticket)));
    }
    Ok(Admitted {
        ticket,
        choice,
        skipped,
    })
}

/// One group, in APISIX's order. On rejection the group's slots and reservations are given
/// back; its quotas so far go with the rejection.
fn group(
    hold: &mut LocalHold,
    checks: &[Check<'_>],
    estimate: Estimate,
    now: u64,
    quotas: &mut Vec<Quota>,
    delay_ms: &mut u64,
) -> Result<(), Rejection> {
    let store = hold.store.clone();
    let (conn0, res0, q0) = (hold.conn.len(), hold.reservations.len(), quotas.len());
    let reject =
        |hold: &mut LocalHold, quotas: &mut Vec<Quota>, rule: &Rule, budget, retry: u64| {
            // The reservations given back leave their quotas as they were before them (a
            // refused request's remaining counters do not count the request itself): the
            // group's token and spend quotas come in the order of its reservations.
            let reserved = quotas[q0..]
                .iter_mut()
                .filter(|q| matches!(q.budget, Budget::Tokens | Budget::Spend))
                .zip(&hold.reservations[res0..]);
            for (q, r) in reserved {
                // (`any_left` reports what was left before its reservation already.)
                if !r.limit.any_left {
                    q.remaining = q.remaining.saturating_add(r.tokens).min(q.limit);
                }
            }
            hold.truncate(conn0, res0);
            Err(Rejection {
                rule: rule.id.clone(),
                budget,
                retry_after_ms: retry.max(1),
                quotas: quotas.drain(q0..).collect(),
                alternative: None,
            })
        };
    for c in checks {
        if let RuleKind::Conn(l) = c.kind {
            let d = store.update_at(&c.key, now, |slot| {
                let n = slot.and_then(Slot::conn).unwrap_or(0);
                if let Some(rate) = c.yield_to {
                    if let Err(retry) = priority::conn_room(&l, n, rate) {
                        return (keep(slot), Err(retry));
                    }
                }
                match l.decide(n) {
                    ConnDecision::Admit { delay_ms } => (Some(Stored::conn(n + 1)), Ok(delay_ms)),
                    ConnDecision::Reject => (keep(slot), Err(1000)),
                }
            });
            match d {
                Ok(delay) => {
                    hold.conn.push(c.key.clone());
                    *delay_ms = (*delay_ms).max(delay);
                }
                Err(retry) => return reject(hold, quotas, c.rule, Budget::Concurrency, retry),
            }
        }
    }
    for c in checks {
        if let Some(l) = c.kind.reservation() {
            let Some(charge) = c.rule.charge() else {
                continue;
            };
            let budget = match c.kind {
                RuleKind::Spend(_) => Budget::Spend,
                _ => Budget::Tokens,
            };
            let need = estimate.of(&c.kind);
            let (reservation, remaining, reset_ms) = store.update_at(&c.key, now, |slot| {
                let state = slot.and_then(Slot::tokens);
                if let Some(rate) = c.yield_to {
                    if let Err(retry) = priority::tokens_room(&l, state, now, need, rate) {
                        let (remaining, _) = l.peek(state, now);
                        return (state.map(Stored::tokens), (None, remaining, retry));
                    }
                }
                match l.reserve(state, now, need) {
                    TokenDecision::Admit {
                        state,
                        reservation,
                        remaining,
                        reset_ms,
                    } => (
                        Some(Stored::tokens(state)),
                        (Some(reservation), remaining, reset_ms),
                    ),
                    TokenDecision::Reject {
                        remaining,
                        reset_ms,
                    } => (state.map(Stored::tokens), (None, remaining, reset_ms)),
                }
            });
            quotas.push(Quota {
                budget,
                limit: l.limit,
                remaining,
                reset_ms,
                apisix_header: c.rule.answer.quota_header.clone(),
            });
            match reservation {
                Some(tokens) => hold.reservations.push(Reservation {
                    key: c.key.clone(),
                    limit: l,
                    charge,
                    tokens,
                }),
                None => return reject(hold, quotas, c.rule, budget, reset_ms),
            }
        }
    }
    for c in checks {
        if let RuleKind::Count(l) = c.kind {
            let d = store.update_at(&c.key, now, |slot| {
                let state = slot.and_then(Slot::count);
                if let Some(rate) = c.yield_to {
                    // A batch request without room is not counted.
                    if let Err(retry) = priority::count_room(&l, state, now, rate) {
                        return (state.map(|s| Stored::count(&l, s)), Err(retry));
                    }
                }
                let d = l.hit(state, now, 1);
                (Some(Stored::count(&l, d.state)), Ok(d))
            });
            let d = match d {
                Ok(d) => d,
                Err(retry) => return reject(hold, quotas, c.rule, Budget::Requests, retry),
            };
            quotas.push(Quota::of_count(&l, &d, c.rule.answer.quota_header.clone()));
            if !d.admitted {
                // A sliding rejection may report a reset of 0: retry just after it.
                return reject(hold, quotas, c.rule, Budget::Requests, d.reset_ms.max(10));
            }
        }
    }
    for c in checks {
        if let RuleKind::Req(l) = c.kind {
            let d = store.update_at(&c.key, now, |slot| {
                let state = slot.and_then(Slot::req);
                if let Some(rate) = c.yield_to {
                    if let Err(retry) = priority::req_room(&l, state, now, rate) {
                        return (state.map(|s| Stored::req(&l, s)), Err(retry));
                    }
                }
                match l.decide(state, now) {
                    ReqDecision::Admit { state, delay_ms } => {
                        (Some(Stored::req(&l, state)), Ok(delay_ms))
                    }
                    ReqDecision::Reject { retry_after_ms } => {
                        (state.map(|s| Stored::req(&l, s)), Err(retry_after_ms))
                    }
                }
            });
            match d {
                Ok(delay) => *delay_ms = (*delay_ms).max(delay),
                Err(retry) => return reject(hold, quotas, c.rule, Budget::Requests, retry),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::LimitRuleConfig;

    fn rule(yaml: &str) -> Rule {
        let c: LimitRuleConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Rule::compile("test", &c).unwrap()
    }

    fn admit1(store: &Arc<LocalStore>, c: &[Check<'_>], est: u64) -> Result<Ticket, Rejection> {
        let est = Estimate {
            tokens: est,
            spend_micro_usd: est,
        };
        match admit(store, c, &[], est) {
            Ok(a) => Ok(a.ticket),
            Err(Denied::Limited(r)) => Err(r),
            Err(d) => panic!("{d:?}"),
        }
    }

    fn checks(rules: &[Rule]) -> Vec<Check<'_>> {
        rules
            .iter()
            .map(|r| Check {
                rule: r,
                key: r.id.clone(),
                kind: r.kind,
                yield_to: None,
            })
            .collect()
    }

    #[test]
    fn conn_rejection_consumes_nothing_else() {
        let store = Arc::new(LocalStore::default());
        let rules = [
            rule("{name: c, conn: {conn: 1}}"),
            rule("{name: n, count: {count: 10, time_window: 60s}}"),
            rule("{name: t, tokens: {limit: 1000, time_window: 60s}}"),
        ];
        let t1 = admit1(&store, &checks(&rules), 100).unwrap();
        assert_eq!(
            t1.quotas
                .iter()
                .find(|q| q.budget == Budget::Requests)
                .unwrap()
                .remaining,
            9
        );
        let r = admit1(&store, &checks(&rules), 100).err().unwrap();
        assert_eq!((r.budget, &*r.rule), (Budget::Concurrency, "test/c"));
        drop(t1); // the slot comes back, the reservation too (nothing was used)
        let t2 = admit1(&store, &checks(&rules), 100).unwrap();
        let q = t2.quotas.clone();
        assert_eq!(
            q.iter()
                .find(|q| q.budget == Budget::Requests)
                .unwrap()
                .remaining,
            8
        );
        assert_eq!(
            q.iter()
                .find(|q| q.budget == Budget::Tokens)
                .unwrap()
                .remaining,
            900
        );
        t2.finish(Some(TokenUsage {
            prompt: 30,
            completion: 20,
            total: None,
            at_least_reserved: false,
            fields: None,
            spend_micro_usd: None,
        }));
        let t3 = admit1(&store, &checks(&rules), 100).unwrap();
        assert_eq!(
            t3.quotas
                .iter()
                .find(|q| q.budget == Budget::Tokens)
                .unwrap()
                .remaining,
            850
        );
    }

    /// A refused request's remaining counters do not count the request: the reservations
    /// its group gave back are not subtracted from what the 429 reports.
    #[test]
    fn a_rejection_reports_remaining_without_the_refused_request() {
        let store = Arc::new(LocalStore::default());
        let rules = [
            rule("{name: wide, tokens: {limit: 1000, time_window: 60s}}"),
            rule("{name: any, tokens: {limit: 1000, time_window: 60s, admission: any_left}}"),
            rule("{name: n, count: {count: 1, time_window: 60s}}"),
        ];
        admit1(&store, &checks(&rules), 0).unwrap().finish(None);
        let r = admit1(&store, &checks(&rules), 300).err().unwrap();
        assert_eq!(r.budget, Budget::Requests);
        let tokens: Vec<u64> = r
            .quotas
            .iter()
            .filter(|q| q.budget == Budget::Tokens)
            .map(|q| q.remaining)
            .collect();
        assert_eq!(tokens, [1000, 1000]);
    }

    #[test]
    fn count_rejection_still_counts_and_releases_the_slot() {
        let store = Arc::new(LocalStore::default());
        let rules = [
            rule("{name: c, conn: {conn: 5}}"),
            rule("{name: n, count: {count: 1, time_window: 60s}}"),
        ];
        admit1(&store, &checks(&rules), 0).unwrap().finish(None);
        let r = admit1(&store, &checks(&rules), 0).err().unwrap();
        assert_eq!(r.budget, Budget::Requests);
        assert!(r.retry_after_ms > 59_000);
        // Only the count counter remains: the slot was given back.
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn req_delay_and_missing_usage_charges_the_reservation() {
        let store = Arc::new(LocalStore::default());
        let rules = [
            rule("{name: r, req: {rate: 1, burst: 1}}"),
            rule("{name: t, tokens: {limit: 100, time_window: 60s}}"),
        ];
        let t1 = admit1(&store, &checks(&rules), 30).unwrap();
        assert_eq!(t1.delay_ms, 0);
        t1.finish(None); // a stream that broke off: charge the 30 reserved
        let t2 = admit1(&store, &checks(&rules), 30).unwrap();
        assert!(
            t2.delay_ms >= 990,
            "second request in the burst waits ~1 s: {}",
            t2.delay_ms
        );
        assert_eq!(t2.quotas[0].remaining, 40);
    }

    #[test]
    fn first_alternative_with_headroom_is_chosen_and_rejected_ones_give_back() {
        let store = Arc::new(LocalStore::default());
        let route = [rule("{name: c, conn: {conn: 10}}")];
        let a = [
            rule("{name: a-conn, conn: {conn: 5}}"),
            rule("{name: a-rpm, req: {rate: 1, burst: 0, nodelay: true}}"),
        ];
        let b = [rule(
            "{name: b-rpm, req: {rate: 1, burst: 0, nodelay: true}}",
        )];
        let alts = |s: &[Rule], t: &[Rule]| -> Vec<Vec<Check<'static>>> {
            let s: &'static [Rule] = Box::leak(s.to_vec().into_boxed_slice());
            let t: &'static [Rule] = Box::leak(t.to_vec().into_boxed_slice());
            vec![checks(s), checks(t)]
        };
        let one = admit(&store, &checks(&route), &alts(&a, &b), Estimate::default()).unwrap();
        assert_eq!(one.choice, Some(0));
        let two = admit(&store, &checks(&route), &alts(&a, &b), Estimate::default()).unwrap();
        assert_eq!(two.choice, Some(1), "a is at its rate, b has headroom");
        // a's slot taken while trying it was given back: only one a-conn slot is held.
        assert_eq!(store.get("test/a-conn").and_then(Slot::conn), Some(1));
        let Err(Denied::NoAlternative(r, held)) =
            admit(&store, &checks(&route), &alts(&a, &b), Estimate::default())
        else {
            panic!("every alternative is at its rate");
        };
        assert_eq!(
            r.alternative,
            Some(0),
            "both wait ~1 s; the first is reported"
        );
        assert!(r.retry_after_ms > 900);
        // The route's slot stays held by the caller (it may wait for a deployment).
        let route_slots = || store.get("test/c").and_then(Slot::conn);
        assert_eq!(route_slots(), Some(3));
        drop(held);
        assert_eq!(route_slots(), Some(2));
        drop((one, two));
        assert_eq!(store.len(), 2, "only the two req buckets remain");
    }
}
