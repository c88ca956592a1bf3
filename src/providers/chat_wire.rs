//! OpenAI chat answers as the translations write them: typed values serialized by serde.
//! Fields are declared in the order they are written — sorted, as the gateway writes every
//! JSON object it builds — so a typed answer is byte for byte what a built tree was.

use super::api::ChatEvent;
use crate::canonical::chunk::{ChatChunk, Stamp};
use serde::Serialize;
use std::borrow::Cow;

/// An OpenAI `chat.completion` with one choice.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub choices: [Choice<'a>; 1],
    pub created: u64,
    pub id: Option<Cow<'a, str>>,
    pub model: &'a str,
    pub object: &'static str,
    pub usage: ChatUsage,
}

/// OpenAI usage as the translations write it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChatUsage {
    pub completion_tokens: u64,
    /// Present when the provider reports reasoning tokens apart (Gemini's thoughts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<ReasoningTokens>,
    pub prompt_tokens: u64,
    pub prompt_tokens_details: CachedTokens,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CachedTokens {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReasoningTokens {
    pub reasoning_tokens: u64,
}

impl ChatUsage {
    /// Usage of `prompt` and `completion` tokens, `cached` of the prompt read from a
    /// cache; the total is the provider's when it reported one, else the (saturating) sum.
    pub fn new(prompt: u64, completion: u64, cached: u64, total: Option<u64>) -> ChatUsage {
        ChatUsage {
            completion_tokens: completion,
            completion_tokens_details: None,
            prompt_tokens: prompt,
            prompt_tokens_details: CachedTokens {
                cached_tokens: cached,
            },
            total_tokens: total.unwrap_or(prompt.saturating_add(completion)),
        }
    }
}

impl ChatUsage {
    /// The last chunk of a translated stream (`stamp`'s): no choices, this usage (as
    /// OpenAI sends it when asked with `stream_options.include_usage`).
    pub fn chunk(self, stamp: &Stamp) -> ChatEvent {
        ChatEvent::Chunk(ChatChunk {
            choices: Vec::new(),
            created: stamp.created,
            id: stamp.id.clone(),
            model: stamp.model.clone(),
            usage: serde_json::to_value(self).ok(),
            ..ChatChunk::default()
        })
    }
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
        usage: ChatUsage,
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
