//! Stream phase: relay the upstream's answer to the client.
//!
//! - Event streams pass through event by event as they arrive, never buffered whole. The
//!   final usage chunk (always requested upstream) is read for accounting and dropped when
//!   the client did not ask for it. `data: [DONE]` ends the body. A stream that breaks off
//!   ends with an OpenAI error event, which the SDKs raise as `APIError`.
//! - Other answers are read whole (bounded), their usage counted, and upstream errors are
//!   normalised to the OpenAI error shape.

use super::responses::Prepared;
use super::sse::{contains, event_data, EventSplitter, EventTooLarge};
use super::{respond, CallCtx, RequestCtx, Usage};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::{anthropic_error_body, openai_error_body};
use crate::gateway::answer::{self, relayed, Answered};
use crate::providers::api::EventTranslator;
use crate::providers::Provider;
use crate::providers::{UpstreamErrorKind, UpstreamResponse};
use crate::state::AppState;
use crate::surfaces::{self, ChunkTranslator};
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
    let null = Value::Null;
    let echo = responses.map_or(&null, |p| &p.echo);
    // The provider speaks the client's surface itself (else it was sent the chat pivot,
    // and its chat answer goes back through the surface's translation).
    let direct = provider.serves(req.endpoint);
    let native = direct && matches!(req.endpoint, Endpoint::Messages | Endpoint::Responses);
    let surface = answer::surface_of(provider, req.endpoint);
    let model = ctx.model.as_deref().unwrap_or(&req.model).to_string();
    if resp.status == 200 && req.stream && resp.is_event_stream() {
        let dialect = if native {
            Dialect::Native(provider, None)
        } else {
            match provider.stream_translator(&model, unix_now()) {
                Some(t) => Dialect::Translated(t),
                None => Dialect::OpenAi,
            }
        };
        let input = req.prompt_estimate();
        let surface = surface.and_then(|e| surfaces::stream(e, echo, &model, input));
        let events = Events { dialect, surface };
        relay_events(state, session, ctx, req, resp, events, responses).await
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

/// How a stream's events are turned into the client's: the upstream's dialect, then the
/// client's surface when it is not chat.
struct Events {
    dialect: Dialect,
    surface: Option<Box<dyn ChunkTranslator>>,
}

/// What an event stream speaks, and how its events reach the client.
enum Dialect {
    /// OpenAI events, passed through (usage chunk dropped unless asked).
    OpenAi,
    /// The provider's events translated to OpenAI chunks.
    Translated(Box<dyn EventTranslator>),
    /// The provider's own events to a client of its API (`/v1/messages`,
    /// `/v1/responses`), passed through; the provider reads their usage, and a Responses
    /// stream's final object is kept.
    Native(&'static dyn Provider, Option<Value>),
}

impl Dialect {
    /// The events to send for one upstream event, and whether the stream is complete.
    fn handle(
        &mut self,
        event: Bytes,
        wants_usage: bool,
        call: &mut CallCtx,
    ) -> (Vec<Bytes>, bool) {
        let translated = match self {
            Dialect::OpenAi => vec![event],
            Dialect::Native(provider, last) => {
                let data =
                    event_data(&event).and_then(|d| serde_json::from_slice::<Value>(&d).ok());
                let kind = data.as_ref().and_then(|d| d["type"].as_str()).unwrap_or("");
                let terminal = matches!(
                    kind,
                    "message_stop"
                        | "error"
                        | "response.completed"
                        | "response.incomplete"
                        | "response.failed"
                );
                if let Some(d) = &data {
                    provider.stream_usage(d, call.usage.get_or_insert_with(Usage::default));
                    // Anthropic's usage objects, or a Responses stream's final one.
                    let raw = d.get("usage").or(d["message"].get("usage"));
                    if let Some(u) = raw.or(d["response"].get("usage")) {
                        call.note_usage_fields(u);
                    }
                    if terminal && d["response"].is_object() {
                        *last = Some(d["response"].clone());
                    }
                }
                return (vec![event], terminal);
            }
            Dialect::Translated(t) => {
                let data =
                    event_data(&event).and_then(|d| serde_json::from_slice::<Value>(&d).ok());
                let out = data.map(|d| t.event(&d)).unwrap_or_default();
                if t.ended() && !out.iter().any(|e| e.starts_with(b"data: [DONE]")) {
                    return (out, true); // an error event: the last thing sent
                }
                out
            }
        };
        let mut out = Vec::with_capacity(translated.len());
        let mut done = false;
        for e in translated {
            match inspect(&e, wants_usage, call) {
                Action::Forward => out.push(e),
                Action::Drop => {}
                Action::Done => {
                    out.push(e);
                    done = true;
                }
            }
        }
        (out, done)
    }

    /// The event that tells the client the upstream broke off.
    fn cut(&self, message: &str) -> Bytes {
        let body = match self {
            Dialect::Native(p, _) if p.serves(Endpoint::Messages) => {
                anthropic_error_body("api_error", message)
            }
            _ => openai_error_body(message, "server_error", None, None),
        };
        let prefix: &[u8] = match self {
            Dialect::Native(..) => b"event: error\ndata: ",
            _ => b"data: ",
        };
        Bytes::from([prefix, &body, b"\n\n"].concat())
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
    let null = Value::Null;
    let echo = responses.map_or(&null, |p| &p.echo);
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
    req: &AiRequest,
    mut resp: UpstreamResponse,
    events: Events,
    responses: Option<&Prepared>,
) {
    let Events {
        mut dialect,
        mut surface,
    } = events;
    ctx.status = 200;
    let mut h = respond::header(200, "text/event-stream", ctx);
    let _ = h.insert_header("cache-control", "no-cache");
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
            // A surface needs the usage chunk to report usage itself.
            let wants_usage = req.client_wants_usage || surface.is_some();
            let (mut send, mut complete) = dialect.handle(event, wants_usage, ctx);
            // Past the cap it was sent: ended as a length limit (chat dialects).
            if relayed::note(ctx, &send, req.choices) && !matches!(dialect, Dialect::Native(..)) {
                (send, complete) = (relayed::length_end(), true);
                ctx.error = Some("upstream_over_cap");
            }
            for e in send {
                match surface.as_mut() {
                    Some(s) => {
                        for e in surface_events(s.as_mut(), &e) {
                            out.extend_from_slice(&e);
                        }
                    }
                    None => out.extend_from_slice(&e),
                }
            }
            if complete || surface.as_ref().is_some_and(|s| s.ended()) {
                done = true;
                break;
            }
        }
        if done && cut.is_none() {
            // The Response is stored before the client reads the stream's last event.
            let object = match (&surface, &dialect) {
                (Some(s), _) => s.final_object(),
                (None, Dialect::Native(_, last)) => last.clone(),
                _ => None,
            };
            keep(state, ctx, responses, object).await;
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
    if let Dialect::Translated(t) = &dialect {
        if t.throttled() {
            throttled_mid_stream(state, ctx);
        }
    }
    if let Some(kind) = cut {
        count_error(state, ctx, kind);
        ctx.error = Some("stream_cut");
        let message = format!(
            "The upstream stream ended before it was complete ({}).",
            kind.label()
        );
        let event = match surface.as_mut() {
            Some(s) => Bytes::from(s.cut(&message).concat()),
            None => dialect.cut(&message),
        };
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

/// The provider ended the stream with its rate-limit error (the client got it as an error
/// event): the key is over its limits, as a 429 would say, so it cools down and the next
/// requests go to another deployment.
fn throttled_mid_stream(state: &AppState, ctx: &mut RequestCtx) {
    count_error(state, ctx, UpstreamErrorKind::Status429);
    ctx.error = Some("stream_throttled");
    let verdict = crate::gateway::upstream::classify(429, None);
    if let (
        Some(d),
        crate::gateway::upstream::Verdict::Failed {
            cooldown: Some((length, why)),
            ..
        },
    ) = (&ctx.deployment, verdict)
    {
        state.cooldowns.start(d, length, why);
    }
}

fn count_error(state: &AppState, ctx: &RequestCtx, kind: UpstreamErrorKind) {
    let provider = ctx.provider.as_deref().unwrap_or("none");
    state
        .metrics
        .upstream_errors
        .with_label_values(&[provider, kind.label()])
        .inc();
}

/// A surface's events for one OpenAI chunk event (its `data`, or `[DONE]`).
fn surface_events(s: &mut dyn ChunkTranslator, event: &[u8]) -> Vec<Bytes> {
    match event_data(event) {
        Some(d) if d.starts_with(b"[DONE]") => s.chunk(None),
        Some(d) => match serde_json::from_slice::<Value>(&d) {
            Ok(v) => s.chunk(Some(&v)),
            Err(_) => Vec::new(),
        },
        None => Vec::new(), // comments such as `: keep-alive`
    }
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Forward,
    Drop,
    Done,
}

fn inspect(event: &[u8], client_wants_usage: bool, call: &mut CallCtx) -> Action {
    let Some(data) = event_data(event) else {
        return Action::Forward; // comments such as `: keep-alive`
    };
    if data.starts_with(b"[DONE]") {
        return Action::Done;
    }
    if !contains(&data, b"usage") || contains(&data, b"\"usage\":null") {
        return Action::Forward;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&data) else {
        return Action::Forward;
    };
    if let Some(u) = v.get("usage").and_then(Usage::from_openai) {
        call.usage = Some(u);
        call.note_usage_fields(&v["usage"]);
        call.note_response_model(v["model"].as_str());
        if !client_wants_usage && v["choices"].as_array().is_some_and(|c| c.is_empty()) {
            return Action::Drop;
        }
    }
    Action::Forward
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_chunk_counted_and_dropped_unless_asked() {
        let chunk = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n";
        let mut call = CallCtx::new("t".into());
        assert_eq!(inspect(chunk, false, &mut call), Action::Drop);
        let usage = call.usage;
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                total_tokens: Some(7)
            })
        );
        assert_eq!(call.usage_fields.as_ref().unwrap()["total_tokens"], 7.0);
        assert_eq!(inspect(chunk, true, &mut call), Action::Forward);
        let normal =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n";
        assert_eq!(inspect(normal, false, &mut call), Action::Forward);
        assert_eq!(inspect(b"data: [DONE]\n\n", false, &mut call), Action::Done);
        assert_eq!(inspect(b": ping\n\n", false, &mut call), Action::Forward);
    }
}
