//! An Anthropic Message answer → an OpenAI `chat.completion`, between typed values: the
//! Message is read into the shared Anthropic model ([`Message`], its strings borrowed
//! from the answer, blocks of other types skipped), and a [`ChatCompletion`] is what is
//! written.

use super::anthropic::{finish_reason, usage};
use super::chat_wire::{AssistantMessage, ChatCompletion, ToolCall};
use crate::canonical::anthropic::{Block, Message};
use crate::errors::GatewayError;

/// Read a Message answer; anything else is the upstream's protocol error.
pub fn parse(body: &[u8]) -> Result<Message<'_>, GatewayError> {
    serde_json::from_slice::<Message<'_>>(body)
        .ok()
        .filter(|m| m.kind == "message")
        .ok_or_else(|| GatewayError::UpstreamProtocol("not a Message".into()))
}

/// A Message as a `chat.completion` for the public `model`: text blocks joined, tool
/// uses as tool calls.
pub fn into_chat<'a>(m: Message<'a>, model: &'a str, created: u64) -> ChatCompletion<'a> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in m.content {
        match block {
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => {
                tool_calls.push(ToolCall::function(id, name, input.to_string()))
            }
            // Request-only blocks (images, tool results) and what has no chat form.
            Block::Image { .. } | Block::ToolResult { .. } | Block::Other => {}
        }
    }
    let finish = finish_reason(m.stop_reason.as_deref().unwrap_or(""));
    let message = AssistantMessage::new(text, String::new(), tool_calls, false);
    let usage = usage(&m.usage, None);
    ChatCompletion::one(m.id, model, created, finish, message, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn chat(body: Value) -> Value {
        let text = body.to_string();
        let c = into_chat(parse(text.as_bytes()).unwrap(), "claude", 7);
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
        assert!(parse(br#"{"type": "error"}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
