//! Anthropic's Messages API (`POST /v1/messages`) for models whose provider does not speak
//! it: the request becomes an OpenAI chat request (the pivot every provider serves), and
//! the chat answer, stream and errors come back in Anthropic's shape. The inverse of the
//! Anthropic provider's translations ([`crate::providers::anthropic`]); the mapping
//! follows `shared/reference/openai-wire.md` §5.1 read right to left.
//!
//! Losses: `top_k`, `thinking` and cache-control markers are dropped (chat has none);
//! `document` blocks are refused (400); server tools (`web_search_*`) are dropped.

mod request;

pub use request::to_chat;

use super::ChunkTranslator;
use crate::canonical::anthropic::{Block, Delta, Event, Message, StopDelta, Usage};
use crate::canonical::chunk::ChatChunk;
use crate::canonical::finish::Finish;
use crate::errors::anthropic_error_body;
use bytes::Bytes;
use serde_json::{json, Value};

/// `count_tokens`' estimate: the gateway's usual one token per four bytes of what the
/// model reads (system prompt, messages, tools), at least one.
pub fn count_tokens(body: &Value) -> u64 {
    let bytes: usize = ["system", "messages", "tools"]
        .iter()
        .filter(|k| !body[**k].is_null())
        .map(|k| body[*k].to_string().len())
        .sum();
    (bytes as u64).div_ceil(4).max(1)
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
fn stop_reason(finish: &str) -> &'static str {
    Finish::from_openai(finish).anthropic()
}

/// OpenAI usage → Anthropic usage (cached prompt tokens as cache reads, so that input +
/// cache reads is the prompt, as Anthropic counts).
fn usage(u: &Value) -> Usage {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
        .min(prompt);
    Usage {
        input_tokens: Some(prompt - cached),
        output_tokens: Some(u["completion_tokens"].as_u64().unwrap_or(0)),
        cache_creation_input_tokens: Some(0),
        cache_read_input_tokens: Some(cached),
    }
}

/// A message id for a chat completion id (`msg_` prefix, as the SDKs show).
fn message_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{:016x}", rand::random::<u64>()),
    }
}

/// Parsed tool-call arguments (an object; text that is not JSON is kept under `_raw`).
fn input_of(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(if arguments.is_empty() {
        "{}"
    } else {
        arguments
    }) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"_raw": arguments}),
    }
}

/// A chat string field (`""` when it is not a string).
fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A `chat.completion` → a Message for the public `model`.
pub fn from_chat<'a>(chat: &'a Value, model: &'a str) -> Message<'a> {
    let a = crate::canonical::chat::Answer::of(chat);
    let mut content = Vec::new();
    if let Some(t) = a.text {
        content.push(Block::Text { text: t.into() });
    }
    for call in &a.calls {
        content.push(Block::ToolUse {
            id: str_of(call.id).into(),
            name: str_of(call.name).into(),
            input: input_of(call.arguments.unwrap_or("{}")),
        });
    }
    let stop = stop_reason(a.finish_reason.unwrap_or("stop"));
    Message::assistant(
        message_id(a.id.as_str()),
        model,
        content,
        Some(stop),
        usage(a.usage),
    )
}

/// Anthropic's error type for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An OpenAI-shaped error body → Anthropic's shape, same status.
pub fn error_from_openai(status: u16, body: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned());
    anthropic_error_body(error_type(status), &message)
}

/// What block is open in the Anthropic stream being built.
#[derive(PartialEq)]
enum Open {
    None,
    Text,
    /// A tool-use block, for this chat tool-call index.
    Tool(u64),
}

/// OpenAI chunks → Anthropic's named events: `message_start` first, one content block per
/// text run or tool call (opened and closed in order), `message_delta` with the stop
/// reason and usage once the chat stream has ended, then `message_stop`.
pub struct ChunkStream {
    model: String,
    /// `message_start`'s `input_tokens`: the estimate admission made (the chat stream
    /// reports the real count only at its end, in `message_delta`).
    input_tokens: u64,
    started: bool,
    open: Open,
    /// Index of the next content block.
    next_block: u64,
    stop_reason: &'static str,
    usage: Value,
    ended: bool,
}

