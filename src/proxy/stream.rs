//! Stream phase: relay the upstream's answer to the client.
//!
//! - Event streams pass through event by event as they arrive, never buffered whole; what
//!   each event becomes for the client is the call core's (`gateway::answer::stream`):
//!   the final usage chunk (always requested upstream) is read for accounting and dropped
//!   when the client did not ask for it. `data: [DONE]` ends the body. A stream that breaks
//!   off ends with an OpenAI error event, which the SDKs raise as `APIError`.
//! - Other answers are read whole (bounded), their usage counted, and upstream errors are
//!   normalised to the OpenAI error shape.

use super::responses::Prepared;
use super::{respond, RequestCtx};
use crate::canonical::{AiRequest, Endpoint};
use crate::gateway::answer::sse::{EventSplitter, EventTooLarge};
use crate::gateway::answer::stream::StreamRelay;
use crate::gateway::answer::{self, Answered};
use crate::providers::Provider;
use crate::providers::{UpstreamErrorKind, UpstreamResponse};
use crate::state::AppState;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

/// Largest non-streaming upstream body the gateway will relay.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Relay `resp` from `provider` (its answers are translated when it speaks another API;
/// provider keys were masked as the bytes were read). `responses`: a Responses API call,
/// whose body the Response echoes and whose Response is stored — before the client has
/// the last of it, so a `retrieve` right after finds it.
pub async fn relay(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    req: &AiRequest,
    resp: UpstreamResponse,
    provider: &'static dyn Provider,
    responses: Option<&Prepared>,
) {
    let echo = responses.map_or(&crate::surfaces::NO_ECHO, |p| &p.echo);
    // The provider speaks the client's surface itself (else it was sent the chat pivot,
    // and its chat answer goes back through the surface's translation).
    let native = answer::native(provider, req.endpoint);
    let surface = answer::surface_of(provider, req.endpoint);
    let model = ctx.model.as_deref().unwrap_or(&req.model).to_string();
    if resp.status == 200 && req.stream && resp.is_event_stream() {
        let relay = StreamRelay::new(provider, req, &model, echo, unix_now());
        relay_events(state, session, ctx, resp, relay, responses).await
    } else if native {
        relay_native(state, session, ctx, resp, provider, responses).await
    } else {
        relay_whole(state, session, ctx, resp, provider, surface, responses).await
    }
}

/// Store a Responses API call's Response (`store`, default true) before its answer ends.
async fn keep(state: &AppState, ctx: &RequestCtx, p: Option<&Prepared>, object: Option<Value>) {
    if let (Some(p), Some(o)) = (p, object) {
        super::responses::keep(state, ctx, p, o).await;
    }
}

