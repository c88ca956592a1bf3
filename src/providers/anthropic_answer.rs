//! An Anthropic Message answer → an OpenAI `chat.completion`, between typed values: the
//! Message is read into [`Message`] (its strings borrowed from the answer, blocks of other
//! types skipped), and a [`ChatCompletion`] is what is written.

use super::anthropic::{finish_reason, usage};
use super::chat_wire::{AssistantMessage, ChatCompletion, ToolCall};
use crate::errors::GatewayError;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// The parts of a Message the translation reads.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    /// Always `message` in an answer.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub content: Vec<Block<'a>>,
    #[serde(default, borrow)]
    pub stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Value,
}

/// One content block of a Message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    ToolUse {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, redacted thinking, server tools' blocks: no chat equivalent.
    #[serde(other)]
    Other,
}

impl<'a> Message<'a> {
    /// Read a Message answer; anything else is the upstream's protocol error.
    pub fn parse(body: &'a [u8]) -> Result<Message<'a>, GatewayError> {
        serde_json::from_slice::<Message<'a>>(body)
            .ok()
            .filter(|m| m.kind == "message")
            .ok_or_else(|| GatewayError::UpstreamProtocol("not a Message".into()))
    }

    /// As a `chat.completion` for the public `model`: text blocks joined, tool uses as
    /// tool calls.
    pub fn into_chat(self, model: &'a str, created: u64) -> ChatCompletion<'a> {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in self.content {
            match block {
                Block::Text { text: t } => text.push_str(&t),
                Block::ToolUse { id, name, input } => {
                    tool_calls.push(ToolCall::function(id, name, input.to_string()))
                }
                Block::Other => {}
            }
        }
        let finish = finish_reason(self.stop_reason.as_deref().unwrap_or(""));
        let message = AssistantMessage::new(text, String::new(), tool_calls, false);
        ChatCompletion::one(
            self.id,
            model,
            created,
            finish,
            message,
            usage(&self.usage, None),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(body: Value) -> Value {
        let text = body.to_string();
        let c = Message::parse(text.as_bytes())
            .unwrap()
            .into_chat("claude", 7);
        serde_json::to_value(c).unwrap()
    }

    #[test]
    fn text_and_tool_uses_become_one_choice() {
        let c = chat(
            json!({"type": "message", "id": "msg_1", "role": "assistant",
            "content": [{"type": "thinking", "thinking": "…", "signature": "s"},
                {"type": "text", "text": "Let me "}, {"type": "text", "text": "look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 3}}),
        );
        assert_eq!(
            c,
            json!({"id": "msg_1", "object": "chat.completion", "created": 7, "model": "claude",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": "Let me look.",
                        "tool_calls": [{"id": "toolu_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                    "prompt_tokens_details": {"cached_tokens": 0}}})
        );
    }

    #[test]
    fn tool_calls_alone_have_null_content_and_other_answers_are_refused() {
        let c = chat(json!({"type": "message", "id": "m", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"}));
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        let empty = chat(json!({"type": "message", "content": [], "stop_reason": "end_turn"}));
        assert_eq!(empty["choices"][0]["message"]["content"], "");
        assert!(empty["choices"][0]["message"].get("tool_calls").is_none());
        assert!(Message::parse(br#"{"type": "error"}"#).is_err());
        assert!(Message::parse(b"not json").is_err());
    }
}