impl ChunkStream {
    pub fn new(model: &str, input_tokens: u64) -> ChunkStream {
        ChunkStream {
            model: model.to_string(),
            input_tokens,
            started: false,
            open: Open::None,
            next_block: 0,
            stop_reason: "end_turn",
            usage: Value::Null,
            ended: false,
        }
    }

    fn start(&mut self, chat_id: Option<&str>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = Usage {
            input_tokens: Some(self.input_tokens),
            output_tokens: Some(0),
            ..Usage::default()
        };
        let message = Message::assistant(message_id(chat_id), &self.model, vec![], None, usage);
        out.push(Event::MessageStart { message }.to_sse());
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open != Open::None {
            let index = self.next_block - 1;
            out.push(Event::ContentBlockStop { index }.to_sse());
            self.open = Open::None;
        }
    }

    fn open(&mut self, open: Open, content_block: Block<'_>, out: &mut Vec<Bytes>) {
        self.close(out);
        let index = self.next_block;
        out.push(
            Event::ContentBlockStart {
                index,
                content_block,
            }
            .to_sse(),
        );
        self.next_block += 1;
        self.open = open;
    }

    fn delta(&self, delta: Delta<'_>) -> Bytes {
        let index = self.next_block - 1;
        Event::ContentBlockDelta { index, delta }.to_sse()
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.start(None, out);
        self.close(out);
        let u = usage(&self.usage);
        let delta = StopDelta {
            stop_reason: Some(self.stop_reason.into()),
            stop_sequence: None,
        };
        let usage = Usage {
            cache_creation_input_tokens: None,
            ..u
        };
        out.push(Event::MessageDelta { delta, usage }.to_sse());
        out.push(Event::MessageStop.to_sse());
        self.ended = true;
    }
}

