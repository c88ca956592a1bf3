//! The admission API: one call evaluates every rule that applies to a request, for the
//! proxy and the batch dispatcher alike, whatever the store ([`super::local`] for the
//! in-process policy, [`super::redis`] for the shared ones).
//!
//! Checks come in groups: the *required* group (consumer and model-route limits) and
//! *alternatives* (one per deployment, in routing order). A request is admitted when the
//! required group passes and then the first alternative that passes; so one call, and with
//! Redis one round trip, picks a deployment with headroom (limit-aware routing).
//!
//! Inside a group the order is APISIX's (limit-conn → limit-count → limit-req), with token
//! reservations right after the concurrency slots:
//! 1. `conn`: take a slot in each; a rejection here consumes nothing else.
//! 2. `tokens` and `spend`: reserve the estimate in each (tokens, or micro-dollars).
//! 3. `count`: count the request (a rejection still counts, as in APISIX).
//! 4. `req`: leak and add to each bucket.
//!
//! A group that rejects gives back the slots and reservations it took. An admitted request
//! gets a [`Ticket`] that holds its slots and reservations: `finish` charges the real token
//! usage, and dropping it (on any outcome) releases whatever is still held, so slots and
//! reservations cannot leak.

pub use super::rules::Charge;
use super::rules::{Rule, RuleKind};
use crate::config::key::KeyContext;
use crate::config::schema::TokenStrategy;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One rule applied to one counter.
#[derive(Clone)]
pub struct Check<'a> {
    pub rule: &'a Rule,
    pub key: Arc<str>,
    /// The rule's algorithm and numbers for this request (templates resolved).
    pub kind: RuleKind,
    /// `None` for a realtime request; for a batch request, the realtime requests per
    /// second this check must leave room for ([`super::priority`]).
    pub yield_to: Option<f64>,
}

pub use crate::quota::{Budget, Quota};

impl<'a> Check<'a> {
    /// `rule` for one request: its counter key and its numbers (APISIX templates resolved;
    /// an error is a value APISIX refuses with a 500).
    pub fn new(rule: &'a Rule, cx: &KeyContext<'_>) -> Result<Check<'a>, String> {
        let kind = match &rule.templates {
            Some(t) => t.apply(rule.kind, cx)?,
            None => rule.kind,
        };
        Ok(Check {
            rule,
            key: rule.counter_key(cx),
            kind,
            yield_to: None,
        })
    }
}

/// The checks of `rules` for one request, in order: a rule whose key resolves nothing is
/// left out when it says so (`key_unresolved: skip` or `rules`), and when a scope's
/// `rules` limits all are, the request is refused as APISIX refuses it (`Err`, a 500).
/// `Err` too for a templated number APISIX refuses.
pub fn checks<'r>(
    rules: impl Iterator<Item = &'r Rule>,
    cx: &KeyContext<'_>,
) -> Result<Vec<Check<'r>>, String> {
    use crate::config::schema::KeyUnresolved;
    let mut out = Vec::new();
    // Scopes with `rules` limits, and whether one of them applied.
    let mut sets: Vec<(&super::rules::Scope, bool)> = Vec::new();
    for rule in rules {
        let applies = rule.applies(cx);
        if rule.key_unresolved == KeyUnresolved::Rules {
            match sets.iter_mut().find(|(s, _)| **s == rule.scope) {
                Some(set) => set.1 |= applies,
                None => sets.push((&rule.scope, applies)),
            }
        }
        if applies {
            out.push(Check::new(rule, cx)?);
        }
    }
    if sets.iter().any(|(_, applied)| !applied) {
        return Err("no rule applies to the request (every rule's key resolved nothing)".into());
    }
    Ok(out)
}

impl Quota {
    /// The quota a limit-count decision reports.
    pub fn of_count(
        l: &super::count::CountLimit,
        d: &super::count::CountDecision,
        apisix_header: Option<crate::quota::ApisixHeader>,
    ) -> Quota {
        Quota {
            budget: Budget::Requests,
            limit: l.count,
            remaining: d.remaining,
            reset_ms: d.reset_ms,
            apisix_header,
        }
    }
}

/// What a request is expected to use: its token checks reserve `tokens`, its spend checks
/// `spend_micro_usd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    pub spend_micro_usd: u64,
}

