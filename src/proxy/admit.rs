//! Admit phase: one call into the limiter evaluates the consumer and model-route limits
//! (required) and picks the first deployment whose provider-key limits have headroom
//! (limit-aware routing) — one Redis round trip with the shared policies. A failover to
//! another deployment asks again for the remaining deployments only, so the consumer and
//! route limits count the request once.

use super::body::AiRequest;
use super::RequestCtx;
use crate::config::runtime::{Deployment, ModelRoute};
use crate::config::Runtime;
use crate::errors::GatewayError;
use crate::limits::admission::{Admitted, Check, Rejection};
use crate::limits::key::KeyContext;
use crate::limits::limiter::Denied;
use crate::limits::rules::{RejectAnswer, Rule, RuleKind};
use crate::state::GatewayState;
use pingora::proxy::Session;
use std::sync::Arc;

/// What limit keys are resolved from, captured once per request.
pub struct Subject {
    consumer: Option<String>,
    remote_addr: Option<String>,
    model: String,
    headers: http::HeaderMap,
    /// Tokens this request is expected to use (prompt estimate + completion budget).
    pub estimate_tokens: u64,
}

impl Subject {
    pub fn new(session: &Session, ctx: &RequestCtx, rt: &Runtime, req: &AiRequest) -> Subject {
        let completion = match req.endpoint {
            super::body::Endpoint::Embeddings => 0,
            _ => req
                .max_tokens
                .unwrap_or(rt.config.routing.default_max_tokens),
        };
        Subject {
            consumer: ctx.consumer.as_deref().map(str::to_string),
            remote_addr: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            model: req.model.clone(),
            // Cloned only when some limit key reads headers.
            headers: if rt.limits_use_headers {
                session.req_header().headers.clone()
            } else {
                http::HeaderMap::new()
            },
            estimate_tokens: req.prompt_estimate() + completion,
        }
    }

    fn checks<'r>(&self, rules: impl Iterator<Item = &'r Rule>) -> Vec<Check<'r>> {
        let cx = KeyContext {
            consumer: self.consumer.as_deref(),
            remote_addr: self.remote_addr.as_deref(),
            model: &self.model,
            headers: &self.headers,
        };
        rules
            .map(|rule| Check {
                rule,
                key: rule.counter_key(&cx),
            })
            .collect()
    }
}

/// Why no deployment was admitted.
pub enum Refused {
    /// The consumer or route limits said no, or the limiter is unavailable: answer this.
    Answer(GatewayError),
    /// Every deployment offered is at its provider-key limits.
    AllLimited(Rejection),
}

fn rejected(r: Rejection, limit: Arc<str>, answer: Option<&RejectAnswer>) -> GatewayError {
    GatewayError::RateLimited {
        limit,
        status: answer.and_then(|a| a.code).unwrap_or(429),
        apisix_msg: answer.and_then(|a| a.msg.clone()),
        budget: r.budget,
        retry_after_ms: r.retry_after_ms,
        quotas: r.quotas,
    }
}

/// Count the decisions of one admission call.
fn observe<'a>(
    state: &GatewayState,
    checks: impl Iterator<Item = &'a Check<'a>> + Clone,
    result: &Result<Admitted, Denied>,
) {
    let m = &state.metrics;
    let count = |rule: &Arc<str>, outcome: usize| {
        if let Some(c) = checks.clone().find(|c| c.rule.id == *rule) {
            m.limit_decision(c.rule.kind_index(), c.rule.scope, outcome);
        }
    };
    match result {
        Ok(a) => {
            for rule in &a.skipped {
                count(rule, 2);
            }
            if a.ticket.delay_ms > 0 {
                m.limit_delay.observe(a.ticket.delay_ms as f64 / 1000.0);
            }
        }
        Err(Denied::Limited(r)) => count(&r.rule, 2),
        Err(Denied::Unavailable(_)) => {}
    }
}

/// Count the admitted checks (the required group and the chosen alternative).
fn observe_admitted(state: &GatewayState, checks: &[Check<'_>], delay_ms: u64) {
    for c in checks {
        let delaying = matches!(c.rule.kind, RuleKind::Req(_) | RuleKind::Conn(_));
        let outcome = usize::from(delaying && delay_ms > 0); // admitted or delayed
        state
            .metrics
            .limit_decision(c.rule.kind_index(), c.rule.scope, outcome);
    }
}

/// Admit the request for one of `open` (deployments not cooling down, in routing order):
/// `with_route` adds the consumer and route limits (the first call of a request). `Ok`
/// holds the ticket in `ctx` and gives the index of the chosen deployment.
pub async fn admit(
    state: &GatewayState,
    rt: &Runtime,
    ctx: &mut RequestCtx,
    route: &ModelRoute,
    subject: &Subject,
    open: &[&Deployment],
    with_route: bool,
) -> Result<usize, Refused> {
    let consumer_rules = match (&ctx.consumer, with_route) {
        (Some(c), true) => rt.consumer_limits(c),
        _ => &[],
    };
    let route_rules = if with_route { &route.limits[..] } else { &[] };
    let required = subject.checks(consumer_rules.iter().chain(route_rules));
    let alternatives: Vec<Vec<Check<'_>>> = open
        .iter()
        .map(|d| subject.checks(d.limits.iter()))
        .collect();
    let result = state
        .limiter
        .admit(&required, &alternatives, subject.estimate_tokens)
        .await;
    let all = required.iter().chain(alternatives.iter().flatten());
    observe(state, all, &result);
    match result {
        Ok(a) => {
            let choice = a.choice.unwrap_or(0);
            observe_admitted(state, &required, a.ticket.delay_ms);
            if let Some(alt) = alternatives.get(choice) {
                observe_admitted(state, alt, a.ticket.delay_ms);
            }
            ctx.quotas.extend(a.ticket.quotas.iter().copied());
            ctx.tickets.push(a.ticket);
            Ok(choice)
        }
        Err(Denied::Unavailable(why)) => {
            Err(Refused::Answer(GatewayError::LimiterUnavailable(why)))
        }
        Err(Denied::Limited(r)) if r.alternative.is_some() => Err(Refused::AllLimited(r)),
        Err(Denied::Limited(r)) => {
            let answer = required
                .iter()
                .find(|c| c.rule.id == r.rule)
                .map(|c| &c.rule.answer);
            let limit = r.rule.clone();
            Err(Refused::Answer(rejected(r, limit, answer)))
        }
    }
}

/// The 429 when every deployment of `route` was at its limits.
pub fn all_deployments_limited(route: &ModelRoute, best: Rejection) -> GatewayError {
    let limit = format!(
        "model {} (every deployment is at its provider limits)",
        route.name
    )
    .into();
    rejected(best, limit, None)
}

/// The longest delay the held tickets ask for (limit-req / limit-conn).
pub fn delay_ms(ctx: &RequestCtx) -> u64 {
    ctx.tickets.iter().map(|t| t.delay_ms).max().unwrap_or(0)
}
