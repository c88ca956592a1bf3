//! The OpenAI chat request — the pivot every translating provider reads — as typed values:
//! [`ChatHead`] (every field but `messages`) and the conversation as [`Turn`]s, read one
//! message at a time ([`for_each_turn`]). The Anthropic, Gemini and Bedrock translations
//! all read through here, so a field name is spelt once and the role dispatch, tool-call
//! arguments and tool results are handled the same way for all of them.

use super::chunk::ChatChunk;
use super::{content_text, AiRequest};
use crate::errors::GatewayError;
use serde::Deserialize;
use serde_json::Value;

/// The fields of a chat request but `messages` that the translations read. Loosely typed
/// values stay `Value` (a wrong type is ignored, as before), but each name is spelt once.
#[derive(Debug, Deserialize)]
pub struct ChatHead {
    #[serde(default)]
    pub n: Value,
    #[serde(default)]
    pub max_completion_tokens: Value,
    #[serde(default)]
    pub max_tokens: Value,
    #[serde(default)]
    pub stop: Value,
    #[serde(default)]
    pub temperature: Value,
    #[serde(default)]
    pub top_p: Value,
    #[serde(default)]
    pub seed: Value,
    #[serde(default)]
    pub presence_penalty: Value,
    #[serde(default)]
    pub frequency_penalty: Value,
    #[serde(default)]
    pub stream: Value,
    #[serde(default)]
    pub user: Value,
    #[serde(default)]
    pub safety_identifier: Value,
    #[serde(default)]
    pub tools: Value,
    #[serde(default)]
    pub tool_choice: Value,
    #[serde(default)]
    pub parallel_tool_calls: Value,
    #[serde(default)]
    pub response_format: Value,
    #[serde(default)]
    pub reasoning_effort: Value,
}

/// A function the client offers.
#[derive(Debug, Deserialize)]
pub struct Function {
    #[serde(default)]
    pub name: Value,
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Value,
}

#[derive(Deserialize)]
struct ToolDef {
    #[serde(rename = "type", default)]
    kind: Value,
    #[serde(default)]
    function: Option<Function>,
}

/// What `tool_choice` asks.
#[derive(Debug, PartialEq)]
pub enum Choice {
    /// Not sent (or not understood).
    Unset,
    Auto,
    None,
    Required,
    /// This function.
    Named(Value),
}

impl ChatHead {
    /// The head of `req`.
    pub fn read(req: &AiRequest) -> Result<ChatHead, GatewayError> {
        serde_json::from_value(Value::Object(req.head(&["messages"])?))
            .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), "messages"))
    }

    /// A 400 unless one completion is asked for (`n` absent or 1).
    pub fn one_choice(&self) -> Result<(), GatewayError> {
        if self.n.as_u64().is_some_and(|n| n != 1) {
            return Err(GatewayError::invalid("n must be 1 for this model", "n"));
        }
        Ok(())
    }

    /// The completion cap the client asked for.
    pub fn completion_cap(&self) -> Option<u64> {
        self.max_completion_tokens
            .as_u64()
            .or(self.max_tokens.as_u64())
    }

    /// The stop sequences (`stop` as a string or a list).
    pub fn stops(&self) -> Option<Value> {
        match &self.stop {
            Value::String(s) => Some(Value::Array(vec![Value::String(s.clone())])),
            a @ Value::Array(_) => Some(a.clone()),
            _ => None,
        }
    }

    /// Who the end user is (`safety_identifier`, else the older `user`).
    pub fn end_user(&self) -> Option<&str> {
        self.safety_identifier.as_str().or(self.user.as_str())
    }

    /// The function tools offered (other tool types have no translation).
    pub fn functions(&self) -> Vec<Function> {
        let Value::Array(tools) = &self.tools else {
            return Vec::new();
        };
        tools
            .iter()
            .filter_map(|t| serde_json::from_value::<ToolDef>(t.clone()).ok())
            .filter(|t| t.kind == "function")
            .filter_map(|t| t.function)
            .collect()
    }

    /// What `tool_choice` asks.
    pub fn choice(&self) -> Choice {
        match &self.tool_choice {
            Value::String(s) if s == "required" => Choice::Required,
            Value::String(s) if s == "none" => Choice::None,
            Value::String(_) => Choice::Auto,
            Value::Object(o) => match o.get("function").and_then(|f| f.get("name")) {
                Some(name) => Choice::Named(name.clone()),
                None => Choice::Unset,
            },
            _ => Choice::Unset,
        }
    }

    /// The client turned parallel tool calls off.
    pub fn serial_tools(&self) -> bool {
        self.parallel_tool_calls == Value::Bool(false)
    }
}

