//! Upstream phase: one attempt on a deployment (its request built by its provider, sent,
//! authorised, timed) and the rules that judge its answer ([`classify`]: relay it, or fail
//! over on a connect error, timeout, 429 or 5xx). The walk over a route's deployments is
//! `super::failover`, entered through [`super::call`].

use super::CallCtx;
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use crate::gateway::{CooldownReason, GatewayState};
use crate::providers::api::{Outgoing, Target as ProviderTarget, Wire};
use crate::providers::http::{Header, HttpCall, Timeouts};
use crate::providers::signals::Signals;
use crate::providers::{
    DecodedBody, UpstreamBody, UpstreamErrorKind, UpstreamFailure, UpstreamResponse,
};
use crate::runtime::Runtime;
use crate::runtime::{Deployment, ModelRoute, Target};
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue};
use std::time::{Duration, Instant};

/// What a deployment's provider builds and signs its requests from.
fn target<'a>(rt: &Runtime, d: &'a Deployment, req: &'a AiRequest) -> ProviderTarget<'a> {
    ProviderTarget {
        model: upstream_model(d, req),
        api_key: d.api_key.as_ref().map(|k| k.expose()),
        api_version: d.provider.api_version.as_deref(),
        default_max_tokens: rt.config.routing.default_max_tokens,
        credentials: d.provider.credentials.as_ref(),
    }
}

/// The model a deployment asks its upstream for: its own, or on an AI route without one,
/// the request's.
pub fn upstream_model<'a>(d: &'a Deployment, req: &'a AiRequest) -> &'a str {
    if !d.client_model {
        return &d.model;
    }
    // A pattern's text around its `*` matched the name: those ends are char bounds.
    let m = &req.model;
    m.get(d.trim.0..m.len().saturating_sub(d.trim.1))
        .unwrap_or(m)
}

/// Build a deployment's request through its provider's mapping.
fn outgoing(rt: &Runtime, d: &Deployment, req: &AiRequest) -> Result<Outgoing, GatewayError> {
    d.provider.api.outgoing(&target(rt, d, req), req)
}

/// The request a deployment gets: the client's own when its provider serves the
/// endpoint, else the chat pivot of a surface request; `None` when it can serve neither.
pub fn request_for<'a>(d: &Deployment, req: &'a AiRequest) -> Option<&'a AiRequest> {
    req.for_provider(|e| d.provider.api.serves(e))
}

/// Carry out one deployment's request.
async fn attempt(
    state: &GatewayState,
    rt: &Runtime,
    d: &Deployment,
    req: &AiRequest,
    out: Outgoing,
    traceparent: Option<String>,
) -> Result<UpstreamResponse, UpstreamFailure> {
    match &d.provider.target {
        Target::InProcess(upstream) => Ok(upstream.call(req, upstream_model(d, req)).await),
        Target::Http { base, headers } => {
            let mut h: Vec<Header> = Vec::with_capacity(headers.len() + 6);
            h.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
            let accept = if req.stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            h.push((ACCEPT, HeaderValue::from_static(accept)));
            h.push((
                USER_AGENT,
                HeaderValue::from_static(concat!("ai-rate-limiter/", env!("CARGO_PKG_VERSION"))),
            ));
            h.extend(out.headers);
            for (name, value) in d.provider.api.default_headers() {
                if !headers.iter().any(|(k, _)| k == name) {
                    h.push((name.clone(), value.clone()));
                }
            }
            h.extend(headers.iter().cloned());
            // W3C trace context: the upstream's parent is this attempt's span.
            if let Some(tp) = traceparent.and_then(|tp| HeaderValue::try_from(tp).ok()) {
                let name = HeaderName::from_static("traceparent");
                h.retain(|(k, _)| *k != name);
                h.push((name, tp));
            }
            let path = [base.prefix.as_str(), &out.path].concat();
            let mut wire = Wire {
                authority: &base.authority,
                path: &path,
                headers: &mut h,
                body: &out.body,
            };
            let api = &d.provider.api;
            let target = target(rt, d, req);
            let mut scrubber = rt.scrubber.clone();
            // Only cloud credentials need work here (an API key is already in `out.headers`):
            // other requests pay no boxed future for it.
            let signed = target.credentials.is_some();
            if signed {
                api.authorize(&target, &mut wire, &state.http, &mut scrubber)
                    .await?;
            }
            let u = &rt.config.upstream;
            let mut resp = state
                .http
                .send(HttpCall {
                    base,
                    path: &path,
                    headers: h,
                    body: out.body,
                    timeouts: Timeouts {
                        connect: u.connect_timeout,
                        read: u.read_timeout,
                        idle: u.idle_timeout,
                    },
                    scrubber,
                })
                .await?;
            if signed && resp.status >= 400 {
                api.answered(&target, resp.status).await;
            }
            if resp.status < 300 {
                if let Some(decoder) = d.provider.api.body_decoder(resp.content_type.as_deref()) {
                    let inner = std::mem::replace(&mut resp.body, UpstreamBody::Full(None));
                    resp.body = UpstreamBody::Decoded(Box::new(DecodedBody {
                        inner,
                        decoder,
                        ready: Default::default(),
                    }));
                    resp.content_type = Some("text/event-stream".into());
                }
            }
            Ok(resp)
        }
    }
}

