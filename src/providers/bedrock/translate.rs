//! Pure translations between OpenAI chat and Bedrock's Converse API
//! (`shared/reference/gemini-bedrock-vertex.md` §d.3–d.4).

use super::wire::{
    Block, ImageBlock, ImageBytes, InferenceConfig, InputSchema, JsonSchema, OutputConfig,
    RequestTail, Structure, TextBlock, TextFormat, Tool, ToolChoice, ToolConfig, ToolResult,
    ToolSpec, ToolUse,
};
use crate::canonical::chat::{for_each_turn, ChatHead, Choice, Turn};
use crate::canonical::finish::Finish;
use crate::canonical::parts::{self, Content, Image, Part};
use crate::canonical::write::{ArrayOut, Turns};
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use crate::providers::chat_wire::ChatUsage;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Bedrock's tool names: `[a-zA-Z0-9_-]{1,64}`.
fn tool_name(name: &str) -> Result<&str, GatewayError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(name)
    } else {
        Err(GatewayError::invalid(format!("tool name {name:?} is not valid for this model (letters, digits, _ and -, at most 64)"), "tools"))
    }
}

/// OpenAI content parts → Converse content blocks (images only as data URLs: Bedrock
/// fetches no URL; blank text is left out, as Converse refuses it).
fn blocks_of(content: &Value) -> Result<Vec<Block<'_>>, GatewayError> {
    let parts = match parts::content(content)? {
        Content::None => return Ok(Vec::new()),
        Content::Text(s) if s.trim().is_empty() => return Ok(Vec::new()),
        Content::Text(s) => return Ok(vec![Block::Text(s.into())]),
        Content::Parts(p) => p,
    };
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Text(Some(t)) if !t.trim().is_empty() => out.push(Block::Text(t.into())),
            Part::Text(_) => {}
            Part::Image(Image::Inline { media_type, data }) => {
                let format = match media_type {
                    "image/png" => "png",
                    "image/gif" => "gif",
                    "image/webp" => "webp",
                    _ => "jpeg",
                };
                let source = ImageBytes { bytes: data };
                out.push(Block::Image(ImageBlock { format, source }));
            }
            Part::Image(Image::Url(_)) => {
                return Err(GatewayError::invalid(
                    "images must be data: URLs for this model",
                    "messages",
                ))
            }
        }
    }
    Ok(out)
}