impl Estimate {
    /// What a check of `kind` reserves.
    pub fn of(&self, kind: &RuleKind) -> u64 {
        match kind {
            RuleKind::Spend(_) => self.spend_micro_usd,
            _ => self.tokens,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The rule that rejected (`scope/name`).
    pub rule: Arc<str>,
    pub budget: Budget,
    /// When a retry can succeed (best estimate).
    pub retry_after_ms: u64,
    pub quotas: Vec<Quota>,
    /// `None`: the required group rejected; `Some(i)`: every alternative rejected and this
    /// is the one that frees first.
    pub alternative: Option<usize>,
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Denied {
    /// A limit of the required group said no (nothing is held).
    Limited(Rejection),
    /// The required group admitted the request (its part is held in the ticket) but every
    /// alternative rejected it: the caller keeps the ticket while it waits or fails over,
    /// so the required limits count the request once.
    NoAlternative(Rejection, Box<Ticket>),
    /// The shared store cannot be reached and degradation is not allowed.
    Unavailable(String),
}

/// An admitted request: what it holds, and which alternative it got.
pub struct Admitted {
    pub ticket: Ticket,
    /// Index into the alternatives (`None` when there were none).
    pub choice: Option<usize>,
    /// The rules that rejected the alternatives tried before the chosen one.
    pub skipped: Vec<Arc<str>>,
}

/// Token usage of a finished request.
#[derive(Debug, Clone, Default)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    /// The total the provider reported (`None`: prompt + completion stands in).
    pub total: Option<u64>,
    /// An estimate (a stream's relayed text): each limit charges at least what it had
    /// reserved.
    pub at_least_reserved: bool,
    /// What the answer cost in micro-dollars (`None`: the deployment has no price; spend
    /// rules then charge nothing, and `check` warns about the missing price).
    pub spend_micro_usd: Option<u64>,
    /// The answer's usage object's numeric fields, by name, for `cost_expr` (`None`:
    /// `prompt_tokens`, `completion_tokens` and `total_tokens` from the two above).
    pub fields: Option<Arc<BTreeMap<String, f64>>>,
}

impl TokenUsage {
    /// The provider's total, or prompt + completion when it reported none (APISIX's
    /// ai-rate-limiting charges `usage.total_tokens` as reported).
    pub fn total(&self) -> u64 {
        self.total
            .unwrap_or_else(|| self.prompt.saturating_add(self.completion))
    }

    /// What `c` charges for this usage (an expression that yields no finite number
    /// charges nothing, as APISIX skips it).
    pub fn cost(&self, c: &Charge) -> u64 {
        let (strategy, expr) = match c {
            Charge::Spend => return self.spend_micro_usd.unwrap_or(0),
            Charge::Tokens { strategy, expr } => (strategy, expr),
        };
        match strategy {
            TokenStrategy::TotalTokens => self.total(),
            TokenStrategy::PromptTokens => self.prompt,
            TokenStrategy::CompletionTokens => self.completion,
            TokenStrategy::Expression => {
                let Some(expr) = expr else { return 0 };
                let derived;
                let fields = match &self.fields {
                    Some(f) => f.as_ref(),
                    None => {
                        derived = BTreeMap::from([
                            ("prompt_tokens".to_string(), self.prompt as f64),
                            ("completion_tokens".to_string(), self.completion as f64),
                            ("total_tokens".to_string(), self.total() as f64),
                        ]);
                        &derived
                    }
                };
                expr.cost(fields).unwrap_or(0)
            }
        }
    }
}

/// Resolves when a shared store has applied a release.
pub type Released = tokio::sync::oneshot::Receiver<()>;

/// What an admitted request holds until it ends.
pub struct Ticket {
    /// Sleep this long before going upstream (limit-req / limit-conn delay).
    pub delay_ms: u64,
    pub quotas: Vec<Quota>,
    pub(crate) hold: Option<Box<dyn Hold>>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("delay_ms", &self.delay_ms)
            .field("quotas", &self.quotas)
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// The store-specific part of a ticket (each store has its own: this module names none of
/// them). It releases what it holds when dropped.
pub(crate) trait Hold: Send + Sync {
    /// Charge real usage (or, without it, the reservations) and release the rest.
    fn finish(self: Box<Self>, usage: Option<TokenUsage>) -> Option<Released>;
    /// Give back what the chosen alternative holds.
    fn release_choice(&mut self);
    /// Whether it is held in the shared (Redis) store.
    fn is_shared(&self) -> bool;
}

impl Ticket {
    /// A ticket that holds nothing (no limits applied).
    pub fn free() -> Ticket {
        Ticket {
            delay_ms: 0,
            quotas: Vec::new(),
            hold: None,
        }
    }

    /// Charge real usage in place of the reservations. `None`: no usage is known, so the
    /// reservations themselves are charged (a stream that broke off still used tokens).
    /// With a shared store the release is sent in the background; the receiver tells when
    /// it is done (the logging phase waits for it, so a client's next request on the same
    /// connection sees its own usage).
    pub fn finish(self, usage: Option<TokenUsage>) -> Option<Released> {
        self.hold.and_then(|h| h.finish(usage))
    }

    /// Give back what the chosen alternative holds, keeping the required group's part
    /// (failover: the request leaves that deployment but its consumer and route limits
    /// still hold, and must not count it again).
    pub fn release_choice(&mut self) {
        if let Some(h) = &mut self.hold {
            h.release_choice();
        }
    }

    /// Whether the ticket is held in the shared (Redis) store.
    pub fn is_shared(&self) -> bool {
        self.hold.as_ref().is_some_and(|h| h.is_shared())
    }
}