impl ChunkTranslator for ChunkStream {
    fn chunk(&mut self, data: Option<&ChatChunk>) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let Some(c) = data else {
            self.finish(&mut out); // `data: [DONE]`
            return out;
        };
        let c = crate::canonical::chat::Chunk::of(c);
        if let Some(e) = c.error {
            let message = e["message"].as_str().unwrap_or("upstream error");
            let etype = if e["type"] == "server_error" || e["type"].is_null() {
                "api_error"
            } else {
                "invalid_request_error"
            };
            out.push(Event::error(etype, message).to_sse());
            self.ended = true;
            return out;
        }
        self.start(c.id, &mut out);
        if let Some(u) = c.usage {
            self.usage = u.clone();
        }
        if !c.has_choice {
            return out;
        }
        if let Some(t) = c.text {
            if self.open != Open::Text {
                let block = Block::Text { text: "".into() };
                self.open(Open::Text, block, &mut out);
            }
            out.push(self.delta(Delta::TextDelta { text: t.into() }));
        }
        for call in &c.calls {
            if self.open != Open::Tool(call.index) {
                let block = Block::ToolUse {
                    id: call.id.unwrap_or_default().into(),
                    name: call.name.unwrap_or_default().into(),
                    input: json!({}),
                };
                self.open(Open::Tool(call.index), block, &mut out);
            }
            if let Some(a) = call.arguments {
                let partial_json = a.into();
                out.push(self.delta(Delta::InputJsonDelta { partial_json }));
            }
        }
        if let Some(f) = c.finish_reason {
            self.stop_reason = stop_reason(f);
        }
        out
    }

    fn cut(&mut self, message: &str) -> Vec<Bytes> {
        self.ended = true;
        vec![Event::error("api_error", message).to_sse()]
    }

    fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::AiRequest;
    use crate::errors::GatewayError;

    fn chat(body: Value) -> Result<Value, GatewayError> {
        let req = AiRequest::parse(
            crate::canonical::Endpoint::Messages,
            Bytes::from(body.to_string()),
        )?;
        Ok(serde_json::from_slice(&to_chat(&req)?).unwrap())
    }

    #[test]
    fn translates_messages_one_by_one() {
        let c = chat(json!({"model": "m", "max_tokens": 5, "system": "be brief",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1",
                    "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                    {"type": "text", "text": "and?"}]}]}))
        .unwrap();
        assert_eq!(c["max_tokens"], 5);
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1], json!({"role": "user", "content": "hi"}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], r#"{"a":1}"#);
        // The tool result comes right after the call, before the rest of the turn.
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "42"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "and?"}));
    }

    /// Claude Code's mid-conversation system messages (beta
    /// `mid-conversation-system-2026-04-07`) stay system messages at their position; any
    /// other role is refused in Anthropic's words, which clients' fallbacks look for.
    #[test]
    fn system_messages_in_the_conversation_keep_their_place() {
        let c = chat(json!({"model": "m", "max_tokens": 5, "system": "top",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": [{"type": "text", "text": "now be terse"}]},
                {"role": "user", "content": "go"}]}))
        .unwrap();
        let roles: Vec<&str> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "system", "user"]);
        assert_eq!(c["messages"][3]["content"], "now be terse");
        let e = chat(json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "tool", "content": "x"}]}))
        .unwrap_err()
        .to_string();
        assert!(e.contains("Unexpected role \"tool\""), "{e}");
        assert!(e.contains("input message role"), "{e}");
    }

    #[test]
    fn refuses_what_chat_cannot_carry() {
        let e = chat(json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "document"}]}]}));
        assert_eq!(e.unwrap_err().status(), 400);
        let e = chat(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        assert!(e.unwrap_err().to_string().contains("max_tokens"));
    }

    #[test]
    fn a_chat_stream_becomes_a_messages_stream() {
        let mut s = ChunkStream::new("claude-x", 42);
        let chunk = |delta: Value, finish: Option<&str>| json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        let mut out = Vec::new();
        for c in [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hi"}), None),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
            json!({"id": "chatcmpl-1", "choices": [],
                "usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}}),
        ] {
            out.extend(s.chunk(Some(&ChatChunk::of(&c))));
        }
        out.extend(s.chunk(None));
        assert!(s.ended());
        let ev = crate::surfaces::parse_events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        // The admission's estimate in message_start; the real counts in message_delta.
        assert_eq!(ev[0].1["message"]["usage"]["input_tokens"], 42);
        let delta = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta.1["usage"]["output_tokens"], 6);
        let starts: Vec<&Value> = ev
            .iter()
            .filter(|(n, _)| n == "content_block_start")
            .map(|(_, d)| &d["content_block"])
            .collect();
        assert_eq!(starts[0]["type"], "text");
        assert_eq!(starts[1]["type"], "tool_use");
        assert_eq!(starts[1]["name"], "f");
        // Every block opened is closed.
        let opened = names
            .iter()
            .filter(|n| **n == "content_block_start")
            .count();
        let closed = names.iter().filter(|n| **n == "content_block_stop").count();
        assert_eq!(opened, closed);
    }

    #[test]
    fn tool_choice_maps_to_chat_modes_and_a_named_function() {
        let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
        let sent = |choice: Value| {
            let body = json!({"model": "m", "max_tokens": 5, "tools": tools, "tool_choice": choice,
                "messages": [{"role": "user", "content": "hi"}]});
            chat(body).unwrap().get("tool_choice").cloned()
        };
        assert_eq!(sent(json!({"type": "auto"})), Some(json!("auto")));
        assert_eq!(sent(json!({"type": "any"})), Some(json!("required")));
        assert_eq!(sent(json!({"type": "none"})), Some(json!("none")));
        assert_eq!(
            sent(json!({"type": "tool", "name": "f"})),
            Some(json!({"type": "function", "function": {"name": "f"}}))
        );
        assert_eq!(sent(json!({"type": "later"})), None);
    }
}
