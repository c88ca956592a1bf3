//! The admission API: one call evaluates every rule that applies to a request, for the
//! proxy and (later) the batch dispatcher alike.
//!
//! Order, as in APISIX (limit-conn → limit-count → limit-req), with token reservations
//! right after the concurrency slots:
//! 1. `conn`: take a slot in each; a rejection here consumes nothing else.
//! 2. `tokens`: reserve the estimate in each.
//! 3. `count`: count the request (a rejection still counts, as in APISIX).
//! 4. `req`: leak and add to each bucket.
//!
//! A rejection gives back the slots and reservations taken so far. An admitted request
//! gets a [`Ticket`] that holds its slots and reservations: `finish` charges the real token
//! usage, and dropping it (on any outcome) releases whatever is still held, so slots and
//! reservations cannot leak.

use super::local::{LocalStore, Slot};
use super::rules::{Rule, RuleKind};
use super::tokens::TokenLimit;
use crate::config::schema::TokenStrategy;
use std::sync::Arc;

/// One rule applied to one counter.
pub struct Check<'a> {
    pub rule: &'a Rule,
    pub key: Arc<str>,
}

/// What kind of budget a quota or rejection is about (OpenAI's `requests` / `tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Requests,
    Tokens,
    Concurrency,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Requests | Budget::Concurrency => "requests",
            Budget::Tokens => "tokens",
        }
    }
}

/// A quota seen while admitting, for the rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub budget: Budget,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    /// Also sent as APISIX's `X-RateLimit-*` headers (`show_limit_quota_header`).
    pub apisix_header: bool,
}

/// Why a request was not admitted.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub rule: Arc<str>,
    pub budget: Budget,
    /// When a retry can succeed (best estimate).
    pub retry_after_ms: u64,
    pub quotas: Vec<Quota>,
}

struct Reservation {
    key: Arc<str>,
    limit: TokenLimit,
    strategy: TokenStrategy,
    tokens: u64,
}

/// What an admitted request holds until it ends.
pub struct Ticket {
    store: Arc<LocalStore>,
    conn: Vec<Arc<str>>,
    reservations: Vec<Reservation>,
    /// Sleep this long before going upstream (limit-req / limit-conn delay).
    pub delay_ms: u64,
    pub quotas: Vec<Quota>,
}

/// Token usage of a finished request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
}

impl TokenUsage {
    fn cost(&self, s: TokenStrategy) -> u64 {
        match s {
            TokenStrategy::TotalTokens => self.prompt + self.completion,
            TokenStrategy::PromptTokens => self.prompt,
            TokenStrategy::CompletionTokens => self.completion,
        }
    }
}

impl Ticket {
    fn empty(store: &Arc<LocalStore>) -> Ticket {
        Ticket {
            store: store.clone(),
            conn: Vec::new(),
            reservations: Vec::new(),
            delay_ms: 0,
            quotas: Vec::new(),
        }
    }

    /// Charge real usage in place of the reservations. `None`: no usage is known, so the
    /// reservation itself is charged (a stream that broke off still used tokens).
    pub fn finish(mut self, usage: Option<TokenUsage>) {
        let now = self.store.now_ms();
        for r in std::mem::take(&mut self.reservations) {
            let used = usage.map_or(r.tokens, |u| u.cost(r.strategy));
            release_tokens(&self.store, &r.key, r.limit, now, r.tokens, used);
        }
    }
}

fn release_tokens(
    store: &LocalStore,
    key: &str,
    limit: super::tokens::TokenLimit,
    now: u64,
    reserved: u64,
    used: u64,
) {
    store.update(key, |slot| {
        let state = slot.and_then(Slot::tokens);
        (
            Some(Slot::Tokens(limit.reconcile(state, now, reserved, used))),
            (),
        )
    });
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let now = self.store.now_ms();
        for key in &self.conn {
            self.store.update(key, |slot| match slot {
                Some(Slot::Conn(n)) if n > 1 => (Some(Slot::Conn(n - 1)), ()),
                _ => (None, ()),
            });
        }
        for r in &self.reservations {
            release_tokens(&self.store, &r.key, r.limit, now, r.tokens, 0);
        }
    }
}