/// Largest error answer read to classify it.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// For a provider whose error answers carry their meaning in the body: read it (kept for
/// the relay) and ask the provider what status and retry delay to classify by.
pub(super) async fn error_verdict(
    d: &Deployment,
    resp: &mut UpstreamResponse,
) -> Option<(u16, Option<u64>)> {
    if resp.status < 400 || !d.provider.api.reads_error_bodies() {
        return None;
    }
    // A body that cannot be read is relayed empty (the error is normalised all the same).
    let body = resp.body.read_all(MAX_ERROR_BODY).await.unwrap_or_default();
    let verdict = d.provider.api.error_verdict(resp.status, &body);
    resp.body = UpstreamBody::Full(Some(body));
    verdict
}

/// Send `req` to the admitted deployment `d` (its options and the completion cap applied,
/// its provider's request built), traced and timed. `Err`: the request cannot be built
/// for it (the client's error); `Ok(Err)`: a failed attempt.
pub(super) async fn attempt_on(
    state: &GatewayState,
    rt: &Runtime,
    ctx: &mut CallCtx,
    route: &ModelRoute,
    d: &Deployment,
    req: &AiRequest,
) -> Result<Result<UpstreamResponse, UpstreamFailure>, GatewayError> {
    ctx.attempts += 1;
    ctx.provider = Some(d.provider.name.clone());
    ctx.deployment = Some(d.id.clone());
    ctx.price = d.price;
    let sent = Instant::now();
    let request = request_for(d, req).unwrap_or(req);
    // APISIX ai-proxy `options`: this deployment's fields over the client's.
    let with_options = match &d.options {
        Some(set) => Some(request.with_fields(set)?),
        None => None,
    };
    let request = with_options.as_ref().unwrap_or(request);
    let capped = ctx
        .completion_cap
        .map_or(Ok(None), |c| request.with_cap(c))?;
    let request = capped.as_ref().unwrap_or(request);
    let out = outgoing(rt, d, request)?;
    let traceparent = ctx.trace_attempt(d, request);
    let result = attempt(state, rt, d, request, out, traceparent).await;
    ctx.trace_attempt_ended(&result, req.stream);
    if let Ok(resp) = &result {
        let signals = d.provider.api.signals(&resp.ratelimit_headers);
        observe_signals(state, route, d, &signals);
        let ttfb = sent.elapsed();
        ctx.upstream_ttfb = Some(ttfb);
        state
            .metrics
            .ttfb
            .with_label_values(&[&*route.name, &*d.provider.name])
            .observe(ttfb.as_secs_f64());
    }
    Ok(result)
}

/// Take in what the provider says about the key: a cool-down when it has nothing left
/// (until its reset, at most 60 s), and its remaining headroom as metrics.
/// How long a deployment whose credentials the provider refused is left alone (a key fixed
/// by a reload comes back at once: cool-downs are per deployment id).
pub(super) const AUTH_COOLDOWN: Duration = Duration::from_secs(60);
/// How long a key out of credit (402) is left alone.
const NO_CREDIT_COOLDOWN: Duration = Duration::from_secs(60);

/// What an upstream answer means for the call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The client's answer, whatever its status (4xx are the client's errors).
    Relay,
    /// A failed attempt: the deployment is cooled down (if said) and the request fails
    /// over while the retry budget lasts; on the last attempt the answer is relayed,
    /// except a refused credential, which becomes 502 `provider_auth_failed`.
    Failed {
        kind: UpstreamErrorKind,
        cooldown: Option<(Duration, CooldownReason)>,
    },
}

