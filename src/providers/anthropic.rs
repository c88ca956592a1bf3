//! Anthropic's Messages API behind the OpenAI chat API: pure translations, both ways.
//!
//! - [`request`]: an OpenAI chat request → a Messages request (system and developer
//!   messages hoisted into `system`, `max_tokens` filled, `stop` → `stop_sequences`,
//!   temperature clamped to 1, tools, tool calls and tool results, image parts).
//! - [`response`]: a Message → a `chat.completion` (text, tool calls, `finish_reason` from
//!   `stop_reason`, usage with cache tokens counted as prompt tokens).
//! - [`StreamTranslator`]: Anthropic's named events → `chat.completion.chunk` events, a
//!   final usage chunk and `data: [DONE]`; pings are dropped, an `error` event becomes an
//!   OpenAI error event.
//! - [`error`]: an Anthropic error answer → status and OpenAI error body (529 → 503).
//!
//! The mapping follows `shared/reference/openai-wire.md` §5.1.

use super::api::ChatEvent;
use super::chat_wire::ChatUsage;
use crate::canonical::anthropic::{Block, Delta, Event, Usage as AnthropicUsage};
use crate::canonical::chat::{for_each_turn, ChatHead, Choice, Turn};
use crate::canonical::chunk::{ChunkDelta, Stamp};
use crate::canonical::finish::Finish;
use crate::canonical::parts::{self, Content, Part};
use crate::canonical::write::{ArrayOut, Turns};
use crate::canonical::AiRequest;
use crate::errors::{openai_error_body, GatewayError};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// The `anthropic-version` header sent unless the provider's headers set another.
pub const API_VERSION: &str = "2023-06-01";

/// OpenAI content parts → Anthropic content blocks.
/// Texts are borrowed from the message: a prompt is never copied to be translated.
fn blocks_of(content: &Value) -> Result<Vec<Block<'_>>, GatewayError> {
    let text = |t| Block::Text {
        text: Cow::Borrowed(t),
    };
    Ok(match parts::content(content)? {
        Content::None => Vec::new(),
        Content::Text(s) => vec![text(s)],
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => text((*t).unwrap_or_default()),
                Part::Image(i) => i.anthropic_block(),
            })
            .collect(),
    })
}

/// What a translated Messages request names besides the translation: the `model` (the
/// Anthropic API), or `anthropic_version` (Vertex, which names the model in the path).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fixed<'a> {
    pub model: Option<&'a str>,
    pub anthropic_version: Option<&'a str>,
}

/// The fields of a translated Messages request after `messages`, in written order.
#[derive(Serialize)]
struct RequestTail<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    anthropic_version: Option<&'a str>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct Tool {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
    name: Value,
}

#[derive(Serialize)]
struct ToolChoice {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Value>,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl ToolChoice {
    fn of(kind: &'static str) -> ToolChoice {
        ToolChoice {
            disable_parallel_tool_use: false,
            name: None,
            kind,
        }
    }
}

/// Translate an OpenAI chat request into a Messages request: `fixed`'s fields (the
/// `model`, or Vertex's `anthropic_version`) and the translation. The messages are read
/// and written one at a time ([`for_each_turn`]), consecutive turns of one role (tool
/// results after tool results, a user turn after them) merged into one turn ([`Turns`]).
pub fn request(
    req: &AiRequest,
    fixed: Fixed<'_>,
    default_max_tokens: u64,
) -> Result<Vec<u8>, GatewayError> {
    let head = ChatHead::read(req)?;
    head.one_choice()?;
    let mut system = Vec::new();
    let mut messages = Turns::new(ArrayOut::field(&Map::new(), "messages"), "content");
    for_each_turn(req, |turn| {
        match turn {
            Turn::System(text) => system.push(text),
            Turn::User(content) => messages.push("user", "user", &blocks_of(&content)?),
            Turn::Assistant { content, calls } => {
                let mut blocks = blocks_of(&content)?;
                for c in calls {
                    blocks.push(Block::ToolUse {
                        id: Cow::Owned(c.id.as_str().unwrap_or_default().to_string()),
                        name: Cow::Owned(c.name),
                        input: c.input,
                    });
                }
                messages.push("assistant", "assistant", &blocks);
            }
            Turn::Tool { call_id, text } => {
                let block = Block::ToolResult {
                    tool_use_id: Cow::Borrowed(call_id.as_str().unwrap_or_default()),
                    content: Cow::Owned(text),
                };
                messages.push("user", "user", &[block]);
            }
        }
        Ok(())
    })?;
    let tools = head.tools.is_array().then(|| {
        head.functions()
            .into_iter()
            .map(|f| Tool {
                description: f.description,
                input_schema: if f.parameters.is_object() {
                    f.parameters
                } else {
                    json!({"type": "object"})
                },
                name: f.name,
            })
            .collect::<Vec<_>>()
    });
    let mut tool_choice = match head.choice() {
        Choice::Required => Some(ToolChoice::of("any")),
        Choice::None => Some(ToolChoice::of("none")),
        Choice::Auto => Some(ToolChoice::of("auto")),
        Choice::Named(name) => Some(ToolChoice {
            name: Some(name),
            ..ToolChoice::of("tool")
        }),
        Choice::Unset => None,
    };
    if head.serial_tools() && tools.is_some() {
        let c = tool_choice.get_or_insert_with(|| ToolChoice::of("auto"));
        c.disable_parallel_tool_use = true;
    }
    let tail = RequestTail {
        anthropic_version: fixed.anthropic_version,
        max_tokens: head.completion_cap().unwrap_or(default_max_tokens),
        metadata: head.end_user().map(|user_id| Metadata { user_id }),
        model: fixed.model,
        stop_sequences: head.stops(),
        stream: (head.stream == Value::Bool(true)).then_some(true),
        system: (!system.is_empty()).then(|| system.join("\n")),
        temperature: head.temperature.as_f64().map(|t| t.clamp(0.0, 1.0)),
        tool_choice,
        tools,
        top_p: head.top_p.as_f64(),
    };
    Ok(messages.finish_with(&tail))
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    Finish::from_anthropic(stop_reason).openai()
}

/// An Anthropic error body: `{"type":"error","error":{"type","message"}}`.
pub use crate::errors::anthropic_error_body as error_body;

/// Anthropic usage → OpenAI usage: cache reads and writes count as prompt tokens;
/// `output_tokens` (a stream's `message_delta` count) replaces the Message's.
pub(super) fn usage(u: &AnthropicUsage, output_tokens: Option<u64>) -> ChatUsage {
    let completion = output_tokens.unwrap_or(u.output());
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    ChatUsage::new(u.prompt(), completion, cached, None)
}

/// An Anthropic error answer → the status and OpenAI error body the client gets.
pub fn error(status: u16, body: &[u8]) -> (u16, Bytes) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // 529 (overloaded) is a 503 to OpenAI clients, which they retry.
    let status = if status == 529 { 503 } else { status };
    let a = super::api::error_answer(status, v["error"]["message"].as_str(), body);
    (a.status, a.body)
}