/// A whole answer of the provider's own API to a client of that API (`/v1/messages` to
/// Anthropic, `/v1/responses` to OpenAI): passed through as sent (errors too; provider
/// keys were masked as the bytes were read), its usage counted. Returns a Response
/// object, for the store.
async fn relay_native(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut resp: UpstreamResponse,
    provider: &dyn Provider,
    responses: Option<&Prepared>,
) {
    let Some(body) = read_whole(state, session, ctx, &mut resp).await else {
        return;
    };
    let mut object = None;
    if resp.status < 400 {
        if let Ok(m) = serde_json::from_slice::<Value>(&body) {
            ctx.usage = provider.usage(&m);
            ctx.note_usage_fields(&m["usage"]);
            object = (m["object"] == "response").then_some(m);
        }
    }
    keep(state, ctx, responses, object).await;
    super::account::settle_answered(ctx).await;
    let mut h = respond::header(resp.status, "application/json", ctx);
    if let Some(r) = &resp.retry_after {
        let _ = h.insert_header("retry-after", r.as_str());
    }
    respond::full(session, ctx, h, body).await;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn relay_whole(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut resp: UpstreamResponse,
    provider: &dyn Provider,
    surface: Option<Endpoint>,
    responses: Option<&Prepared>,
) {
    let echo = responses.map_or(&crate::surfaces::NO_ECHO, |p| &p.echo);
    let Some(body) = read_whole(state, session, ctx, &mut resp).await else {
        return;
    };
    let model = ctx.model.as_deref().unwrap_or("unknown").to_string();
    let answered = answer::whole(
        ctx,
        provider,
        surface,
        echo,
        (resp.status, body),
        &model,
        unix_now(),
    );
    let Answered {
        status,
        body,
        as_sent,
        object,
    } = match answered {
        Ok(a) => a,
        Err(e) => {
            count_error(state, ctx, UpstreamErrorKind::Protocol);
            respond::error(session, ctx, &e).await;
            return;
        }
    };
    let content_type = match resp.content_type {
        Some(c) if as_sent => c,
        _ => "application/json".to_string(),
    };
    keep(state, ctx, responses, object).await;
    super::account::settle_answered(ctx).await;
    let mut h = respond::header(status, &content_type, ctx);
    if matches!(status, 429 | 503 | 529) {
        if let Some(r) = &resp.retry_after {
            let _ = h.insert_header("retry-after", r.as_str());
        }
    }
    respond::full(session, ctx, h, body).await;
}

async fn relay_events(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut resp: UpstreamResponse,
    mut relay: StreamRelay,
    responses: Option<&Prepared>,
) {
    ctx.status = 200;
    let mut h = respond::header(200, "text/event-stream", ctx);
    let _ = h.insert_header("cache-control", "no-cache");
    respond::open_ended(session, &mut h);
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_err()
    {
        client_gone(ctx);
        return;
    }
    let max_event = ctx
        .runtime
        .as_ref()
        .map_or(4 << 20, |rt| rt.config.upstream.max_event_bytes);
    let mut events = EventSplitter::new(max_event);
    let mut done = false;
    let mut cut: Option<UpstreamErrorKind> = None;
    while !done {
        // A client that leaves ends the upstream call at once (its slots and reservations
        // are given back when the request is accounted), however silent the upstream is.
        let next = tokio::select! {
            biased;
            c = resp.body.next_chunk() => c,
            () = super::client_closed(session) => {
                client_gone(ctx);
                return;
            }
        };
        let chunk = match next {
            Ok(Some(c)) => c,
            Ok(None) => {
                cut = Some(UpstreamErrorKind::StreamCut);
                break;
            }
            Err(f) => {
                cut = Some(f.kind);
                break;
            }
        };
        events.push(&chunk);
        let mut out = BytesMut::with_capacity(chunk.len());
        loop {
            let event = match events.next_event() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(EventTooLarge) => {
                    tracing::warn!(
                        request_id = %ctx.request_id,
                        limit = max_event,
                        "upstream event over upstream.max_event_bytes: stream ended"
                    );
                    cut = Some(UpstreamErrorKind::Protocol);
                    break;
                }
            };
            if relay.event(ctx, event, &mut out) {
                done = true;
                break;
            }
        }
        if done && cut.is_none() {
            // The Response is stored, and the usage charged, before the client reads the
            // stream's last event.
            keep(state, ctx, responses, relay.final_object()).await;
            super::account::settle_answered(ctx).await;
        }
        // What was whole (before an oversized event too) reaches the client.
        if !out.is_empty()
            && session
                .write_response_body(Some(out.freeze()), false)
                .await
                .is_err()
        {
            client_gone(ctx);
            return;
        }
        if cut.is_some() {
            break;
        }
    }
    if relay.throttled() {
        answer::throttled_mid_stream(state, ctx);
    }
    if let Some(kind) = cut {
        count_error(state, ctx, kind);
        ctx.error = Some("stream_cut");
        let message = format!(
            "The upstream stream ended before it was complete ({}).",
            kind.label()
        );
        let event = relay.cut(&message);
        if session
            .write_response_body(Some(event), false)
            .await
            .is_err()
        {
            client_gone(ctx);
            return;
        }
    }
    if session.write_response_body(None, true).await.is_err() {
        client_gone(ctx);
    }
}

/// Read a whole upstream answer; on failure answer the client (502) and give `None`.
async fn read_whole(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut UpstreamResponse,
) -> Option<Bytes> {
    let read = tokio::select! {
        biased;
        r = resp.body.read_all(MAX_RESPONSE_BYTES) => r,
        () = super::client_closed(session) => {
            client_gone(ctx);
            return None;
        }
    };
    match read {
        Ok(b) => Some(b),
        Err(f) => {
            count_error(state, ctx, f.kind);
            let e = crate::errors::GatewayError::UpstreamProtocol(f.kind.label().into());
            respond::error(session, ctx, &e).await;
            None
        }
    }
}

pub(super) fn client_gone(ctx: &mut RequestCtx) {
    ctx.status = 499;
    ctx.error = Some("client_disconnected");
}

fn count_error(state: &AppState, ctx: &RequestCtx, kind: UpstreamErrorKind) {
    let provider = ctx.provider.as_deref().unwrap_or("none");
    state
        .metrics
        .upstream_errors
        .with_label_values(&[provider, kind.label()])
        .inc();
}
