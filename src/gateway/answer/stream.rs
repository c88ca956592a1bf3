//! A streamed answer, event by event, as the client gets it: the upstream's dialect (OpenAI
//! events passed through, another provider's translated to chat chunks, or a provider's
//! own events to a client of its API), then the client's surface when it is not chat
//! (Messages, Responses); the usage read on the way (the usage-only chunk dropped unless
//! the client asked for it), what was relayed counted, and a stream past the completion
//! cap it was sent ended there as a length limit. The proxy writes what it gives.

use super::relayed;
use super::sse::event_data;
use crate::canonical::chunk::ChatChunk;
use crate::canonical::{AiRequest, Endpoint, Usage};
use crate::errors::{anthropic_error_body, openai_error_body};
use crate::gateway::CallCtx;
use crate::providers::api::{ChatEvent, EventTranslator};
use crate::providers::Provider;
use crate::surfaces::Echo;
use crate::surfaces::{self, ChunkTranslator};
use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use serde_json::Value;
use std::sync::LazyLock;

/// One streamed answer's way to the client.
pub struct StreamRelay {
    dialect: Dialect,
    surface: Option<Box<dyn ChunkTranslator>>,
    /// The client asked for the usage chunk, or a surface needs it to report usage.
    wants_usage: bool,
    /// Completions the request asked for (the cap holds per choice).
    choices: u64,
}

impl StreamRelay {
    /// The relay of `req`'s stream from `provider`, for the public `model` (`echo`: a
    /// Responses request's echoed fields; `created`: the answer's timestamp).
    pub fn new(
        provider: &'static dyn Provider,
        req: &AiRequest,
        model: &str,
        echo: &Echo,
        created: u64,
    ) -> StreamRelay {
        let dialect = if super::native(provider, req.endpoint) {
            Dialect::Native(provider, None)
        } else {
            match provider.stream_translator(model, created) {
                Some(t) => Dialect::Translated(t),
                None => Dialect::OpenAi,
            }
        };
        let surface = super::surface_of(provider, req.endpoint)
            .and_then(|e| surfaces::stream(e, echo, model, req.prompt_estimate()));
        StreamRelay {
            wants_usage: req.client_wants_usage || surface.is_some(),
            dialect,
            surface,
            choices: req.choices,
        }
    }

    /// One upstream event: what the client gets for it is appended to `out`. Whether the
    /// stream is now complete.
    pub fn event(&mut self, ctx: &mut CallCtx, event: Bytes, out: &mut BytesMut) -> bool {
        let typed = self.surface.is_some();
        let (mut send, mut complete) = self.dialect.handle(event, self.wants_usage, typed, ctx);
        // Past the cap it was sent: ended as a length limit (chat dialects).
        if relayed::note(ctx, &send, self.choices) && !matches!(self.dialect, Dialect::Native(..)) {
            (send, complete) = (relayed::length_end(), true);
            ctx.error = Some("upstream_over_cap");
        }
        for e in send {
            match self.surface.as_mut() {
                Some(s) => {
                    for e in surface_events(s.as_mut(), e) {
                        out.extend_from_slice(&e);
                    }
                }
                None => out.extend_from_slice(&e.to_sse()),
            }
        }
        complete || self.surface.as_ref().is_some_and(|s| s.ended())
    }

    /// The object a complete stream built, to store (a Responses stream's Response).
    pub fn final_object(&self) -> Option<Value> {
        match (&self.surface, &self.dialect) {
            (Some(s), _) => s.final_object(),
            (None, Dialect::Native(_, last)) => last.clone(),
            _ => None,
        }
    }

    /// The event that tells the client the upstream broke off.
    pub fn cut(&mut self, message: &str) -> Bytes {
        match self.surface.as_mut() {
            Some(s) => Bytes::from(s.cut(message).concat()),
            None => self.dialect.cut(message),
        }
    }

    /// Whether the provider ended the stream with its rate-limit error.
    pub fn throttled(&self) -> bool {
        matches!(&self.dialect, Dialect::Translated(t) if t.throttled())
    }
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
                    if call.traced() {
                        // Anthropic's message id and stop reason; a Response's id and status.
                        let id = d["message"]["id"].as_str().or(d["response"]["id"].as_str());
                        let finish = d["delta"]["stop_reason"].as_str();
                        let finish =
                            finish.or(terminal.then(|| d["response"]["status"].as_str()).flatten());
                        call.note_response(id, finish);
                    }
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
                let out = event_data(&event).map(|d| t.event(&d)).unwrap_or_default();
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

/// An OpenAI stream event read once into its typed form (for a surface): a chunk object,
/// `[DONE]`, or as it came (a comment, or what does not parse).
fn typed_event(event: Bytes) -> ChatEvent {
    match event_data(&event) {
        Some(d) if d.starts_with(b"[DONE]") => ChatEvent::Done,
        Some(d) => match ChatChunk::read(&d) {
            Some(c) => ChatEvent::Chunk(c),
            None => ChatEvent::Raw(event),
        },
        None => ChatEvent::Raw(event),
    }
}

/// A surface's events for one chat stream event.
fn surface_events(s: &mut dyn ChunkTranslator, event: ChatEvent) -> Vec<Bytes> {
    match event {
        ChatEvent::Chunk(c) => s.chunk(Some(&c)),
        ChatEvent::Done => s.chunk(None),
        ChatEvent::Error(body) => match ChatChunk::read(&body) {
            Some(c) => s.chunk(Some(&c)),
            None => Vec::new(),
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

/// Searchers built once (building one costs more than searching a short event).
static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\":\""));
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"usage"));
static USAGE_NULL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":null"));

fn inspect(event: &ChatEvent, client_wants_usage: bool, call: &mut CallCtx) -> Action {
    let raw = match event {
        ChatEvent::Raw(raw) => raw,
        ChatEvent::Chunk(c) => return inspect_chunk(c, client_wants_usage, call),
        ChatEvent::Error(_) => return Action::Forward,
        ChatEvent::Done => return Action::Done,
    };
    let Some(data) = event_data(raw) else {
        return Action::Forward; // comments such as `: keep-alive`
    };
    if data.starts_with(b"[DONE]") {
        return Action::Done;
    }
    // A traced stream's finish reasons (read only then: other chunks pass unparsed).
    let finish = call.traced() && FINISH.find(&data).is_some();
    let usage = USAGE.find(&data).is_some() && USAGE_NULL.find(&data).is_none();
    if !finish && !usage {
        return Action::Forward;
    }
    match ChatChunk::read(&data) {
        Some(c) => inspect_chunk(&c, client_wants_usage, call),
        None => Action::Forward,
    }
}

/// A string field, `None` when empty.
fn named(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A chunk object's usage, counted; the usage-only chunk is dropped unless asked for.
fn inspect_chunk(c: &ChatChunk, client_wants_usage: bool, call: &mut CallCtx) -> Action {
    if call.traced() {
        for f in c.choices.iter().filter_map(|c| c.finish_reason.as_deref()) {
            call.note_response(None, Some(f));
        }
        call.note_response(named(&c.id), None);
    }
    if let Some(raw) = &c.usage {
        if let Some(u) = Usage::from_openai(raw) {
            call.usage = Some(u);
            call.note_usage_fields(raw);
            call.note_response_model(named(&c.model));
            if !client_wants_usage && c.choices.is_empty() {
                return Action::Drop;
            }
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
