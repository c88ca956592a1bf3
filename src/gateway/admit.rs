//! Admit phase: one call into the limiter evaluates the consumer and model-route limits
//! (required) and picks the first deployment whose provider-key limits have headroom
//! (limit-aware routing) — one Redis round trip with the shared policies. A failover to
//! another deployment asks again for the remaining deployments only, so the consumer and
//! route limits count the request once.
//!
//! The policy is `limits`': which queue a refused request waits in, when a queue's head
//! asks again and when a newcomer joins instead of trying ([`crate::limits::queue`]), how
//! much room batch work leaves realtime traffic ([`crate::limits::priority`]). This module
//! applies it to one call and counts the decisions in the metrics.

use super::cap::Ask;
use super::CallCtx;
use crate::canonical::AiRequest;
use crate::config::key::KeyContext;
use crate::errors::GatewayError;
use crate::gateway::GatewayState;
use crate::limits::admission::{Admitted, Check, Denied, Rejection};
use crate::limits::priority::yield_to_realtime;
pub use crate::limits::queue::QueueTarget;
use crate::limits::queue::{deployments_key, join_instead_of_trying, Place};
use crate::limits::rules::{Kind, QueueSpec, RejectAnswer, Rule, RuleKind, Scope};
use crate::metrics::Outcome;
use crate::runtime::Runtime;
use crate::runtime::{Deployment, ModelRoute};
use std::sync::Arc;
use std::time::Instant;

/// What limit keys are resolved from, captured once per request.
pub struct Subject {
    consumer: Option<String>,
    remote_addr: Option<String>,
    model: String,
    headers: http::HeaderMap,
    /// What it asks for: its tokens, choices and completion cap ([`super::cap`]).
    pub ask: Ask,
}

/// Tokens a request is expected to use: its prompt estimate and its completion budget
/// (the cap per choice times the choices the upstream generates).
fn estimate(rt: &Runtime, req: &AiRequest) -> (u64, u64) {
    let completion = match req.endpoint {
        crate::canonical::Endpoint::Embeddings => 0,
        _ => req
            .max_tokens
            .unwrap_or(rt.config.routing.default_max_tokens)
            .saturating_mul(req.choices),
    };
    (req.prompt_estimate(), completion)
}

impl Subject {
    /// The subject of a client's request: its consumer, the client address and (when
    /// some limit key reads them: see [`Runtime::limits_use_headers`]) its headers.
    pub fn new(
        ctx: &CallCtx,
        rt: &Runtime,
        req: &AiRequest,
        remote_addr: Option<String>,
        headers: http::HeaderMap,
    ) -> Subject {
        let (prompt_tokens, completion_tokens) = estimate(rt, req);
        Subject {
            consumer: ctx.consumer.as_deref().map(str::to_string),
            remote_addr,
            model: req.model.clone(),
            headers,
            ask: Ask::new(prompt_tokens, completion_tokens, req.choices, false),
        }
    }

    /// The subject of a batch request: its consumer and model (no client address, no
    /// headers).
    pub fn for_batch(ctx: &CallCtx, rt: &Runtime, req: &AiRequest) -> Subject {
        let mut s = Subject::new(ctx, rt, req, None, http::HeaderMap::new());
        s.ask.batch = true;
        s
    }

    /// The checks of `rules` for this request; a templated number APISIX would refuse
    /// is a 500, as APISIX answers it.
    fn checks<'r>(
        &self,
        rules: impl Iterator<Item = &'r Rule>,
    ) -> Result<Vec<Check<'r>>, GatewayError> {
        let cx = KeyContext {
            consumer: self.consumer.as_deref(),
            remote_addr: self.remote_addr.as_deref(),
            model: &self.model,
            headers: &self.headers,
        };
        crate::limits::admission::checks(rules, &cx).map_err(unresolved)
    }
}

/// A rule whose templated numbers do not resolve (APISIX: 500).
pub fn unresolved(why: String) -> GatewayError {
    GatewayError::Internal(format!("failed to get rate limit rules: {why}"))
}

/// Why no deployment was admitted.
pub enum Refused {
    /// The consumer or route limits said no, or the limiter is unavailable: answer this.
    Answer(GatewayError, Option<QueueTarget>),
    /// Every deployment offered is at its provider-key limits.
    AllLimited(Rejection, Option<QueueTarget>),
}

