//! Admit phase: one call into the limiter for the limits of the consumer and the model
//! route, and, per attempt, for the chosen deployment's provider-key limits. A deployment
//! over its limits is skipped (limit-aware routing); the request is rejected with a 429
//! only when the consumer or route limits say so, or when every deployment is at its
//! limits.

use super::body::AiRequest;
use super::RequestCtx;
use crate::config::runtime::{Deployment, ModelRoute};
use crate::config::Runtime;
use crate::errors::GatewayError;
use crate::limits::admission::{self, Check, Rejection, Ticket};
use crate::limits::key::KeyContext;
use crate::limits::rules::{RejectAnswer, Rule, RuleKind};
use crate::state::GatewayState;
use pingora::proxy::Session;

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

fn rejected(
    r: Rejection,
    limit: std::sync::Arc<str>,
    answer: Option<&RejectAnswer>,
) -> GatewayError {
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
fn observe(state: &GatewayState, checks: &[Check<'_>], result: &Result<Ticket, Rejection>) {
    let m = &state.metrics;
    match result {
        Ok(t) => {
            for c in checks {
                let delaying = matches!(c.rule.kind, RuleKind::Req(_) | RuleKind::Conn(_));
                let outcome = usize::from(delaying && t.delay_ms > 0); // admitted or delayed
                m.limit_decision(c.rule.kind_index(), c.rule.scope, outcome);
            }
            if t.delay_ms > 0 {
                m.limit_delay.observe(t.delay_ms as f64 / 1000.0);
            }
        }
        Err(r) => {
            if let Some(c) = checks.iter().find(|c| c.rule.id == r.rule) {
                m.limit_decision(c.rule.kind_index(), c.rule.scope, 2);
            }
        }
    }
}

fn hold(ctx: &mut RequestCtx, t: Ticket) {
    ctx.quotas.extend(t.quotas.iter().copied());
    ctx.tickets.push(t);
}

/// Consumer and route limits.
pub fn admit_route(
    state: &GatewayState,
    rt: &Runtime,
    ctx: &mut RequestCtx,
    route: &ModelRoute,
    subject: &Subject,
) -> Result<(), GatewayError> {
    let consumer_rules = ctx
        .consumer
        .as_deref()
        .map_or(&[][..], |c| rt.consumer_limits(c));
    if consumer_rules.is_empty() && route.limits.is_empty() {
        return Ok(());
    }
    let checks = subject.checks(consumer_rules.iter().chain(route.limits.iter()));
    let result = admission::admit(&state.limits, &checks, subject.estimate_tokens);
    observe(state, &checks, &result);
    match result {
        Ok(t) => {
            hold(ctx, t);
            Ok(())
        }
        Err(r) => {
            let limit = r.rule.clone();
            let answer = checks
                .iter()
                .find(|c| c.rule.id == r.rule)
                .map(|c| &c.rule.answer);
            Err(rejected(r, limit, answer))
        }
    }
}

/// A deployment's provider-key limits: `Ok` holds its ticket (if it has limits).
pub fn admit_deployment(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    d: &Deployment,
    subject: &Subject,
) -> Result<(), Rejection> {
    if d.limits.is_empty() {
        return Ok(());
    }
    let checks = subject.checks(d.limits.iter());
    let result = admission::admit(&state.limits, &checks, subject.estimate_tokens);
    observe(state, &checks, &result);
    result.map(|t| hold(ctx, t))
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
