//! A Responses request → the OpenAI chat request for the same public model, through typed
//! values of the request ([`Head`], [`Item`], [`Part`]; its tools in [`super::tools`]): a
//! misspelt field is a compile error, not a silent `null`. The input is translated and
//! written one item at a time ([`ArrayOut`]), never held as one tree.

use super::for_each_input;
use super::tools::{self, ChatTools, ToolNames};
use crate::canonical::chat_write::{
    ChatMessage, ChatRequestHead, ContentPart, FileRef, JsonSchemaFormat, ResponseFormat, ToolCall,
    UserContent,
};
use crate::canonical::content_text;
use crate::canonical::write::ArrayOut;
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use serde::Deserialize;
use serde_json::Value;

/// The fields of the request but `input` that the translation reads.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    model: Value,
    #[serde(default)]
    instructions: Value,
    #[serde(default)]
    max_output_tokens: Value,
    #[serde(default)]
    temperature: Value,
    #[serde(default)]
    top_p: Value,
    #[serde(default)]
    parallel_tool_calls: Value,
    #[serde(default)]
    user: Value,
    #[serde(default)]
    safety_identifier: Value,
    #[serde(default)]
    stream: Value,
    #[serde(default)]
    tool_choice: Value,
    text: Option<Text>,
    reasoning: Option<Reasoning>,
}

#[derive(Deserialize)]
struct Text {
    format: Option<Format>,
}

/// `text.format`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Format {
    JsonSchema {
        #[serde(default)]
        name: Value,
        #[serde(default)]
        schema: Value,
        strict: Option<Value>,
        description: Option<Value>,
    },
    JsonObject,
    #[serde(other)]
    Text,
}

#[derive(Deserialize)]
struct Reasoning {
    effort: Option<String>,
}

/// One input item (every kind's fields; `type` may be absent for a message).
#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    call_id: Value,
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    arguments: Value,
    input: Option<String>,
    #[serde(default)]
    output: Value,
}

/// An input content part.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    #[serde(alias = "output_text", alias = "text")]
    InputText {
        #[serde(default)]
        text: Value,
    },
    InputImage {
        image_url: Option<String>,
        file_id: Option<String>,
        detail: Option<String>,
    },
    InputFile {
        file_id: Option<String>,
        file_data: Option<String>,
        filename: Option<String>,
        file_url: Option<String>,
    },
    #[serde(other)]
    Unsupported,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, "input")
}

/// Input content parts → a user message's content.
fn parts_of(content: Value) -> Result<UserContent, GatewayError> {
    let Value::Array(parts) = content else {
        return Ok(UserContent::Text(content_text(&content, "").into()));
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let kind = p["type"].as_str().map(str::to_string);
        let part: Part = serde_json::from_value(p)
            .map_err(|e| invalid(format!("invalid content part {kind:?}: {e}")))?;
        out.push(match part {
            Part::InputText { text } => ContentPart::Text { text },
            Part::InputImage {
                image_url,
                file_id,
                detail,
            } => {
                let url = image_url
                    .or(file_id)
                    .ok_or_else(|| invalid("input_image needs image_url or file_id"))?;
                ContentPart::image(url, detail)
            }
            Part::InputFile {
                file_id,
                file_data,
                filename,
                file_url,
            } => ContentPart::File {
                file: FileRef {
                    file_data,
                    file_id: file_id.or(file_url),
                    filename,
                },
            },
            Part::Unsupported => {
                return Err(invalid(format!(
                    "content part type {kind:?} is not supported for this model"
                )))
            }
        });
    }
    Ok(UserContent::Parts(out))
}

/// Input item types with no chat form, dropped: reasoning, references to stored items,
/// compaction summaries, tool carriers (their tools are collected first) and the calls
/// and outputs of built-in tools.
fn dropped(kind: &str) -> bool {
    matches!(
        kind,
        "reasoning" | "item_reference" | "compaction" | "additional_tools"
    ) || kind.starts_with("mcp_")
        || kind.ends_with("_call")
        || kind.ends_with("_call_output")
        || kind.ends_with("_output") && kind.starts_with("tool_search")
}

/// An assistant tool call joins the last assistant message when that one holds calls (or
/// no text); otherwise it starts one.
fn push_call(out: &mut Vec<ChatMessage>, call: ToolCall) {
    match out.last_mut() {
        Some(ChatMessage::Assistant {
            content,
            tool_calls,
        }) if !tool_calls.is_empty() || content.as_deref() == Some("") => {
            tool_calls.push(call);
            if content.as_deref() == Some("") {
                *content = None;
            }
        }
        _ => out.push(ChatMessage::Assistant {
            content: None,
            tool_calls: vec![call],
        }),
    }
}