/// Classify an upstream answer by its status (and `retry-after`): the retry and failover
/// rules of the call core, a pure function.
pub fn classify(status: u16, retry_after: Option<&str>) -> Verdict {
    let failed = |kind, cooldown| Verdict::Failed { kind, cooldown };
    match status {
        // The key is over the provider's limits: left alone for its retry-after (1 s when
        // it gives none, 60 s at most).
        429 => {
            let secs = retry_after
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(1.0)
                .min(60.0);
            failed(
                UpstreamErrorKind::Status429,
                Some((Duration::from_secs_f64(secs), CooldownReason::Limited)),
            )
        }
        // Out of credit (DeepSeek): another key may still have some.
        402 => failed(
            UpstreamErrorKind::NoCredit,
            Some((NO_CREDIT_COOLDOWN, CooldownReason::Limited)),
        ),
        401 | 403 => failed(
            UpstreamErrorKind::AuthRejected,
            Some((AUTH_COOLDOWN, CooldownReason::AuthRejected)),
        ),
        500..=599 => failed(UpstreamErrorKind::Status5xx, None),
        _ => Verdict::Relay,
    }
}

fn observe_signals(state: &GatewayState, route: &ModelRoute, d: &Deployment, s: &Signals) {
    if let Some(left) = s.exhausted_for {
        state.cooldowns.start(
            &d.id,
            left.min(Duration::from_secs(60)),
            CooldownReason::Limited,
        );
    }
    for (budget, v) in [
        ("requests", s.remaining_requests),
        ("tokens", s.remaining_tokens),
    ] {
        if let Some(v) = v {
            state
                .metrics
                .provider_remaining
                .with_label_values(&[&*d.provider.name, &*route.name, budget])
                .set(v);
        }
    }
}

pub(super) fn record(state: &GatewayState, d: &Deployment, kind: UpstreamErrorKind) {
    state
        .metrics
        .upstream_errors
        .with_label_values(&[&*d.provider.name, kind.label()])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cooldown(v: Verdict) -> Option<(Duration, CooldownReason)> {
        match v {
            Verdict::Failed { cooldown, .. } => cooldown,
            Verdict::Relay => None,
        }
    }

    #[test]
    fn client_errors_and_successes_are_relayed() {
        for s in [200, 201, 400, 404, 413, 422] {
            assert_eq!(classify(s, None), Verdict::Relay, "{s}");
        }
    }

    #[test]
    fn provider_limits_cool_the_key_for_its_retry_after_within_bounds() {
        let v = classify(429, Some("7"));
        assert!(matches!(
            v,
            Verdict::Failed {
                kind: UpstreamErrorKind::Status429,
                ..
            }
        ));
        assert_eq!(
            cooldown(v),
            Some((Duration::from_secs(7), CooldownReason::Limited))
        );
        assert_eq!(
            cooldown(classify(429, None)).unwrap().0,
            Duration::from_secs(1)
        );
        assert_eq!(
            cooldown(classify(429, Some("junk"))).unwrap().0,
            Duration::from_secs(1)
        );
        assert_eq!(
            cooldown(classify(429, Some("-3"))).unwrap().0,
            Duration::from_secs(1)
        );
        assert_eq!(
            cooldown(classify(429, Some("3600"))).unwrap().0,
            Duration::from_secs(60)
        );
        assert_eq!(
            cooldown(classify(429, Some("0.25"))).unwrap().0,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn credentials_credit_and_server_errors_fail_over() {
        assert_eq!(
            classify(401, None),
            Verdict::Failed {
                kind: UpstreamErrorKind::AuthRejected,
                cooldown: Some((AUTH_COOLDOWN, CooldownReason::AuthRejected))
            }
        );
        assert!(matches!(
            classify(403, None),
            Verdict::Failed {
                kind: UpstreamErrorKind::AuthRejected,
                ..
            }
        ));
        assert_eq!(
            classify(402, None),
            Verdict::Failed {
                kind: UpstreamErrorKind::NoCredit,
                cooldown: Some((NO_CREDIT_COOLDOWN, CooldownReason::Limited))
            }
        );
        for s in [500, 502, 503, 529] {
            assert_eq!(
                classify(s, Some("5")),
                Verdict::Failed {
                    kind: UpstreamErrorKind::Status5xx,
                    cooldown: None
                },
                "{s}"
            );
        }
    }
}