/// A tool call of an assistant message, its arguments parsed.
#[derive(Debug)]
pub struct Call {
    pub id: Value,
    pub name: String,
    pub input: Value,
}

/// One message of the conversation.
#[derive(Debug)]
pub enum Turn {
    /// A system or developer message, as text.
    System(String),
    /// A user message's content (a string or parts).
    User(Value),
    Assistant {
        content: Value,
        calls: Vec<Call>,
    },
    /// A tool's result for the call `call_id`, as text.
    Tool {
        call_id: Value,
        text: String,
    },
}

#[derive(Deserialize)]
struct Message {
    role: Option<String>,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    tool_call_id: Value,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    function: FunctionCall,
}

#[derive(Deserialize, Default)]
struct FunctionCall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

fn invalid(message: String) -> GatewayError {
    GatewayError::invalid(message, "messages")
}

/// Each message of `req` in turn, typed (never the whole conversation as one tree).
pub fn for_each_turn(
    req: &AiRequest,
    mut f: impl FnMut(Turn) -> Result<(), GatewayError>,
) -> Result<(), GatewayError> {
    let list = req
        .items("messages")
        .ok_or_else(|| invalid("messages must be an array".into()))?;
    for raw in list {
        let m: Message = serde_json::from_str(raw.get())
            .map_err(|e| invalid(format!("invalid message: {e}")))?;
        let turn = match m.role.as_deref() {
            Some("system" | "developer") => Turn::System(content_text(&m.content, "\n")),
            Some("user") => Turn::User(m.content),
            Some("assistant") => {
                let mut calls = Vec::new();
                for c in m.tool_calls.unwrap_or_default() {
                    let args = c.function.arguments.unwrap_or_default();
                    let input = serde_json::from_str(if args.is_empty() { "{}" } else { &args })
                        .map_err(|_| invalid("tool call arguments must be JSON".into()))?;
                    calls.push(Call {
                        id: c.id,
                        name: c.function.name.unwrap_or_default(),
                        input,
                    });
                }
                Turn::Assistant {
                    content: m.content,
                    calls,
                }
            }
            Some("tool") => Turn::Tool {
                call_id: m.tool_call_id,
                text: content_text(&m.content, "\n"),
            },
            other => return Err(invalid(format!("unknown message role {other:?}"))),
        };
        f(turn)?;
    }
    Ok(())
}

/// The first choice of a chat answer (the provider's, in the OpenAI dialect), as the
/// surfaces read it: every field the translations use, looked up here once. A field of
/// another type reads as absent, as providers differ in what they leave out.
#[derive(Debug)]
pub struct Answer<'a> {
    pub id: &'a Value,
    pub finish_reason: Option<&'a str>,
    /// The text, when there is any.
    pub text: Option<&'a str>,
    /// Reasoning text (`reasoning_content`), when there is any.
    pub reasoning: Option<&'a str>,
    pub calls: Vec<AnswerCall<'a>>,
    pub usage: &'a Value,
}

/// A tool call of an answer.
#[derive(Debug)]
pub struct AnswerCall<'a> {
    pub id: &'a Value,
    pub name: &'a Value,
    /// Its arguments as the model wrote them (JSON text).
    pub arguments: Option<&'a str>,
}

