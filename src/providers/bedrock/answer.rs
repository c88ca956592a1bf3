//! A Converse answer → an OpenAI `chat.completion`, between typed values: the answer read
//! into [`Converse`] (strings borrowed from it), the chat answer written from
//! [`super::super::chat_wire`]'s types.

use super::translate::{finish_reason, usage};
use crate::errors::GatewayError;
use crate::providers::chat_wire::{AssistantMessage, ChatCompletion, ToolCall};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// The parts of a Converse answer the translation reads.
#[derive(Debug, Deserialize)]
pub struct Converse<'a> {
    #[serde(borrow)]
    pub output: Output<'a>,
    #[serde(default, rename = "stopReason", borrow)]
    pub stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Value,
}

#[derive(Debug, Deserialize)]
pub struct Output<'a> {
    #[serde(default, borrow)]
    pub message: Option<Message<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(default, borrow)]
    pub content: Vec<Block<'a>>,
}

/// One content block: Converse names its kind by its one key.
#[derive(Debug, Deserialize)]
pub struct Block<'a> {
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, rename = "toolUse", borrow)]
    pub tool_use: Option<ToolUse<'a>>,
    #[serde(default, rename = "reasoningContent", borrow)]
    pub reasoning: Option<Reasoning<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ToolUse<'a> {
    #[serde(rename = "toolUseId", borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default)]
    pub input: Value,
}

#[derive(Debug, Deserialize)]
pub struct Reasoning<'a> {
    #[serde(default, rename = "reasoningText", borrow)]
    pub text: Option<ReasoningText<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ReasoningText<'a> {
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
}

impl<'a> Converse<'a> {
    /// Read a Converse answer; anything else is the upstream's protocol error.
    pub fn parse(body: &'a [u8]) -> Result<Converse<'a>, GatewayError> {
        serde_json::from_slice(body)
            .map_err(|_| GatewayError::UpstreamProtocol("not a Converse answer".into()))
    }

    /// As a `chat.completion` for the public `model`: text joined, reasoning as
    /// `reasoning_content`, tool uses as tool calls (the gateway names the answer).
    pub fn into_chat(self, model: &'a str, created: u64) -> ChatCompletion<'a> {
        let (mut text, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
        let blocks = self.output.message.map(|m| m.content).unwrap_or_default();
        for b in blocks {
            if let Some(t) = b.text {
                text.push_str(&t);
            } else if let Some(u) = b.tool_use {
                tool_calls.push(ToolCall::function(u.id, u.name, u.input.to_string()));
            } else if let Some(r) = b.reasoning.and_then(|r| r.text).and_then(|t| t.text) {
                reasoning.push_str(&r);
            }
        }
        let id = format!(
            "chatcmpl-bedrock-{}",
            hex::encode(rand::random::<[u8; 8]>())
        );
        let finish = finish_reason(self.stop_reason.as_deref().unwrap_or(""));
        let message = AssistantMessage::new(text, reasoning, tool_calls, false);
        ChatCompletion::one(
            Some(Cow::Owned(id)),
            model,
            created,
            finish,
            message,
            usage(&self.usage),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_reasoning_and_tool_uses_become_one_choice() {
        let answer = json!({"output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 4, "outputTokens": 6, "totalTokens": 10}})
        .to_string();
        let c = serde_json::to_value(
            Converse::parse(answer.as_bytes())
                .unwrap()
                .into_chat("m", 3),
        )
        .unwrap();
        let choice = &c["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        assert_eq!(choice["message"]["reasoning_content"], "hmm");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"})
        );
        assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-bedrock-"));
        assert_eq!(c["usage"]["total_tokens"], 10);
        assert!(Converse::parse(br#"{"message": "no output"}"#).is_err());
    }
}