impl Refused {
    pub fn queue(&self) -> Option<&QueueTarget> {
        match self {
            Refused::Answer(_, q) | Refused::AllLimited(_, q) => q.as_ref(),
        }
    }
}

pub fn rejected(r: Rejection, limit: Arc<str>, answer: Option<&RejectAnswer>) -> GatewayError {
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
    let count = |rule: &Arc<str>, outcome: Outcome| {
        // A queueing rule's rejection is counted by the queue (queued, then admitted or
        // rejected when the wait ends).
        if let Some(c) = checks.clone().find(|c| c.rule.id == *rule) {
            if outcome != Outcome::Rejected || c.rule.queue.is_none() {
                m.limit_decision(c.rule.algorithm(), c.rule.scope, outcome);
            }
        }
    };
    match result {
        Ok(a) => {
            for rule in &a.skipped {
                count(rule, Outcome::Rejected);
            }
            if a.ticket.delay_ms > 0 {
                m.limit_delay.observe(a.ticket.delay_ms as f64 / 1000.0);
            }
        }
        Err(Denied::Limited(r) | Denied::NoAlternative(r, _)) => count(&r.rule, Outcome::Rejected),
        Err(Denied::Unavailable(_)) => {}
    }
}

/// Count the admitted checks (the required group and the chosen alternative).
fn observe_admitted(state: &GatewayState, checks: &[Check<'_>], delay_ms: u64) {
    for c in checks {
        let delaying = matches!(c.kind, RuleKind::Req(_) | RuleKind::Conn(_));
        let outcome = if delaying && delay_ms > 0 {
            Outcome::Delayed
        } else {
            Outcome::Admitted
        };
        state
            .metrics
            .limit_decision(c.rule.algorithm(), c.rule.scope, outcome);
    }
}

/// Admit the request for one of `open` (deployments not cooling down, in routing order):
/// `with_route` adds the consumer and route limits (until they have admitted the request
/// once). `Ok` holds the ticket in `ctx` and gives the index of the chosen deployment;
/// `AllLimited` also holds the consumer and route part in `ctx`.
pub async fn admit(
    state: &GatewayState,
    rt: &Runtime,
    ctx: &mut CallCtx,
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
    let answer = |e| Refused::Answer(e, None);
    let mut required = subject
        .checks(consumer_rules.iter().chain(route_rules))
        .map_err(answer)?;
    let mut alternatives: Vec<Vec<Check<'_>>> = open
        .iter()
        .map(|d| subject.checks(d.limits.iter()))
        .collect::<Result<_, _>>()
        .map_err(answer)?;
    let estimate = subject.ask.estimate(open);
    if estimate.spend_micro_usd == 0 {
        // Nothing it can be served by has a price: it cannot spend, so no budget holds it
        // (an exhausted one included).
        required.retain(|c| !matches!(c.kind, RuleKind::Spend(_)));
        for alt in &mut alternatives {
            alt.retain(|c| !matches!(c.kind, RuleKind::Spend(_)));
        }
    }
    if subject.ask.batch {
        let deployments_queued = state.queues.depth(&deployments_key(&route.name)) > 0;
        yield_to_realtime(&mut required, &state.realtime, &state.queues, false);
        for alt in &mut alternatives {
            yield_to_realtime(alt, &state.realtime, &state.queues, deployments_queued);
        }
    }
    ctx.prompt_estimate = subject.ask.prompt_tokens;
    super::cap::fit_windows(&subject.ask, &required, open).map_err(answer)?;
    let mut tries = 0;
    let result = loop {
        let estimate = subject.ask.estimate(open);
        let result = state
            .limiter
            .admit(&required, &alternatives, estimate)
            .await;
        // A hard limit without room for the whole cap: ask again for what it has left.
        if let Err(Denied::Limited(r)) = &result {
            if tries < super::cap::RETRIES
                && super::cap::shrink_to_room(&subject.ask, &required, r, open)
            {
                tries += 1;
                continue;
            }
        }
        break result;
    };
    let hard = |choice: usize| {
        required
            .iter()
            .chain(alternatives.get(choice).into_iter().flatten())
            .any(|c| c.rule.hard)
    };
    if let Ok(a) = &result {
        if hard(a.choice.unwrap_or(0)) && subject.ask.completion() > 0 {
            let cap = subject.ask.cap_per_choice();
            ctx.completion_cap = Some(ctx.completion_cap.map_or(cap, |c| c.min(cap)));
        }
    }
    if subject.ask.batch {
        // Batch work has its own metrics; realtime decisions and rates stay realtime's.
        return batch_result(ctx, result).map_err(|e| Refused::Answer(e, None));
    }
    let all = required.iter().chain(alternatives.iter().flatten());
    observe(state, all, &result);
    let realtime = &state.realtime;
    match &result {
        Ok(a) => realtime.note(
            required
                .iter()
                .chain(
                    alternatives
                        .get(a.choice.unwrap_or(0))
                        .into_iter()
                        .flatten(),
                )
                .map(|c| &c.key),
        ),
        Err(_) => realtime.note(
            required
                .iter()
                .chain(alternatives.iter().flatten())
                .map(|c| &c.key),
        ),
    }
    match result {
        Ok(a) => {
            let choice = a.choice.unwrap_or(0);
            observe_admitted(state, &required, a.ticket.delay_ms);
            if let Some(alt) = alternatives.get(choice) {
                observe_admitted(state, alt, a.ticket.delay_ms);
            }
            ctx.quotas.extend(a.ticket.quotas.iter().cloned());
            ctx.tickets.push(a.ticket);
            Ok(choice)
        }
        Err(Denied::Unavailable(why)) => {
            Err(Refused::Answer(GatewayError::LimiterUnavailable(why), None))
        }
        Err(Denied::NoAlternative(r, held)) => {
            // The consumer and route limits admitted the request: it keeps their part
            // while it waits, and they do not count it again.
            if !required.is_empty() {
                observe_admitted(state, &required, held.delay_ms);
                ctx.tickets.push(*held);
            }
            // Waiting for any deployment of the model: one queue per model.
            let key = deployments_key(&route.name);
            let queue = alternatives
                .iter()
                .flatten()
                .find(|c| c.rule.id == r.rule)
                .and_then(|c| QueueTarget::of(c, key, r.retry_after_ms));
            Err(Refused::AllLimited(r, queue))
        }
        Err(Denied::Limited(r)) => {
            let check = required.iter().find(|c| c.rule.id == r.rule);
            let queue = check.and_then(|c| QueueTarget::of(c, c.key.clone(), r.retry_after_ms));
            let answer = check.map(|c| &c.rule.answer);
            let limit = r.rule.clone();
            Err(Refused::Answer(rejected(r, limit, answer), queue))
        }
    }
}

/// The outcome of a batch request's admission: admitted, or a 429 to wait out (nothing
/// held: a batch request that waits gives its consumer and route part back).
fn batch_result(
    ctx: &mut CallCtx,
    result: Result<Admitted, Denied>,
) -> Result<usize, GatewayError> {
    match result {
        Ok(a) => {
            let choice = a.choice.unwrap_or(0);
            ctx.tickets.push(a.ticket);
            Ok(choice)
        }
        Err(Denied::Unavailable(why)) => Err(GatewayError::LimiterUnavailable(why)),
        Err(Denied::Limited(r) | Denied::NoAlternative(r, _)) => {
            let limit = r.rule.clone();
            Err(rejected(r, limit, None))
        }
    }
}

/// A queue that already holds requests this one would wait behind (and has room): a
/// newcomer joins it instead of trying first, so headroom goes to the queue in order.
pub fn queue_ahead(
    state: &GatewayState,
    rt: &Runtime,
    ctx: &CallCtx,
    route: &ModelRoute,
    subject: &Subject,
) -> Option<QueueTarget> {
    let consumer_rules = ctx
        .consumer
        .as_deref()
        .map_or(&[][..], |c| rt.consumer_limits(c));
    let queueing = consumer_rules
        .iter()
        .chain(&route.limits)
        .filter(|r| r.queue.is_some());
    let waits =
        |key: &str, spec: Option<QueueSpec>| join_instead_of_trying(state.queues.depth(key), spec);
    // A rule that does not resolve is answered by the admission that follows.
    for c in subject.checks(queueing).unwrap_or_default() {
        if waits(&c.key, c.rule.queue) {
            return QueueTarget::of(&c, c.key.clone(), 0);
        }
    }
    let rule = route
        .deployments
        .iter()
        .flat_map(|d| &d.limits)
        .find(|r| r.queue.is_some())?;
    let model_key = deployments_key(&route.name);
    if waits(&model_key, rule.queue) {
        let c = subject.checks(std::iter::once(rule)).ok()?.pop()?;
        return QueueTarget::of(&c, model_key, 0);
    }
    None
}

/// A request waiting in a queue; leaving it (drop) hands the turn to the next.
pub struct Waiting<'s> {
    state: &'s GatewayState,
    place: Place,
    entered: Instant,
    deadline: Instant,
    scope: Scope,
    kind: Kind,
}