impl<'a> Answer<'a> {
    /// Read `chat` (a `chat.completion`).
    pub fn of(chat: &'a Value) -> Answer<'a> {
        let choice = &chat["choices"][0];
        let msg = &choice["message"];
        let nonempty = |v: &'a Value| v.as_str().filter(|s| !s.is_empty());
        Answer {
            id: &chat["id"],
            finish_reason: choice["finish_reason"].as_str(),
            text: nonempty(&msg["content"]),
            reasoning: nonempty(&msg["reasoning_content"]),
            calls: msg["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| AnswerCall {
                    id: &c["id"],
                    name: &c["function"]["name"],
                    arguments: c["function"]["arguments"].as_str(),
                })
                .collect(),
            usage: &chat["usage"],
        }
    }
}

/// One chunk of a chat stream, as the surfaces read it (the stream's counterpart of
/// [`Answer`]): its error, usage and first choice's delta, looked up here once.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// The chunk's id (`None` when empty).
    pub id: Option<&'a str>,
    /// An error event's object.
    pub error: Option<&'a Value>,
    pub usage: Option<&'a Value>,
    /// Whether it carries a choice (a usage-only chunk does not).
    pub has_choice: bool,
    pub text: Option<&'a str>,
    pub reasoning: Option<&'a str>,
    pub calls: Vec<ChunkCall<'a>>,
    pub finish_reason: Option<&'a str>,
}

/// A tool call's piece in a chunk.
#[derive(Debug)]
pub struct ChunkCall<'a> {
    pub index: u64,
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
    /// A piece of its arguments (none when empty).
    pub arguments: Option<&'a str>,
}

impl<'a> Chunk<'a> {
    /// Read `chunk` (a `chat.completion.chunk`, or an error event).
    pub fn of(chunk: &'a ChatChunk) -> Chunk<'a> {
        let choice = chunk.choices.first();
        let delta = choice.map(|c| &c.delta);
        let nonempty = |s: &'a Option<String>| s.as_deref().filter(|s| !s.is_empty());
        let calls = delta
            .map(|d| d.tool_calls.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| ChunkCall {
                index: c.index,
                id: c.id.as_deref(),
                name: c.function.name.as_deref(),
                arguments: nonempty(&c.function.arguments),
            })
            .collect();
        Chunk {
            id: Some(&*chunk.id).filter(|id| !id.is_empty()),
            error: chunk.error.as_ref(),
            usage: chunk.usage.as_ref(),
            has_choice: choice.is_some(),
            text: delta.and_then(|d| nonempty(&d.content)),
            reasoning: delta.and_then(|d| nonempty(&d.reasoning_content)),
            calls,
            finish_reason: choice.and_then(|c| c.finish_reason.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;
    use bytes::Bytes;
    use serde_json::json;

    fn req(body: Value) -> AiRequest {
        AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn turns_and_head_are_read_typed() {
        let r = req(json!({"model": "m", "n": 2, "stop": "X", "max_tokens": 9,
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web"}],
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "d"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}));
        let head = ChatHead::read(&r).unwrap();
        assert!(head.one_choice().is_err());
        assert_eq!(head.stops(), Some(json!(["X"])));
        assert_eq!(head.completion_cap(), Some(9));
        assert_eq!(head.choice(), Choice::Named(json!("f")));
        assert_eq!(head.functions().len(), 1);
        let mut turns = Vec::new();
        for_each_turn(&r, |t| {
            turns.push(t);
            Ok(())
        })
        .unwrap();
        assert!(matches!(&turns[0], Turn::System(s) if s == "d"));
        assert!(matches!(&turns[1], Turn::Assistant { calls, .. } if calls[0].input == json!({})));
        assert!(matches!(&turns[2], Turn::Tool { text, .. } if text == "ok"));
        let bad = req(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}));
        let e = for_each_turn(&bad, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("unknown message role"), "{e}");
        let bad_args = req(json!({"model": "m", "messages": [{"role": "assistant",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]}));
        assert!(for_each_turn(&bad_args, |_| Ok(())).is_err());
    }
}
