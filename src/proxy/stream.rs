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
use crate::providers::api::{ChatEvent, EventTranslator};
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
    /// `typed`: a surface reads the chunks, so an OpenAI event is parsed here, once.
    fn handle(
        &mut self,
        event: Bytes,
        wants_usage: bool,
        typed: bool,
        call: &mut CallCtx,
    ) -> (Vec<ChatEvent>, bool) {
        let translated = match self {
            Dialect::OpenAi if typed => vec![typed_event(event)],
            Dialect::OpenAi => vec![ChatEvent::Raw(event)],
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
                return (vec![ChatEvent::Raw(event)], terminal);
            }
            Dialect::Translated(t) => {
                let data =
                    event_data(&event).and_then(|d| serde_json::from_slice::<Value>(&d).ok());
                let out = data.map(|d| t.event(&d)).unwrap_or_default();
                if t.ended() && !out.contains(&ChatEvent::Done) {
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
            let typed = surface.is_some();
            let (mut send, mut complete) = dialect.handle(event, wants_usage, typed, ctx);
            // Past the cap it was sent: ended as a length limit (chat dialects).
            if relayed::note(ctx, &send, req.choices) && !matches!(dialect, Dialect::Native(..)) {
                (send, complete) = (relayed::length_end(), true);
                ctx.error = Some("upstream_over_cap");
            }
            for e in send {
                match surface.as_mut() {
                    Some(s) => {
                        for e in surface_events(s.as_mut(), e) {
                            out.extend_from_slice(&e);
                        }
                    }
                    None => out.extend_from_slice(&e.to_sse()),
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
            answer::throttled_mid_stream(state, ctx);
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

fn count_error(state: &AppState, ctx: &RequestCtx, kind: UpstreamErrorKind) {
    let provider = ctx.provider.as_deref().unwrap_or("none");
    state
        .metrics
        .upstream_errors
        .with_label_values(&[provider, kind.label()])
        .inc();
}

/// An OpenAI stream event read once into its typed form (for a surface): a chunk object,
/// `[DONE]`, or as it came (a comment, or what does not parse).
fn typed_event(event: Bytes) -> ChatEvent {
    match event_data(&event) {
        Some(d) if d.starts_with(b"[DONE]") => ChatEvent::Done,
        Some(d) => match serde_json::from_slice::<Value>(&d) {
            Ok(v) => ChatEvent::Chunk(v),
            Err(_) => ChatEvent::Raw(event),
        },
        None => ChatEvent::Raw(event),
    }
}

/// A surface's events for one chat stream event.
fn surface_events(s: &mut dyn ChunkTranslator, event: ChatEvent) -> Vec<Bytes> {
    match event {
        ChatEvent::Chunk(v) => s.chunk(Some(&v)),
        ChatEvent::Done => s.chunk(None),
        ChatEvent::Error(body) => match serde_json::from_slice::<Value>(&body) {
            Ok(v) => s.chunk(Some(&v)),
            Err(_) => Vec::new(),
        },
        // Comments such as `: keep-alive`, or data that does not parse.
        ChatEvent::Raw(_) => Vec::new(),
    }
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Forward,
    Drop,
    Done,
}

fn inspect(event: &ChatEvent, client_wants_usage: bool, call: &mut CallCtx) -> Action {
    let raw = match event {
        ChatEvent::Raw(raw) => raw,
        ChatEvent::Chunk(v) => return inspect_chunk(v, client_wants_usage, call),
        ChatEvent::Error(_) => return Action::Forward,
        ChatEvent::Done => return Action::Done,
    };
    let Some(data) = event_data(raw) else {
        return Action::Forward; // comments such as `: keep-alive`
    };
    if data.starts_with(b"[DONE]") {
        return Action::Done;
    }
    if !contains(&data, b"usage") || contains(&data, b"\"usage\":null") {
        return Action::Forward;
    }
    match serde_json::from_slice::<Value>(&data) {
        Ok(v) => inspect_chunk(&v, client_wants_usage, call),
        Err(_) => Action::Forward,
    }
}

/// A chunk object's usage, counted; the usage-only chunk is dropped unless asked for.
fn inspect_chunk(v: &Value, client_wants_usage: bool, call: &mut CallCtx) -> Action {
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
        let raw = |b: &'static [u8]| ChatEvent::Raw(Bytes::from_static(b));
        assert_eq!(inspect(&raw(chunk), false, &mut call), Action::Drop);
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
        assert_eq!(inspect(&raw(chunk), true, &mut call), Action::Forward);
        let normal =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n";
        assert_eq!(inspect(&raw(normal), false, &mut call), Action::Forward);
        assert_eq!(
            inspect(&raw(b"data: [DONE]\n\n"), false, &mut call),
            Action::Done
        );
        assert_eq!(
            inspect(&raw(b": ping\n\n"), false, &mut call),
            Action::Forward
        );
        // The same chunk typed (a translated stream): read without parsing.
        let typed = typed_event(Bytes::from_static(chunk));
        assert!(matches!(typed, ChatEvent::Chunk(_)));
        assert_eq!(inspect(&typed, false, &mut call), Action::Drop);
        assert_eq!(
            typed_event(Bytes::from_static(b"data: [DONE]\n\n")),
            ChatEvent::Done
        );
    }
}