/// Turns Anthropic's event stream into OpenAI chunk events, one upstream event at a time.
pub struct StreamTranslator {
    stamp: Stamp,
    usage: AnthropicUsage,
    output_tokens: Option<u64>,
    /// Anthropic block index → OpenAI tool call index.
    tools: Vec<(u64, usize)>,
    /// The stream has ended (`message_stop` or `error`).
    pub ended: bool,
    /// It ended with a `rate_limit_error` event.
    pub throttled: bool,
}

impl StreamTranslator {
    pub fn new(model: &str, created: u64) -> StreamTranslator {
        StreamTranslator {
            stamp: Stamp::new(model, created),
            usage: AnthropicUsage::default(),
            output_tokens: None,
            tools: Vec::new(),
            ended: false,
            throttled: false,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish: Option<&'static str>) -> ChatEvent {
        ChatEvent::Chunk(self.stamp.chunk(delta, finish))
    }

    /// The OpenAI events for one upstream event's `data`.
    pub fn event(&mut self, data: &[u8]) -> Vec<ChatEvent> {
        match Event::read(data) {
            Event::MessageStart { message } => {
                self.stamp.id = Arc::from(message.id.as_deref().unwrap_or("msg"));
                self.usage = message.usage;
                vec![self.chunk(ChunkDelta::start(), None)]
            }
            Event::ContentBlockStart {
                index: block,
                content_block,
            } => match content_block {
                Block::ToolUse { id, name, .. } => {
                    let index = self.tools.len();
                    self.tools.push((block, index));
                    let call =
                        ChunkDelta::call(index as u64, Some(id.into()), name.into(), "".into());
                    vec![self.chunk(call, None)]
                }
                Block::Text { text } if !text.is_empty() => {
                    vec![self.chunk(ChunkDelta::text(text), None)]
                }
                _ => Vec::new(),
            },
            Event::ContentBlockDelta {
                index: block,
                delta,
            } => match delta {
                Delta::TextDelta { text } => vec![self.chunk(ChunkDelta::text(text), None)],
                Delta::InputJsonDelta { partial_json } => {
                    let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) else {
                        return Vec::new();
                    };
                    if partial_json.is_empty() {
                        return Vec::new();
                    }
                    vec![self.chunk(ChunkDelta::arguments(index as u64, partial_json), None)]
                }
                Delta::Other => Vec::new(), // thinking and signature deltas have no OpenAI equivalent
            },
            Event::MessageDelta { delta, usage } => {
                self.output_tokens = usage.output_tokens;
                let reason = finish_reason(delta.stop_reason.as_deref().unwrap_or(""));
                vec![self.chunk(ChunkDelta::default(), Some(reason))]
            }
            Event::MessageStop => {
                self.ended = true;
                let usage = usage(&self.usage, self.output_tokens);
                let u = usage.chunk(&self.stamp);
                vec![u, ChatEvent::Done]
            }
            Event::Error { error } => {
                self.ended = true;
                let kind = error.kind.as_deref();
                self.throttled = kind == Some("rate_limit_error");
                let etype = match kind {
                    Some("overloaded_error" | "api_error") | None => "server_error",
                    Some("rate_limit_error") => "requests",
                    Some(_) => "invalid_request_error",
                };
                let message = error.message.as_deref().unwrap_or("upstream error");
                vec![ChatEvent::Error(openai_error_body(
                    message, etype, None, None,
                ))]
            }
            Event::ContentBlockStop { .. } | Event::Other => Vec::new(), // ping
        }
    }
}

