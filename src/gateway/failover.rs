//! The call core's loop over a route's deployments, in three steps that each fit on a
//! screen:
//!
//! 1. [`Failover::open`] — the deployments still to try, minus those cooling down (skipped
//!    without using the retry budget);
//! 2. [`Failover::admit`] — admission under every limit (consumer, route, provider key),
//!    with the fair queue: the first open deployment with headroom, in routing order;
//! 3. [`Failover::attempt`] — the upstream attempt and what its answer means: relay it,
//!    or count a failure, cool the deployment down and fail over while the budget lasts.
//!
//! What is left when the loop ends without an answer is turned into the client's error by
//! [`Failover::failure`].

use super::admit::{self, Refused, Subject};
use super::upstream::{self, classify, Verdict, AUTH_COOLDOWN};
use super::{fallback, CallCtx, CooldownReason, GatewayState};
use crate::canonical::AiRequest;
use crate::config::schema::FallbackConfig;
use crate::errors::GatewayError;
use crate::limits::admission::{Budget, Rejection};
use crate::providers::{UpstreamErrorKind, UpstreamFailure, UpstreamResponse};
use crate::runtime::{Deployment, ModelRoute, Runtime};
use std::time::{Duration, Instant};

/// Try the deployments of `route`; returns the response to relay and the deployment that
/// gave it. The limiter picks, in routing order, the first deployment with headroom
/// (deployments at their provider-key limits or cooling down are skipped without using
/// the retry budget; the budget counts failed attempts only).
pub async fn call<'r>(
    state: &GatewayState,
    rt: &Runtime,
    route: &'r ModelRoute,
    req: &AiRequest,
    ctx: &mut CallCtx,
    subject: &Subject,
) -> Result<(UpstreamResponse, &'r Deployment), GatewayError> {
    let mut f = Failover::new(rt, route, req)?;
    let mut waiting = None;
    while let Some(open) = f.open(state) {
        let d = match f.admit(state, rt, ctx, subject, open, &mut waiting).await {
            Admission::Admitted(d) => d,
            Admission::WaitedInQueue => continue,
            Admission::NoneLeft => break,
            Admission::Refused(e) => return Err(e),
        };
        match f.attempt(state, rt, ctx, d, req).await? {
            Attempted::Answer(resp) => return Ok((resp, d)),
            Attempted::FailOver => {}
            Attempted::GiveUp => break,
        }
    }
    Err(f.failure(ctx.attempts))
}

/// What admission gave.
enum Admission<'r> {
    Admitted(&'r Deployment),
    /// It waited its turn in a queue: look at the deployments again.
    WaitedInQueue,
    /// Every open deployment is at its limits (kept in [`Failover::limited`]).
    NoneLeft,
    /// The consumer's or the route's limits said no (or the limiter is unavailable).
    Refused(GatewayError),
}

/// What an attempt gave.
enum Attempted {
    /// The client's answer (a success, a client error, or the last failure).
    Answer(UpstreamResponse),
    FailOver,
    GiveUp,
}

/// The state of one call's walk over its deployments.
struct Failover<'r> {
    route: &'r ModelRoute,
    /// APISIX ai-proxy-multi's rules (priority, weight, its own retries, no cool-downs).
    fb: Option<&'r FallbackConfig>,
    candidates: Vec<&'r Deployment>,
    /// Index of the next candidate to consider.
    next: usize,
    retries: u32,
    failures: u32,
    /// The delay (ms) a limit-req rule asked for, already slept.
    slept: u64,
    last_failure: Option<UpstreamFailure>,
    /// The provider-key rejection that frees first.
    limited: Option<Rejection>,
    route_admitted: bool,
    /// Deployments skipped because their provider refused the gateway's credentials, and
    /// for other reasons.
    auth_cooled: usize,
    other_cooled: usize,
}

impl<'r> Failover<'r> {
    fn new(rt: &Runtime, route: &'r ModelRoute, req: &AiRequest) -> Result<Self, GatewayError> {
        let routing = &rt.config.routing;
        let fb = route.fallback.as_ref();
        let order: Vec<&Deployment> = match fb {
            Some(_) => route.fallback_order(),
            None => route.attempts(routing.strategy, u32::MAX).collect(),
        };
        let candidates: Vec<&Deployment> = order
            .into_iter()
            .filter(|d| upstream::request_for(d, req).is_some())
            .collect();
        if candidates.is_empty() {
            return Err(GatewayError::bad_request(
                format!(
                    "The model `{}` does not support /v1{}.",
                    route.name,
                    req.endpoint.path()
                ),
                Some("model"),
            ));
        }
        Ok(Failover {
            route,
            fb,
            candidates,
            next: 0,
            retries: fb.map_or(routing.retries, fallback::retry_budget),
            failures: 0,
            slept: 0,
            last_failure: None,
            limited: None,
            route_admitted: false,
            auth_cooled: 0,
            other_cooled: 0,
        })
    }