impl Waiting<'_> {
    /// How long it has waited so far.
    pub fn waited(&self) -> std::time::Duration {
        self.entered.elapsed()
    }

    /// The request was admitted after waiting.
    pub fn admitted(self) {
        self.done("admitted");
    }

    fn done(self, outcome: &str) {
        let scope = self.scope.label();
        self.state
            .metrics
            .queue_wait
            .with_label_values(&[scope, outcome])
            .observe(self.entered.elapsed().as_secs_f64());
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.state
            .metrics
            .queue_depth
            .with_label_values(&[self.scope.label()])
            .dec();
    }
}

/// Wait in `q` for another try: joins the queue on the first call, then waits for this
/// request's turn, or, at the head, until headroom is due back. `false` when the request
/// may wait no longer (queue full, or `max_wait` passed): answer the refusal then.
pub async fn wait<'s>(
    state: &'s GatewayState,
    ctx: &CallCtx,
    waiting: &mut Option<Waiting<'s>>,
    q: &QueueTarget,
) -> bool {
    let m = &state.metrics;
    if waiting.is_none() {
        let consumer = ctx.consumer.clone().unwrap_or_else(|| Arc::from("-"));
        let Some(place) = state.queues.join(&q.key, consumer, q.spec.max_queue) else {
            m.limit_decision(q.kind, q.scope, Outcome::Rejected); // the queue is full
            return false;
        };
        m.limit_decision(q.kind, q.scope, Outcome::Queued);
        m.queue_depth.with_label_values(&[q.scope.label()]).inc();
        let now = Instant::now();
        *waiting = Some(Waiting {
            state,
            place,
            entered: now,
            deadline: now + q.spec.max_wait,
            scope: q.scope,
            kind: q.kind,
        });
    }
    let Some(w) = waiting.as_ref() else {
        return false;
    };
    let now = Instant::now();
    if now >= w.deadline {
        if let Some(w) = waiting.take() {
            m.limit_decision(w.kind, w.scope, Outcome::Rejected);
            w.done("timeout");
        }
        return false;
    }
    let left = w.deadline - now;
    if w.place.is_head() {
        tokio::time::sleep(q.head_retry_in().min(left)).await;
    } else {
        let _ = tokio::time::timeout(left, w.place.turn()).await;
    }
    true
}

