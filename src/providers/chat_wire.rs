//! OpenAI chat answers as the translations write them: typed values serialized by serde.
//! Fields are declared in the order they are written — sorted, as the gateway writes every
//! JSON object it builds — so a typed answer is byte for byte what a built tree was.

use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

/// An OpenAI `chat.completion` with one choice.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub choices: [Choice<'a>; 1],
    pub created: u64,
    pub id: Option<Cow<'a, str>>,
    pub model: &'a str,
    pub object: &'static str,
    pub usage: Value,
}

#[derive(Debug, Serialize)]
pub struct Choice<'a> {
    pub finish_reason: &'static str,
    pub index: u32,
    pub logprobs: Option<()>,
    pub message: AssistantMessage<'a>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    /// `null` for an answer of tool calls only.
    pub content: Option<String>,
    /// The model's reasoning, where the provider returns it (DeepSeek's field name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ToolCall<'a> {
    pub function: Function<'a>,
    pub id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Function<'a> {
    /// The tool's input as a JSON text, as chat carries arguments.
    pub arguments: String,
    pub name: Cow<'a, str>,
}

impl<'a> ChatCompletion<'a> {
    /// A `chat.completion` of one assistant message.
    pub fn one(
        id: Option<Cow<'a, str>>,
        model: &'a str,
        created: u64,
        finish_reason: &'static str,
        message: AssistantMessage<'a>,
        usage: Value,
    ) -> ChatCompletion<'a> {
        ChatCompletion {
            choices: [Choice {
                finish_reason,
                index: 0,
                logprobs: None,
                message,
            }],
            created,
            id,
            model,
            object: "chat.completion",
            usage,
        }
    }
}

impl<'a> AssistantMessage<'a> {
    /// The assistant's answer: `null` content for tool calls alone (or when `null_empty`
    /// says an empty text means none), the reasoning when there was some.
    pub fn new(
        text: String,
        reasoning: String,
        tool_calls: Vec<ToolCall<'a>>,
        null_empty: bool,
    ) -> AssistantMessage<'a> {
        let null = text.is_empty() && (!tool_calls.is_empty() || null_empty);
        AssistantMessage {
            content: (!null).then_some(text),
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            role: "assistant",
            tool_calls,
        }
    }
}

impl<'a> ToolCall<'a> {
    /// A function call with its arguments as a JSON text.
    pub fn function(id: Cow<'a, str>, name: Cow<'a, str>, arguments: String) -> ToolCall<'a> {
        ToolCall {
            function: Function { arguments, name },
            id,
            kind: "function",
        }
    }
}
