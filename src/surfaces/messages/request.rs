//! A Messages request → the OpenAI chat request for the same public model, through typed
//! values of Anthropic's request ([`Head`], [`Message`], [`Block`], [`Tool`],
//! [`ToolChoice`]): a misspelt field is a compile error, not a silent `null`. The head is
//! read once; the messages one at a time ([`ArrayOut`]), so a large conversation is never
//! held as one tree.

use crate::canonical::chat_write::{
    ChatMessage, ChatRequestHead, ChatTool, ChatToolChoice, ContentPart, ToolCall, UserContent,
};
use crate::canonical::content_text;
use crate::canonical::parts::Image;
use crate::canonical::write::ArrayOut;
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A 400 about the request's `messages` (the field this surface's refusals name).
pub(super) fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, "messages")
}

/// Every field of the request but `messages` that the translation reads (the rest —
/// `thinking`, `context_management`, `output_config`, `top_k`, … — has no chat form).
#[derive(Deserialize)]
struct Head {
    model: Value,
    max_tokens: Option<Value>,
    #[serde(default)]
    system: Value,
    temperature: Option<Value>,
    top_p: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Vec<Value>>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
}

#[derive(Deserialize)]
struct Metadata {
    user_id: Option<Value>,
}

/// A tool definition: a client tool (no `type`, or `custom`) or a server tool.
#[derive(Deserialize)]
struct Tool {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Value,
    description: Option<String>,
    #[serde(default)]
    input_schema: Value,
}

#[derive(Deserialize)]
struct ToolChoice {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Value,
    #[serde(default)]
    disable_parallel_tool_use: bool,
}

/// One message of the conversation, its content as written (a string, or blocks each
/// read on its own).
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default)]
    role: String,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// A content block.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: Value,
    },
    Image {
        #[serde(default)]
        source: Value,
    },
    ToolUse {
        #[serde(default)]
        id: Value,
        #[serde(default)]
        name: Value,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        #[serde(default)]
        tool_use_id: Value,
        #[serde(default)]
        content: Value,
        #[serde(default)]
        is_error: bool,
    },
    /// Reasoning of an earlier turn: chat upstreams take none back.
    Thinking,
    RedactedThinking,
    #[serde(other)]
    Unsupported,
}

/// A block's `type`, for the error that refuses it.
fn kind_of(block: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_str::<Kind>(block.get()).ok()?.kind
}

/// One Anthropic message → OpenAI chat messages (tool results become `tool` messages
/// placed before the rest of the turn, as chat requires them right after the call). A
/// `system` message in the conversation (Claude Code's betas) stays a system message at
/// its position.
fn messages_of(m: Message<'_>, out: &mut Vec<ChatMessage>) -> Result<(), GatewayError> {
    let role = m.role.as_str();
    let raw = m.content.map_or("null", RawValue::get);
    if role == "system" {
        let content: Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let text = content_text(&content, "\n");
        if !text.is_empty() {
            out.push(ChatMessage::System { content: text });
        }
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        // Anthropic's own wording, which clients' fallbacks look for.
        return Err(bad(format!(
            "messages: Unexpected role {role:?}. The Messages API accepts a top-level \
             `system` parameter, not {role:?} as an input message role."
        )));
    }
    let blocks: Vec<&RawValue> = match raw.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
            out.push(match role {
                "user" => ChatMessage::User {
                    content: UserContent::Text(s.into()),
                },
                _ => ChatMessage::Assistant {
                    content: Some(s),
                    tool_calls: Vec::new(),
                },
            });
            return Ok(());
        }
        Some(b'[') => serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?,
        _ => return Err(bad("message content must be a string or an array")),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for raw in blocks {
        let block = serde_json::from_str::<Block>(raw.get()).unwrap_or(Block::Unsupported);
        match block {
            Block::Text { text } => parts.push(ContentPart::Text { text }),
            Block::Image { source } => parts.push(Image::from_anthropic(&source)?.openai_part()),
            Block::ToolUse { id, name, input } => {
                calls.push(ToolCall::function(id, name, input.to_string()))
            }
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let mut text = content_text(&content, "\n");
                if is_error && !text.starts_with("Error") {
                    text = format!("Error: {text}");
                }
                out.push(ChatMessage::Tool {
                    tool_call_id: tool_use_id,
                    content: text,
                });
            }
            Block::Thinking | Block::RedactedThinking => {}
            Block::Unsupported => {
                return Err(bad(format!(
                    "content block type {:?} is not supported for this model",
                    kind_of(raw)
                )))
            }
        }
    }
    if role == "assistant" {
        let text = parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => text.as_str(),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("");
        out.push(ChatMessage::Assistant {
            content: (!text.is_empty() || calls.is_empty()).then_some(text),
            tool_calls: calls,
        });
    } else if !parts.is_empty() {
        let content = match &parts[..] {
            [ContentPart::Text { text }] => UserContent::Text(text.clone()),
            _ => UserContent::Parts(parts),
        };
        out.push(ChatMessage::User { content });
    }
    Ok(())
}

fn choice(c: &ToolChoice) -> Option<ChatToolChoice> {
    let mode = |m: &str| ChatToolChoice::Mode(Value::from(m));
    Some(match c.kind.as_deref()? {
        "auto" => mode("auto"),
        "any" => mode("required"),
        "none" => mode("none"),
        "tool" => ChatToolChoice::function(c.name.clone()),
        _ => return None,
    })
}

/// A Messages request → the OpenAI chat request for the same public model, as JSON text.
pub fn to_chat(req: &AiRequest) -> Result<Vec<u8>, GatewayError> {
    let head: Head = serde_json::from_value(Value::Object(req.head(&["messages"])?))
        .map_err(|e| GatewayError::invalid(e.to_string(), "messages"))?;
    let raw = req
        .items("messages")
        .ok_or_else(|| bad("messages: Field required"))?;
    let mut out = ChatRequestHead::new(head.model);
    let max_tokens = head
        .max_tokens
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            GatewayError::bad_request("max_tokens: Field required", Some("max_tokens"))
        })?;
    out.max_tokens = Some(max_tokens);
    out.temperature = head.temperature.filter(Value::is_number);
    out.top_p = head.top_p.filter(Value::is_number);
    out.stop = head.stop_sequences.filter(|s| !s.is_empty());
    if head.stream == Some(Value::Bool(true)) {
        out.streaming();
    }
    out.user = head
        .metadata
        .and_then(|m| m.user_id)
        .filter(Value::is_string);
    let tools: Vec<ChatTool> = head
        .tools
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.kind.as_deref().is_none_or(|k| k == "custom"))
        .map(|t| ChatTool::function(t.name, t.description, t.input_schema, None))
        .collect();
    if !tools.is_empty() {
        out.tools = Some(tools);
        if let Some(c) = &head.tool_choice {
            out.tool_choice = choice(c);
            if c.disable_parallel_tool_use {
                out.parallel_tool_calls = Some(Value::Bool(false));
            }
        }
    }
    let mut messages = ArrayOut::field(&out, "messages");
    let system = content_text(&head.system, "\n");
    if !system.is_empty() {
        messages.push(&ChatMessage::System { content: system });
    }
    let mut translated = Vec::new();
    for m in raw {
        let m: Message<'_> = serde_json::from_str(m.get()).map_err(|e| bad(e.to_string()))?;
        messages_of(m, &mut translated)?;
        for t in translated.drain(..) {
            messages.push(&t);
        }
    }
    Ok(messages.finish())
}
