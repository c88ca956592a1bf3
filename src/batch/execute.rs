//! Carry out one batch request through the gateway's own routing and limits, exactly as a
//! realtime request of the batch's consumer would go (admission, limit-aware routing,
//! failover, provider translation), and turn the answer into a result line.

use super::backend::{new_id, Claimed};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use crate::gateway::admit::Subject;
use crate::gateway::answer;
use crate::gateway::CallCtx;
use crate::gateway::GatewayState;
use crate::limits::admission::TokenUsage;
use crate::surfaces::{Echo, NO_ECHO};
use bytes::Bytes;
use serde_json::{json, Value};

/// A limit whose headroom is due back within this long is waited for in the worker;
/// longer waits put the request back in the store until then.
const WAIT_HERE_MS: u64 = 2_000;

/// Largest answer body kept as a result.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What became of one attempt.
pub enum Outcome {
    /// A result line: an output line (`ok`) or an error line; tokens used.
    Done {
        ok: bool,
        line: Value,
        tokens: (u64, u64),
    },
    /// Try again after this long; `counts`: it used one of the attempts (a limit's wait
    /// does not).
    Retry { after_ms: u64, counts: bool },
}

/// The OpenAI endpoint of a batch's `endpoint` field.
pub fn endpoint(url: &str) -> Option<Endpoint> {
    match url {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/completions" => Some(Endpoint::Completions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/responses" => Some(Endpoint::Responses),
        _ => None,
    }
}

fn line(custom_id: &str, status: u16, request_id: &str, body: Value) -> Value {
    json!({"id": new_id("batch_req_"), "custom_id": custom_id,
           "response": {"status_code": status, "request_id": request_id, "body": body},
           "error": null})
}

fn backoff_ms(attempts: u32) -> u64 {
    (500u64 << attempts.min(6)).min(30_000)
}

/// Carry out one attempt of a batch request, traced as a request of its own when traces
/// are on (`gateway.batch` says so; a retried request gets a trace per attempt).
pub async fn execute(state: &GatewayState, c: &Claimed, max_attempts: u32) -> Outcome {
    let request_id = format!("req_{}", hex::encode(rand::random::<[u8; 16]>()));
    let mut ctx = CallCtx::new(request_id);
    ctx.batch = true;
    let tracer = state.tracer.load_full();
    ctx.trace = tracer.as_ref().map(|t| Box::new(t.begin(None)));
    let outcome = run(state, c, max_attempts, &mut ctx).await;
    if let Outcome::Done { ok: true, .. } = &outcome {
        state.history.record(&ctx.history_sample());
    }
    if let (Some(tracer), Some(trace)) = (tracer, ctx.trace.as_deref()) {
        ctx.status = match &outcome {
            Outcome::Done { line, .. } => {
                line["response"]["status_code"].as_u64().unwrap_or(0) as u16
            }
            Outcome::Retry { counts: false, .. } => 429,
            Outcome::Retry { counts: true, .. } => 503,
        };
        tracer.finish(trace, &ctx.trace_summary("POST", None, "http"));
    }
    outcome
}

/// The endpoint label of a batch request (as the proxy labels a realtime one).
fn label(ep: Endpoint) -> &'static str {
    match ep {
        Endpoint::ChatCompletions => "chat_completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Messages => "messages",
        Endpoint::Responses => "responses",
    }
}