/// An OpenAI chat request → a Converse body (the model goes in the URL, not the body).
/// The messages are read and written one at a time, consecutive ones of one role merged
/// (Bedrock wants turns to alternate; consecutive tool results become one user message).
pub fn request(req: &AiRequest, default_max_tokens: u64) -> Result<Vec<u8>, GatewayError> {
    let head = ChatHead::read(req)?;
    head.one_choice()?;
    let mut system = Vec::new();
    let mut messages = Turns::new(ArrayOut::field(&Map::new(), "messages"), "content");
    let mut push = |role: &str, blocks: &[Block<'_>]| {
        if !blocks.is_empty() {
            messages.push(role, role, blocks);
        }
    };
    let mut history_has_tools = false;
    for_each_turn(req, |turn| {
        match turn {
            Turn::System(text) => system.push(text),
            Turn::User(content) => push("user", &blocks_of(&content)?),
            Turn::Assistant { content, calls } => {
                let mut blocks = blocks_of(&content)?;
                for c in calls {
                    history_has_tools = true;
                    let name = tool_name(&c.name)?.to_string();
                    blocks.push(Block::ToolUse(ToolUse {
                        input: c.input,
                        name,
                        tool_use_id: c.id,
                    }));
                }
                push("assistant", &blocks);
            }
            Turn::Tool { call_id, text } => {
                history_has_tools = true;
                let block = Block::ToolResult(ToolResult {
                    content: [TextBlock { text }],
                    tool_use_id: call_id,
                });
                push("user", &[block]);
            }
        }
        Ok(())
    })?;
    let number = |v: &Value| v.is_number().then(|| v.clone());
    let inference_config = InferenceConfig {
        max_tokens: head.completion_cap().unwrap_or(default_max_tokens),
        stop_sequences: head.stops(),
        temperature: number(&head.temperature),
        top_p: number(&head.top_p),
    };
    let mut tools = Vec::new();
    for f in head.functions() {
        let json = if f.parameters.is_object() {
            f.parameters
        } else {
            json!({"type": "object"})
        };
        tools.push(Tool::ToolSpec(ToolSpec {
            description: f.description,
            input_schema: InputSchema { json },
            name: tool_name(f.name.as_str().unwrap_or_default())?.to_string(),
        }));
    }
    // Bedrock has no "none": drop the tools, unless the history holds tool blocks (which
    // need a toolConfig), then the model may still call one.
    let choice = head.choice();
    let keep = !tools.is_empty() && (choice != Choice::None || history_has_tools);
    let tool_choice = match choice {
        Choice::Required => Some(ToolChoice::Any {}),
        Choice::Auto => Some(ToolChoice::Auto {}),
        Choice::Named(name) => Some(ToolChoice::Tool { name }),
        Choice::None | Choice::Unset => None,
    };
    let tool_config = keep.then_some(ToolConfig { tool_choice, tools });
    let format = &head.response_format;
    let schema = match format["type"].as_str() {
        Some("json_schema") => Some((
            format["json_schema"]["schema"].clone(),
            format["json_schema"]["name"].clone(),
        )),
        Some("json_object") => Some((
            json!({"type": "object", "additionalProperties": true}),
            json!("json"),
        )),
        _ => None,
    };
    let output_config = schema.map(|(schema, name)| OutputConfig {
        text_format: TextFormat {
            structure: Structure {
                json_schema: JsonSchema {
                    name,
                    schema: schema.to_string(),
                },
            },
            kind: "json_schema",
        },
    });
    let tail = RequestTail {
        inference_config,
        output_config,
        system: (!system.is_empty()).then(|| {
            [TextBlock {
                text: system.join("\n"),
            }]
        }),
        tool_config,
    };
    Ok(messages.finish_with(&tail))
}

/// Converse `stopReason` → OpenAI `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    Finish::from_converse(stop).openai()
}

/// Converse usage → OpenAI usage.
pub fn usage(u: &Value) -> ChatUsage {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let cached = n("cacheReadInputTokens");
    ChatUsage::new(
        n("inputTokens"),
        n("outputTokens"),
        cached,
        u["totalTokens"].as_u64(),
    )
}

/// A Bedrock error answer (`{"message"}`) → status and OpenAI error body.
pub fn error(status: u16, body: &[u8]) -> (u16, Bytes) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // The model timed out (408) or failed (424): the gateway's 504 and 502.
    let status = match status {
        408 => 504,
        424 => 502,
        s => s,
    };
    let a = crate::providers::api::error_answer(
        status,
        v["message"].as_str().or(v["Message"].as_str()),
        body,
    );
    (a.status, a.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;
    use bytes::Bytes;

    fn converse(body: Value) -> Result<Value, GatewayError> {
        let req = AiRequest::parse(Endpoint::ChatCompletions, Bytes::from(body.to_string()))?;
        request(&req, 1024).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_conversation_with_a_tool_round_trip() {
        let c = converse(json!({"model": "b", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "  ", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": "Thanks"}]}))
        .unwrap();
        assert_eq!(c["system"][0]["text"], "Be brief.");
        assert_eq!(
            c["inferenceConfig"]["maxTokens"], 1024,
            "the default cap is sent"
        );
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m[0]["content"][0]["text"], "Weather?");
        // Blank text is left out; empty arguments are an empty object.
        assert_eq!(
            m[1]["content"],
            json!([{"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {}}}])
        );
        // The tool result and the next user text join one user turn.
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["toolResult"]["toolUseId"], "c1");
        assert_eq!(m[2]["content"][1]["text"], "Thanks");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn what_converse_cannot_carry_is_refused() {
        let url_image = json!({"model": "b", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
        assert!(converse(url_image).is_err());
        let bad_name = json!({"model": "b", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "has space", "arguments": "{}"}}]}]});
        assert!(converse(bad_name).is_err());
        assert!(
            converse(json!({"model": "b", "messages": [{"role": "robot", "content": "x"}]}))
                .is_err()
        );
    }
}