impl super::api::EventTranslator for StreamTranslator {
    fn event(&mut self, data: &[u8]) -> Vec<ChatEvent> {
        StreamTranslator::event(self, data)
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn throttled(&self) -> bool {
        self.throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/anthropic/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// [`request`] of a chat body for `model`, as a tree.
    fn translate_request(body: &Value, model: &str, max: u64) -> Result<Value, GatewayError> {
        let req = AiRequest::parse(
            crate::canonical::Endpoint::ChatCompletions,
            Bytes::from(body.to_string()),
        )?;
        let fixed = Fixed {
            model: Some(model),
            anthropic_version: None,
        };
        Ok(serde_json::from_slice(&request(&req, fixed, max)?).unwrap())
    }

    #[test]
    fn request_mapping() {
        let body = json!({
            "model": "claude", "n": 1, "stop": "END", "temperature": 1.6, "top_p": 0.9,
            "user": "u-1", "stream": true, "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
                {"role": "user", "content": "Thanks"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required"});
        let out = translate_request(&body, "claude-sonnet-4-5", 4096).unwrap();
        assert_eq!(out["system"], "Be brief.\nUse tools.");
        assert_eq!(out["max_tokens"], 4096);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["metadata"]["user_id"], "u-1");
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            out["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        let m = out["messages"].as_array().unwrap();
        assert_eq!(
            m.len(),
            3,
            "user, assistant, user (tool results + thanks merged)"
        );
        assert_eq!(
            m[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBOR"})
        );
        assert_eq!(m[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(
            m[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"})
        );
        assert_eq!(m[2]["content"][2]["text"], "Thanks");
        assert!(translate_request(&json!({"model": "m", "n": 2, "messages": []}), "c", 1).is_err());
    }

    #[test]
    fn response_mapping() {
        let response = |text: &str| {
            use super::super::anthropic_answer::{into_chat, parse};
            serde_json::to_value(into_chat(parse(text.as_bytes()).unwrap(), "claude", 7)).unwrap()
        };
        let c = response(&fixture("message_text.json"));
        assert_eq!(
            c["choices"][0]["message"]["content"],
            "Hello! How can I help?"
        );
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            c["usage"],
            json!({"prompt_tokens": 20, "completion_tokens": 9,
            "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 5}})
        );
        let c = response(&fixture("message_tool_use.json"));
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        let call = &c["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"city": "Paris"})
        );
    }

    fn translate(name: &str) -> Vec<String> {
        let mut t = StreamTranslator::new("claude", 1);
        let mut out = Vec::new();
        for event in fixture(name).split("\n\n") {
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            for b in t.event(data.as_bytes()) {
                out.push(String::from_utf8(b.to_sse().to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn stream_translation() {
        let out = translate("stream_text.sse");
        let text: String = out
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ")?.trim()).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, "Hello!");
        assert!(out.iter().all(|e| !e.contains("ping")));
        let n = out.len();
        assert!(out[n - 3].contains("\"finish_reason\":\"stop\""));
        assert!(
            out[n - 2].contains("\"choices\":[]")
                && out[n - 2].contains("\"completion_tokens\":15")
        );
        assert_eq!(out[n - 1], "data: [DONE]\n\n");

        let tools = translate("stream_tool_use.sse");
        let args: String = tools
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ")?.trim()).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        assert!(tools
            .iter()
            .any(|e| e.contains("\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\"")));
        assert!(tools
            .iter()
            .any(|e| e.contains("\"finish_reason\":\"tool_calls\"")));

        let err = translate("stream_overloaded.sse");
        let last = err.last().unwrap();
        assert!(
            last.starts_with("data: {\"error\"") && last.contains("Overloaded"),
            "{last}"
        );
    }

    #[test]
    fn error_mapping() {
        let (s, b) = error(529, fixture("error_overloaded.json").as_bytes());
        assert_eq!(s, 503);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            (v["error"]["type"].as_str(), v["error"]["message"].as_str()),
            (Some("server_error"), Some("Overloaded"))
        );
        let (s, b) = error(429, fixture("error_rate_limit.json").as_bytes());
        assert_eq!(s, 429);
        assert!(String::from_utf8_lossy(&b).contains("rate_limit_exceeded"));
        let (s, _) = error(404, fixture("error_not_found.json").as_bytes());
        assert_eq!(s, 404);
    }
}