async fn run(state: &GatewayState, c: &Claimed, max_attempts: u32, ctx: &mut CallCtx) -> Outcome {
    let rt = state.runtime.load_full();
    let request_id = ctx.request_id.clone();
    let fail = |e: &GatewayError| Outcome::Done {
        ok: false,
        line: line(
            &c.custom_id,
            e.status(),
            &request_id,
            serde_json::from_slice(&e.body()).unwrap_or(Value::Null),
        ),
        tokens: (0, 0),
    };
    let Some(ep) = endpoint(&c.endpoint) else {
        return fail(&GatewayError::bad_request(
            "unsupported batch endpoint",
            None,
        ));
    };
    ctx.endpoint = label(ep);
    ctx.consumer = c.consumer.as_deref().map(Into::into);
    let mut req = match AiRequest::parse(ep, Bytes::from(c.body.clone())) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Some(route) = rt
        .model(&req.model)
        .filter(|r| rt.consumer_may_use(c.consumer.as_deref(), &r.name))
    else {
        return fail(&GatewayError::ModelNotFound(req.model.clone()));
    };
    if let Some(Err(e)) = route
        .restriction
        .as_ref()
        .map(|r| r.check(c.consumer.as_deref()))
    {
        return fail(&e);
    }
    // A Responses line: no stored history in a batch; other providers get its chat form.
    let echo = if ep == Endpoint::Responses {
        let echo = match Echo::of(&req) {
            Ok(v) => v,
            Err(e) => return fail(&e),
        };
        for field in ["previous_response_id", "background", "conversation"] {
            if !echo.head[field].is_null() && echo.head[field] != json!(false) {
                return fail(&GatewayError::bad_request(
                    format!("'{field}' is not supported in batch requests."),
                    None,
                ));
            }
        }
        if let Err(e) = answer::pivot(route, &mut req) {
            return fail(&e);
        }
        echo
    } else {
        NO_ECHO.clone()
    };
    ctx.model = Some(route.name.clone());
    // A fresh context for another try after a wait (the trace goes on).
    let fresh = |ctx: &mut CallCtx| {
        let mut next = CallCtx::new(request_id.clone());
        next.consumer = ctx.consumer.clone();
        next.model = ctx.model.clone();
        next.endpoint = ctx.endpoint;
        next.batch = true;
        next.trace = ctx.trace.take();
        *ctx = next;
    };
    let subject = Subject::for_batch(ctx, &rt, &req);
    let last_try = c.attempts + 1 >= max_attempts;
    let waited_since = std::time::Instant::now();
    let called = loop {
        match crate::gateway::call(state, &rt, route, &req, ctx, &subject).await {
            // Headroom due back soon: wait for it here (the request keeps its worker).
            Err(GatewayError::RateLimited { retry_after_ms, .. })
                if retry_after_ms <= WAIT_HERE_MS
                    && waited_since.elapsed() < std::time::Duration::from_secs(10) =>
            {
                fresh(ctx);
                let jitter = rand::random::<u64>() % (retry_after_ms / 4 + 2);
                tokio::time::sleep(std::time::Duration::from_millis(retry_after_ms + jitter)).await;
            }
            other => break other,
        }
    };
    let (resp, d) = match called {
        Ok(r) => r,
        // Waiting for a limit is not a failed attempt.
        Err(GatewayError::RateLimited { retry_after_ms, .. }) => {
            return Outcome::Retry {
                after_ms: retry_after_ms,
                counts: false,
            }
        }
        Err(e) if e.status() >= 500 && !last_try => {
            return Outcome::Retry {
                after_ms: backoff_ms(c.attempts),
                counts: true,
            }
        }
        Err(e) => return fail(&e),
    };
    let (status, retry_after) = (resp.status, resp.retry_after.clone());
    let provider = d.provider.api;
    let mut body_reader = resp.body;
    let body = match body_reader.read_all(MAX_BODY).await {
        Ok(b) => b,
        Err(f) if !last_try => {
            let _ = f;
            return Outcome::Retry {
                after_ms: backoff_ms(c.attempts),
                counts: true,
            };
        }
        Err(f) => return fail(&GatewayError::UpstreamProtocol(f.kind.label().into())),
    };
    if (status == 429 || status >= 500) && !last_try {
        let after_ms = retry_after
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(backoff_ms(c.attempts), |s| (s * 1000.0) as u64);
        return Outcome::Retry {
            after_ms,
            counts: true,
        };
    }
    // The line gets what a client of its endpoint would (a surface's answer when the
    // deployment was sent the chat form); the usage is read onto `ctx` on the way.
    let answered = answer::whole(
        ctx,
        provider,
        answer::surface_of(provider, ep),
        &echo,
        (status, body),
        &route.name,
        super::backend::now() as u64,
    );
    let answer = match answered {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let status = answer.status;
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let usage = ctx.usage.filter(|_| status < 400).unwrap_or_default();
    let tokens = (usage.prompt_tokens, usage.completion_tokens);
    let charged = if status < 400 {
        ctx.charged_usage().unwrap_or_default()
    } else {
        TokenUsage::default()
    };
    for t in ctx.tickets.drain(..) {
        if let Some(done) = t.finish(Some(charged.clone())) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), done).await;
        }
    }
    let mut line = line(&c.custom_id, status, &request_id, body);
    // What the request cost (the batch discount applied), when its deployment has a price.
    if let Some(cost) = ctx.cost_usd().filter(|_| status < 400) {
        line["cost_usd"] = json!(cost);
        let consumer = ctx.consumer.as_deref().unwrap_or("none");
        let provider = ctx.provider.as_deref().unwrap_or("none");
        state
            .metrics
            .spend
            .with_label_values(&[&route.name, provider, consumer])
            .inc_by(cost);
    }
    Outcome::Done {
        ok: status < 400,
        line,
        tokens,
    }
}