    /// Step 1: the deployments left to try that are not cooling down; `None` when there
    /// are none.
    fn open(&mut self, state: &GatewayState) -> Option<Vec<&'r Deployment>> {
        let mut open = Vec::with_capacity(self.candidates.len().saturating_sub(self.next));
        for i in self.next..self.candidates.len() {
            let d = self.candidates[i]; // a copied reference: `self` stays free to update
            match state
                .cooldowns
                .remaining(&d.id)
                .filter(|_| self.fb.is_none())
            {
                Some((left, why)) => {
                    if why == CooldownReason::AuthRejected {
                        self.auth_cooled += 1;
                    } else {
                        self.other_cooled += 1;
                    }
                    self.keep_best(Rejection {
                        rule: d.id.clone(),
                        budget: Budget::Requests,
                        retry_after_ms: left.as_millis() as u64 + 1,
                        quotas: Vec::new(),
                        alternative: None,
                    })
                }
                None => open.push(d),
            }
        }
        (!open.is_empty()).then_some(open)
    }

    /// Step 2: admit the request to one of `open` (the route's own limits once per call),
    /// waiting in a queue where a limit says so.
    async fn admit<'s>(
        &mut self,
        state: &'s GatewayState,
        rt: &Runtime,
        ctx: &mut CallCtx,
        subject: &Subject,
        mut open: Vec<&'r Deployment>,
        waiting: &mut Option<admit::Waiting<'s>>,
    ) -> Admission<'r> {
        if waiting.is_none() && !self.route_admitted && !subject.ask.batch {
            if let Some(q) = admit::queue_ahead(state, rt, ctx, self.route, subject) {
                if admit::wait(state, ctx, waiting, &q).await {
                    return Admission::WaitedInQueue;
                }
            }
        }
        // Without APISIX's rate-limit pre-check, only the picked deployment is admitted.
        if self.fb.is_some_and(|f| !fallback::skips_limited(f)) {
            open.truncate(1);
        }
        ctx.trace_admission_started();
        let with_route = !self.route_admitted;
        let result = admit::admit(state, rt, ctx, self.route, subject, &open, with_route).await;
        self.route_admitted |= matches!(result, Ok(_) | Err(Refused::AllLimited(..)));
        let refused = match result {
            Ok(j) => {
                let waited = waiting.take().map(|w| {
                    let waited = w.waited();
                    w.admitted();
                    waited
                });
                ctx.note_admitted(waited);
                let d = open[j];
                self.next = self
                    .candidates
                    .iter()
                    .position(|c| std::ptr::eq(*c, d))
                    .map_or(self.candidates.len(), |p| p + 1);
                return Admission::Admitted(d);
            }
            Err(refused) => refused,
        };
        if let Some(q) = refused.queue() {
            if admit::wait(state, ctx, waiting, q).await {
                return Admission::WaitedInQueue;
            }
        }
        ctx.trace_refused(&refused, waiting.as_ref().map(|w| w.waited()));
        match refused {
            Refused::Answer(e, _) => Admission::Refused(e),
            Refused::AllLimited(r, _) => {
                if self.fb.is_some_and(fallback::skips_limited) && self.candidates.len() > 1 {
                    return Admission::Refused(admit::all_servers_tried(self.route, r));
                }
                self.keep_best(r);
                Admission::NoneLeft
            }
        }
    }

    /// Step 3: send the request to `d` and judge its answer.
    async fn attempt(
        &mut self,
        state: &GatewayState,
        rt: &Runtime,
        ctx: &mut CallCtx,
        d: &'r Deployment,
        req: &AiRequest,
    ) -> Result<Attempted, GatewayError> {
        let delay = admit::delay_ms(ctx);
        if delay > self.slept {
            tokio::time::sleep(Duration::from_millis(delay - self.slept)).await;
            self.slept = delay;
        }
        let is_last = self.failures >= self.retries || self.next == self.candidates.len();
        let sent = Instant::now();
        let failure = match upstream::attempt_on(state, rt, ctx, self.route, d, req).await? {
            Ok(resp) => match self.judge(state, ctx, d, resp, sent, is_last).await? {
                Ok(answer) => return Ok(Attempted::Answer(answer)),
                Err(f) => f,
            },
            Err(f) => f,
        };
        // This deployment is no longer in use: give back its slot and reservation.
        if let Some(t) = ctx.tickets.last_mut() {
            t.release_choice();
        }
        upstream::record(state, d, failure.kind);
        tracing::warn!(
            request_id = %ctx.request_id,
            model = %self.route.name,
            provider = %d.provider.name,
            kind = failure.kind.label(),
            detail = %failure.detail,
            "upstream attempt failed{}",
            if is_last { "" } else { ", failing over" }
        );
        // APISIX retries a transport failure as the 504 / 500 its transport reports.
        let status = if failure.kind == UpstreamErrorKind::Timeout {
            504
        } else {
            500
        };
        let relay = self
            .fb
            .is_some_and(|f| fallback::step(f, status, sent.elapsed()) == fallback::Step::Relay);
        self.last_failure = Some(failure);
        self.failures += 1;
        Ok(if is_last || relay {
            Attempted::GiveUp
        } else {
            Attempted::FailOver
        })
    }

    /// What an answer means: `Ok` the client's answer, `Err` a failed attempt (the
    /// deployment cooled down when its status says so).
    async fn judge(
        &mut self,
        state: &GatewayState,
        ctx: &CallCtx,
        d: &Deployment,
        mut resp: UpstreamResponse,
        sent: Instant,
        is_last: bool,
    ) -> Result<Result<UpstreamResponse, UpstreamFailure>, GatewayError> {
        let (status, retry_after) = match upstream::error_verdict(d, &mut resp).await {
            Some((status, Some(secs))) => {
                // The client is told the provider's delay too.
                resp.retry_after = Some(secs.to_string());
                (status, resp.retry_after.clone())
            }
            Some((status, None)) => (status, resp.retry_after.clone()),
            None => (resp.status, resp.retry_after.clone()),
        };
        if let Some(f) = self.fb {
            match fallback::step(f, status, sent.elapsed()) {
                fallback::Step::Relay => return Ok(Ok(resp)),
                fallback::Step::Retry if is_last => {
                    let spent = self.failures >= self.retries;
                    resp.status = fallback::exhausted_status(status, spent);
                    return Ok(Ok(resp));
                }
                fallback::Step::Retry => {}
            }
        }
        let (kind, cooldown) = match classify(status, retry_after.as_deref()) {
            Verdict::Relay if self.fb.is_none() => return Ok(Ok(resp)),
            Verdict::Relay => (UpstreamErrorKind::Status5xx, None),
            Verdict::Failed { kind, cooldown } => (kind, cooldown.filter(|_| self.fb.is_none())),
        };
        if let Some((length, why)) = cooldown {
            state.cooldowns.start(&d.id, length, why);
        }
        if kind == UpstreamErrorKind::AuthRejected {
            // The operator's problem: the client never sees the provider's answer (it
            // would blame its own key).
            tracing::error!(
                request_id = %ctx.request_id,
                model = %self.route.name,
                provider = %d.provider.name,
                deployment = %d.id,
                status = resp.status,
                "the provider rejected the gateway's credentials for this deployment; it is left alone for {}s",
                AUTH_COOLDOWN.as_secs()
            );
        }
        if is_last {
            upstream::record(state, d, kind);
            if kind == UpstreamErrorKind::AuthRejected {
                return Err(GatewayError::ProviderAuthRejected(
                    self.route.name.to_string(),
                ));
            }
            return Ok(Ok(resp));
        }
        Ok(Err(UpstreamFailure::new(
            kind,
            format!("status {}", resp.status),
        )))
    }

    /// Keep the rejection that frees first.
    fn keep_best(&mut self, r: Rejection) {
        if self
            .limited
            .as_ref()
            .is_none_or(|b| r.retry_after_ms < b.retry_after_ms)
        {
            self.limited = Some(r);
        }
    }

    /// The client's error when no deployment gave an answer after `attempts` attempts.
    fn failure(self, attempts: u32) -> GatewayError {
        let name = || self.route.name.to_string();
        match (self.last_failure.map(|f| f.kind), self.limited) {
            (Some(UpstreamErrorKind::AuthRejected), _) => {
                GatewayError::ProviderAuthRejected(name())
            }
            (None, Some(_))
                if self.auth_cooled > 0 && self.other_cooled == 0 && !self.route_admitted =>
            {
                GatewayError::ProviderAuthRejected(name())
            }
            (Some(UpstreamErrorKind::Timeout), _) => GatewayError::UpstreamTimeout,
            (Some(kind), _) => GatewayError::UpstreamUnavailable(format!(
                "{attempts} attempt(s) failed, the last with {}",
                kind.label()
            )),
            (None, Some(r)) => admit::all_deployments_limited(self.route, r),
            (None, None) => GatewayError::NoDeployment(name()),
        }
    }
}
