//! Account phase, run from Pingora's `logging` hook on every outcome: request metrics,
//! token counters and the access log line. Nothing here can see a provider key.

use super::RequestCtx;
use crate::limits::admission::{Released, TokenUsage};
use crate::metrics::status_class;
use crate::state::AppState;
use pingora::proxy::Session;

/// Charge a complete answer's usage in place of its reservations and give back its slots
/// now, before the client has the answer's last byte: a client that sends its next
/// request as soon as this one ends, on any connection, finds them given back (the
/// account phase runs only after the last byte is written). Only for an answer whose usage
/// is known; otherwise the account phase decides what to charge.
pub async fn settle_answered(ctx: &mut RequestCtx) {
    if ctx.tickets.is_empty() {
        return;
    }
    let Some(usage) = ctx.charged_usage() else {
        return;
    };
    // Bounded, as in the account phase: a shared store that does not answer delays the
    // answer by at most this.
    for done in finish_tickets(ctx, Some(usage)) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), done).await;
    }
}

/// Finish every admission ticket the request holds, charging `usage` (`None`: each its
/// reservation); the releases a shared store is still applying.
fn finish_tickets(ctx: &mut RequestCtx, usage: Option<TokenUsage>) -> Vec<Released> {
    ctx.tickets
        .drain(..)
        .filter_map(|t| t.finish(usage.clone()))
        .collect()
}

/// Account for the request. Returns the releases still being applied by a shared limit
/// store, for the caller to wait on.
pub fn finish(
    state: &AppState,
    session: &mut Session,
    e: Option<&pingora::Error>,
    ctx: &mut RequestCtx,
) -> Vec<Released> {
    if ctx.status == 0 {
        ctx.status = session
            .response_written()
            .map(|h| h.status.as_u16())
            .or_else(|| {
                e.map(|e| match e.etype() {
                    pingora::ErrorType::HTTPStatus(s) => *s,
                    _ => 500,
                })
            })
            .unwrap_or(0);
    }
    ctx.settle_relayed();
    // Charge token usage in place of the reservations. Without usage, an answer that
    // started (or a client that left mid-stream) is charged its reservation; a request that
    // failed before any answer is charged nothing.
    // (Nothing left to charge when the answer was settled before its last byte.)
    let released = if ctx.tickets.is_empty() {
        Vec::new()
    } else {
        let usage = match ctx.charged_usage() {
            Some(u) => Some(u),
            None if matches!(ctx.status, 200 | 499) => None,
            None => Some(TokenUsage::default()),
        };
        finish_tickets(ctx, usage)
    };
    let model = ctx.model.as_deref().unwrap_or("none");
    let provider = ctx.provider.as_deref().unwrap_or("none");
    let elapsed = ctx.started.elapsed();
    let m = &state.metrics;
    m.requests
        .with_label_values(&[model, provider, ctx.endpoint, status_class(ctx.status)])
        .inc();
    m.duration
        .with_label_values(&[model, provider, ctx.endpoint])
        .observe(elapsed.as_secs_f64());
    let cost = ctx.cost_usd();
    if let Some(c) = cost {
        let consumer = ctx.consumer.as_deref().unwrap_or("none");
        m.spend
            .with_label_values(&[model, provider, consumer])
            .inc_by(c);
    }
    if let Some(u) = ctx.usage {
        m.tokens
            .with_label_values(&[model, provider, "prompt"])
            .inc_by(u.prompt_tokens);
        m.tokens
            .with_label_values(&[model, provider, "completion"])
            .inc_by(u.completion_tokens);
    }
    state.history.record(&ctx.history_sample());
    if let (Some(trace), Some(tracer)) = (ctx.trace.as_deref(), state.tracer.load().as_deref()) {
        let req = session.req_header();
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let scheme = if tls { "https" } else { "http" };
        let summary = ctx.trace_summary(req.method.as_str(), Some(req.uri.path()), scheme);
        tracer.finish(trace, &summary);
    }
    let access_log = ctx
        .runtime
        .as_ref()
        .is_none_or(|rt| rt.config.logging.access_log);
    if access_log {
        let req = session.req_header();
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            status = ctx.status,
            consumer = ctx.consumer.as_deref().unwrap_or("-"),
            model,
            provider,
            endpoint = ctx.endpoint,
            stream = ctx.stream,
            attempts = ctx.attempts,
            duration_ms = elapsed.as_millis() as u64,
            upstream_ttfb_ms = ctx.upstream_ttfb.map(|d| d.as_millis() as u64),
            prompt_tokens = ctx.usage.map(|u| u.prompt_tokens),
            completion_tokens = ctx.usage.map(|u| u.completion_tokens),
            cost_usd = cost,
            limit = ctx.limited.as_ref().map(|l| &*l.0),
            retry_after_ms = ctx.limited.as_ref().map(|l| l.1),
            error = ctx.error.or(e.map(|_| "proxy_error")),
            "request"
        );
    }
    released
}