/// Evaluate `checks` for one request that is expected to use `estimate_tokens`.
pub fn admit(
    store: &Arc<LocalStore>,
    checks: &[Check<'_>],
    estimate_tokens: u64,
) -> Result<Ticket, Rejection> {
    let now = store.now_ms();
    let mut ticket = Ticket::empty(store);
    let reject = |ticket: Ticket, rule: &Rule, budget, retry_after_ms: u64| {
        let quotas = ticket.quotas.clone();
        drop(ticket); // gives back slots and reservations
        Err(Rejection {
            rule: rule.id.clone(),
            budget,
            retry_after_ms: retry_after_ms.max(1),
            quotas,
        })
    };
    for c in checks {
        if let RuleKind::Conn(l) = c.rule.kind {
            let d = store.update(&c.key, |slot| {
                let n = slot.and_then(Slot::conn).unwrap_or(0);
                match l.decide(n) {
                    super::conn::ConnDecision::Admit { delay_ms } => {
                        (Some(Slot::Conn(n + 1)), Some(delay_ms))
                    }
                    super::conn::ConnDecision::Reject => (slot, None),
                }
            });
            match d {
                Some(delay) => {
                    ticket.conn.push(c.key.clone());
                    ticket.delay_ms = ticket.delay_ms.max(delay);
                }
                None => return reject(ticket, c.rule, Budget::Concurrency, 1000),
            }
        }
    }
    for c in checks {
        if let RuleKind::Tokens(l, strategy) = c.rule.kind {
            let d = store.update(&c.key, |slot| {
                let state = slot.and_then(Slot::tokens);
                match l.reserve(state, now, estimate_tokens) {
                    super::tokens::TokenDecision::Admit {
                        state,
                        reservation,
                        remaining,
                        reset_ms,
                    } => (
                        Some(Slot::Tokens(state)),
                        (Some(reservation), remaining, reset_ms),
                    ),
                    super::tokens::TokenDecision::Reject {
                        remaining,
                        reset_ms,
                    } => (slot, (None, remaining, reset_ms)),
                }
            });
            let (reservation, remaining, reset_ms) = d;
            ticket.quotas.push(Quota {
                budget: Budget::Tokens,
                limit: l.limit,
                remaining,
                reset_ms,
                apisix_header: false,
            });
            match reservation {
                Some(tokens) => ticket.reservations.push(Reservation {
                    key: c.key.clone(),
                    limit: l,
                    strategy,
                    tokens,
                }),
                None => return reject(ticket, c.rule, Budget::Tokens, reset_ms),
            }
        }
    }
    for c in checks {
        if let RuleKind::Count(l) = c.rule.kind {
            let d = store.update(&c.key, |slot| {
                let state = slot.and_then(Slot::count);
                let d = l.hit(state, now, 1);
                (Some(Slot::Count(d.state)), d)
            });
            ticket.quotas.push(Quota {
                budget: Budget::Requests,
                limit: l.count,
                remaining: d.remaining,
                reset_ms: d.reset_ms,
                apisix_header: c.rule.answer.quota_header,
            });
            if !d.admitted {
                return reject(ticket, c.rule, Budget::Requests, d.reset_ms);
            }
        }
    }
    for c in checks {
        if let RuleKind::Req(l) = c.rule.kind {
            let d = store.update(&c.key, |slot| {
                let state = slot.and_then(Slot::req);
                match l.decide(state, now) {
                    super::req::ReqDecision::Admit { state, delay_ms } => {
                        (Some(Slot::Req(state)), Ok(delay_ms))
                    }
                    super::req::ReqDecision::Reject { retry_after_ms } => {
                        (slot, Err(retry_after_ms))
                    }
                }
            });
            match d {
                Ok(delay) => ticket.delay_ms = ticket.delay_ms.max(delay),
                Err(retry) => return reject(ticket, c.rule, Budget::Requests, retry),
            }
        }
    }
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::LimitRuleConfig;

    fn rule(yaml: &str) -> Rule {
        let c: LimitRuleConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Rule::compile("test", &c).unwrap()
    }

    fn checks(rules: &[Rule]) -> Vec<Check<'_>> {
        rules
            .iter()
            .map(|r| Check {
                rule: r,
                key: r.id.clone(),
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
        let t1 = admit(&store, &checks(&rules), 100).unwrap();
        assert_eq!(
            t1.quotas
                .iter()
                .find(|q| q.budget == Budget::Requests)
                .unwrap()
                .remaining,
            9
        );
        let r = admit(&store, &checks(&rules), 100).err().unwrap();
        assert_eq!((r.budget, &*r.rule), (Budget::Concurrency, "test/c"));
        drop(t1); // the slot comes back, the reservation too (nothing was used)
        let t2 = admit(&store, &checks(&rules), 100).unwrap();
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
        }));
        let t3 = admit(&store, &checks(&rules), 100).unwrap();
        assert_eq!(
            t3.quotas
                .iter()
                .find(|q| q.budget == Budget::Tokens)
                .unwrap()
                .remaining,
            850
        );
    }

    #[test]
    fn count_rejection_still_counts_and_releases_the_slot() {
        let store = Arc::new(LocalStore::default());
        let rules = [
            rule("{name: c, conn: {conn: 5}}"),
            rule("{name: n, count: {count: 1, time_window: 60s}}"),
        ];
        admit(&store, &checks(&rules), 0).unwrap().finish(None);
        let r = admit(&store, &checks(&rules), 0).err().unwrap();
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
        let t1 = admit(&store, &checks(&rules), 30).unwrap();
        assert_eq!(t1.delay_ms, 0);
        t1.finish(None); // a stream that broke off: charge the 30 reserved
        let t2 = admit(&store, &checks(&rules), 30).unwrap();
        assert!(
            t2.delay_ms >= 990,
            "second request in the burst waits ~1 s: {}",
            t2.delay_ms
        );
        assert_eq!(t2.quotas[0].remaining, 40);
    }
}
