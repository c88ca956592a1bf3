//! Hard limits (`admission: hard`, the default for spend budgets): a request's completion
//! is capped at what the tightest hard token limit or budget can still pay for, that cap
//! goes upstream (`max_tokens`, `max_completion_tokens`, `max_output_tokens`: the field
//! the request's API names), and exactly it is reserved. A provider that honours the cap
//! cannot make the answer cost more than was reserved, so no client — one request asking
//! 100,000 tokens, or many concurrent ones asking none — can overspend a hard limit.
//!
//! Before admission ([`fit_windows`]) the cap fits each hard limit's whole window, and a
//! request larger than a whole `reserve` limit is refused (waiting cannot help: OpenAI's
//! "Request too large"). When a hard limit then rejects for lack of room
//! ([`shrink_to_room`]), the cap shrinks to what is left and admission asks again (a few
//! times, as concurrent requests may take the room meanwhile), down to one token per
//! choice. The arithmetic saturates; prices are per million tokens, so micro-dollars per
//! token.

use crate::errors::GatewayError;
use crate::limits::admission::{Budget, Check, Estimate, Rejection};
use crate::limits::rules::RuleKind;
use crate::runtime::Deployment;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many times admission asks again with a smaller cap.
pub const RETRIES: usize = 3;

/// What a request asks for: the tokens it is expected to use and its completion cap.
pub struct Ask {
    /// The prompt's estimate (tokens).
    pub prompt_tokens: u64,
    /// The completion budget as asked (all choices).
    pub completion_tokens: u64,
    /// The completion budget admission asks for: as asked, or lowered to fit a hard limit.
    completion: AtomicU64,
    /// Completions the upstream generates (`n`).
    pub choices: u64,
    /// A batch request: it yields to realtime traffic ([`crate::limits::priority`]) and
    /// never joins a realtime queue.
    pub batch: bool,
}

impl Ask {
    pub fn new(prompt_tokens: u64, completion_tokens: u64, choices: u64, batch: bool) -> Ask {
        Ask {
            prompt_tokens,
            completion_tokens,
            completion: completion_tokens.into(),
            choices,
            batch,
        }
    }

    /// What the request is expected to use if one of `open` serves it: its tokens, and
    /// their cost at the dearest of those deployments (completion tokens at the output or
    /// reasoning price, whichever is higher; a batch request with the batch discount), so
    /// a spend reservation covers whichever deployment answers. Deployments without a
    /// price add nothing (`check` warns when a spend limit covers one).
    pub fn estimate(&self, open: &[&Deployment]) -> Estimate {
        let cost = |p: &crate::config::schema::EffectivePrice| {
            let per_million = self.prompt_tokens as f64 * p.input
                + self.completion() as f64 * p.output.max(p.reasoning);
            let discount = if self.batch { p.batch_discount } else { 0.0 };
            // USD per million tokens × tokens = micro-dollars.
            per_million * (1.0 - discount)
        };
        let spend = open
            .iter()
            .filter_map(|d| d.price.as_ref().map(cost))
            .fold(0.0, f64::max);
        Estimate {
            tokens: self.prompt_tokens.saturating_add(self.completion()),
            spend_micro_usd: spend.ceil() as u64,
        }
    }

    /// The completion budget (all choices) admission asks for now.
    pub fn completion(&self) -> u64 {
        self.completion.load(Ordering::Relaxed)
    }