/// One input item → chat messages (consecutive tool calls join one assistant message);
/// `names`: the chat names of the request's tools.
fn messages_of(
    item: Item,
    names: &ToolNames,
    out: &mut Vec<ChatMessage>,
) -> Result<(), GatewayError> {
    let kind = item.kind.as_deref().unwrap_or("message");
    let chat_name = || {
        names.chat_name(
            item.namespace.as_deref(),
            item.name.as_deref().unwrap_or(""),
        )
    };
    let answers_a_call = item.call_id.as_str().is_some_and(|c| !c.is_empty());
    match kind {
        "message" => {
            let text = || content_text(&item.content, "");
            out.push(match item.role.as_deref() {
                Some("developer" | "system") => ChatMessage::System { content: text() },
                Some("assistant") => ChatMessage::Assistant {
                    content: Some(text()),
                    tool_calls: Vec::new(),
                },
                Some("user") => ChatMessage::User {
                    content: parts_of(item.content)?,
                },
                other => return Err(invalid(format!("unknown message role {other:?}"))),
            });
        }
        "function_call" => {
            let call = ToolCall::function(item.call_id, chat_name(), item.arguments);
            push_call(out, call);
        }
        "custom_tool_call" => {
            let args = tools::custom_arguments(item.input.as_deref().unwrap_or(""));
            let call = ToolCall::function(item.call_id, chat_name(), args);
            push_call(out, call);
        }
        // An output without a call id answers nothing: dropped, as peers do.
        "function_call_output" | "custom_tool_call_output" if answers_a_call => {
            out.push(ChatMessage::Tool {
                tool_call_id: item.call_id,
                content: content_text(&item.output, ""),
            });
        }
        kind if dropped(kind) => {}
        other => {
            return Err(invalid(format!(
                "input item type {other:?} is not supported for this model"
            )))
        }
    }
    Ok(())
}

/// `text.format` → chat's `response_format`.
fn response_format(format: Format) -> Option<ResponseFormat> {
    match format {
        Format::JsonSchema {
            name,
            schema,
            strict,
            description,
        } => Some(ResponseFormat {
            json_schema: Some(JsonSchemaFormat {
                description: description.filter(|v| !v.is_null()),
                name,
                schema,
                strict: strict.filter(|v| !v.is_null()),
            }),
            kind: "json_schema",
        }),
        Format::JsonObject => Some(ResponseFormat {
            json_schema: None,
            kind: "json_object",
        }),
        Format::Text => None,
    }
}

/// A Responses request (its input already expanded with any previous response's
/// history) → the chat request for the same public model, as JSON text.
pub fn to_chat(req: &AiRequest) -> Result<Vec<u8>, GatewayError> {
    let head: Head = serde_json::from_value(Value::Object(req.head(&["input"])?))
        .map_err(|e| invalid(format!("invalid request: {e}")))?;
    let mut out = ChatRequestHead::new(head.model);
    out.max_tokens = head.max_output_tokens.as_u64();
    let set = |v: Value| (!v.is_null()).then_some(v);
    out.temperature = set(head.temperature);
    out.top_p = set(head.top_p);
    out.parallel_tool_calls = set(head.parallel_tool_calls);
    out.user = match (head.user, head.safety_identifier) {
        (Value::Null, s @ Value::String(_)) => Some(s),
        (Value::Null, _) => None,
        (u, _) => Some(u),
    };
    if head.stream == Value::Bool(true) {
        out.streaming();
    }
    let tools = ChatTools::of(req)?;
    if !tools.tools.is_empty() {
        out.tool_choice = tools.choice(&head.tool_choice);
        out.tools = Some(tools.tools);
    }
    out.response_format = head.text.and_then(|t| t.format).and_then(response_format);
    out.reasoning_effort = head
        .reasoning
        .and_then(|r| r.effort)
        .filter(|e| e != "none");
    // The last message stays open: a function call that follows joins it.
    let mut messages = ArrayOut::field(&out, "messages");
    let mut open = Vec::new();
    if let Some(i) = head.instructions.as_str().filter(|i| !i.is_empty()) {
        open.push(ChatMessage::System {
            content: i.to_string(),
        });
    }
    for_each_input(req, |item| {
        let item: Item = serde_json::from_value(item)
            .map_err(|e| invalid(format!("invalid input item: {e}")))?;
        messages_of(item, &tools.names, &mut open)?;
        let done = open.len().saturating_sub(1);
        for m in open.drain(..done) {
            messages.push(&m);
        }
        Ok(())
    })?;
    for m in open.drain(..) {
        messages.push(&m);
    }
    if messages.is_empty() {
        return Err(invalid("Missing required parameter: 'input'."));
    }
    Ok(messages.finish())
}