/// APISIX ai-proxy-multi's answer when its rate-limit pre-check found every instance
/// exhausted: 503 `all servers tried` (a single priority: `all upstream servers tried`).
pub fn all_servers_tried(route: &ModelRoute, best: Rejection) -> GatewayError {
    GatewayError::AllServersTried {
        message: if route.has_priorities() {
            "all servers tried"
        } else {
            "all upstream servers tried"
        },
        retry_after_ms: best.retry_after_ms,
        quotas: best.quotas,
    }
}

/// The 429 when every deployment of `route` was at its limits.
pub fn all_deployments_limited(route: &ModelRoute, best: Rejection) -> GatewayError {
    let limit = format!(
        "model {} (every deployment is at its provider limits)",
        route.name
    )
    .into();
    // The rejecting rule's APISIX answer (`rejected_code`, `rejected_msg`), if it has one.
    let answer = route
        .deployments
        .iter()
        .flat_map(|d| d.limits.iter())
        .find(|r| r.id == best.rule)
        .map(|r| r.answer.clone());
    rejected(best, limit, answer.as_ref())
}

/// The longest delay the held tickets ask for (limit-req / limit-conn).
pub fn delay_ms(ctx: &CallCtx) -> u64 {
    ctx.tickets.iter().map(|t| t.delay_ms).max().unwrap_or(0)
}