    /// The most completion tokens (all choices) that fit `left` of a check's units:
    /// tokens (prompt included), or micro-dollars at every one of `open`'s prices.
    pub fn completion_fitting(&self, kind: &RuleKind, left: u64, open: &[&Deployment]) -> u64 {
        match kind {
            RuleKind::Spend(_) => open
                .iter()
                .filter_map(|d| d.price.as_ref())
                .map(|p| {
                    let paid = 1.0 - if self.batch { p.batch_discount } else { 0.0 };
                    let prompt = self.prompt_tokens as f64 * p.input * paid;
                    let per_token = p.output.max(p.reasoning) * paid;
                    let room = left as f64 - prompt;
                    if room < 0.0 {
                        return 0;
                    }
                    if per_token <= 0.0 {
                        return u64::MAX;
                    }
                    // The most whose cost, as the estimate rounds it up, still fits.
                    let mut c = (room / per_token).floor() as u64;
                    while c > 0 && (prompt + c as f64 * per_token).ceil() > left as f64 {
                        c -= 1;
                    }
                    c
                })
                .min()
                .unwrap_or(u64::MAX),
            _ => left.saturating_sub(self.prompt_tokens),
        }
    }

    /// Lower the completion budget to `to`: whether it was lowered (it never goes below
    /// one token per choice).
    fn shrink(&self, to: u64) -> bool {
        let now = self.completion();
        if to >= now || to < self.choices {
            return false;
        }
        self.completion.store(to, Ordering::Relaxed);
        true
    }

    /// The cap per choice to send upstream.
    pub fn cap_per_choice(&self) -> u64 {
        self.completion() / self.choices.max(1)
    }
}

/// The token or spend limit of a check (`None`: another kind, or APISIX's `any_left`).
fn reserving(c: &Check<'_>) -> Option<(u64, Budget)> {
    match c.kind {
        RuleKind::Tokens(l, _) if !l.any_left => Some((l.limit, Budget::Tokens)),
        RuleKind::Spend(l) => Some((l.limit, Budget::Spend)),
        _ => None,
    }
}

fn amount(budget: Budget, units: u64) -> String {
    match budget {
        Budget::Spend => format!("${:.6}", units as f64 / 1e6),
        _ => units.to_string(),
    }
}

/// Before admission: fit the cap to each hard limit's whole window, and refuse a request
/// larger than a whole limit (a hard one even at one token per choice, a `reserve` one as
/// it is).
pub fn fit_windows(
    subject: &Ask,
    required: &[Check<'_>],
    open: &[&Deployment],
) -> Result<(), GatewayError> {
    let too_large = |c: &Check<'_>, limit: u64, budget: Budget, need: u64| {
        Err(GatewayError::RequestTooLarge {
            limit: c.rule.id.clone(),
            budget,
            allowed: amount(budget, limit),
            requested: amount(budget, need),
        })
    };
    if subject.completion() > 0 {
        for c in required.iter().filter(|c| c.rule.hard) {
            if let Some((limit, budget)) = reserving(c) {
                let fit = subject.completion_fitting(&c.kind, limit, open);
                if fit < subject.choices {
                    let need = subject.estimate(open).of(&c.kind);
                    return too_large(c, limit, budget, need);
                }
                subject.shrink(fit);
            }
        }
    }
    let estimate = subject.estimate(open);
    for c in required {
        if let Some((limit, budget)) = reserving(c) {
            let need = estimate.of(&c.kind);
            if need > limit {
                return too_large(c, limit, budget, need);
            }
        }
    }
    Ok(())
}

/// After a rejection: when a hard limit of `required` rejected for lack of room, lower the
/// cap to what it has left; whether admission should ask again.
pub fn shrink_to_room(
    subject: &Ask,
    required: &[Check<'_>],
    r: &Rejection,
    open: &[&Deployment],
) -> bool {
    let Some(c) = required.iter().find(|c| c.rule.hard && c.rule.id == r.rule) else {
        return false;
    };
    let Some((limit, budget)) = reserving(c) else {
        return false;
    };
    // The rejecting check's quota is the last of its budget and limit.
    let left = r
        .quotas
        .iter()
        .rev()
        .find(|q| q.budget == budget && q.limit == limit)
        .map(|q| q.remaining);
    match left {
        Some(left) if subject.completion() > 0 => {
            subject.shrink(subject.completion_fitting(&c.kind, left, open))
        }
        _ => false,
    }
}
