//! A `generateContent` answer → an OpenAI `chat.completion`, between typed values: the
//! answer read into [`Generated`] (strings borrowed from it), the chat answer written from
//! `providers::chat_wire`'s types. A prompt Gemini blocked has no candidates: it is a
//! `content_filter` stop with `null` content.

use super::translate::{call_id, finish_reason, usage};
use crate::errors::GatewayError;
use crate::providers::chat_wire::{AssistantMessage, ChatCompletion, ToolCall};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// The parts of a `generateContent` answer the translation reads.
#[derive(Debug, Deserialize)]
pub struct Generated<'a> {
    #[serde(default, rename = "responseId", borrow)]
    pub response_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub candidates: Option<Vec<Candidate<'a>>>,
    #[serde(default, rename = "usageMetadata")]
    pub usage: Value,
    #[serde(default, rename = "promptFeedback")]
    pub prompt_feedback: Option<Value>,
    /// A stream's error event (`{"error": …}`, or that in an array).
    #[serde(default, deserialize_with = "object")]
    pub error: Option<Value>,
}

/// What a candidate's parts say: the text, the reasoning (thought parts) and the function
/// calls (name, arguments as JSON text), in order.
#[derive(Debug, Default)]
pub struct Said<'a> {
    pub text: String,
    pub thought: String,
    pub calls: Vec<(Cow<'a, str>, String)>,
}

/// A JSON object, else absent.
fn object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(Value::is_object))
}

#[derive(Debug, Deserialize)]
pub struct Candidate<'a> {
    #[serde(default, borrow)]
    pub content: Option<Content<'a>>,
    #[serde(default, rename = "finishReason", borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct Content<'a> {
    #[serde(default, borrow)]
    pub parts: Vec<Part<'a>>,
}

/// One part: text (a thought when `thought` is true) or a function call.
#[derive(Debug, Deserialize)]
pub struct Part<'a> {
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub thought: bool,
    #[serde(default, rename = "functionCall", borrow)]
    pub function_call: Option<FunctionCall<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall<'a> {
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    #[serde(default)]
    pub args: Value,
}

impl<'a> Generated<'a> {
    /// Read a chat answer (`None`: valid JSON but not one, such as an embeddings answer).
    pub fn parse(body: &'a [u8]) -> Result<Option<Generated<'a>>, GatewayError> {
        let g: Generated<'a> = serde_json::from_slice(body)
            .map_err(|_| GatewayError::UpstreamProtocol("not a Gemini answer".into()))?;
        Ok((g.candidates.is_some() || g.prompt_feedback.is_some()).then_some(g))
    }

    /// Read one stream event (an error may come as a one-element array); `None`: not a
    /// `GenerateContentResponse`.
    pub fn read_event(data: &'a [u8]) -> Option<Generated<'a>> {
        if data.trim_ascii_start().starts_with(b"[") {
            let list: Vec<Generated<'a>> = serde_json::from_slice(data).ok()?;
            return list.into_iter().next();
        }
        serde_json::from_slice(data).ok()
    }

    /// The first candidate's finish reason and what its parts say (nothing for a blocked
    /// prompt, which has no candidate).
    pub fn first_candidate(&mut self) -> (Option<Cow<'a, str>>, Said<'a>) {
        let mut candidates = self.candidates.take().unwrap_or_default();
        if candidates.is_empty() {
            return (None, Said::default());
        }
        let first = candidates.swap_remove(0);
        let parts = first.content.map(|c| c.parts).unwrap_or_default();
        let mut said = Said::default();
        for p in parts {
            match (p.text, p.function_call) {
                (Some(t), _) if p.thought => said.thought.push_str(&t),
                (Some(t), _) => said.text.push_str(&t),
                (None, Some(call)) => {
                    let arguments = if call.args.is_object() {
                        call.args.to_string()
                    } else {
                        "{}".into()
                    };
                    said.calls.push((call.name, arguments));
                }
                (None, None) => {}
            }
        }
        (first.finish_reason, said)
    }

    /// As a `chat.completion` for the public `model`.
    pub fn into_chat(mut self, model: &'a str, created: u64) -> ChatCompletion<'a> {
        let rid = self.response_id.as_deref().unwrap_or("gemini").to_string();
        // promptFeedback.blockReason: no candidate.
        let blocked = self.candidates.as_ref().is_none_or(Vec::is_empty);
        let (reason, said) = self.first_candidate();
        let tool_calls: Vec<ToolCall<'a>> = said
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| {
                ToolCall::function(Cow::Owned(call_id(&rid, i)), name, arguments)
            })
            .collect();
        let (text, thought) = (said.text, said.thought);
        let finish = if blocked {
            "content_filter"
        } else {
            finish_reason(reason.as_deref().unwrap_or(""), !tool_calls.is_empty())
        };
        let filtered = finish == "content_filter";
        let message = AssistantMessage::new(text, thought, tool_calls, filtered);
        let id = Cow::Owned(format!("chatcmpl-{rid}"));
        ChatCompletion::one(
            Some(id),
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

    fn chat(answer: Value) -> Value {
        let text = answer.to_string();
        let g = Generated::parse(text.as_bytes()).unwrap().unwrap();
        serde_json::to_value(g.into_chat("gem", 5)).unwrap()
    }

    #[test]
    fn parts_become_text_reasoning_and_tool_calls() {
        let c = chat(
            json!({"responseId": "r-1", "candidates": [{"content": {"role": "model", "parts": [
                {"text": "plan", "thought": true}, {"text": "Sunny."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]},
                "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}}),
        );
        assert_eq!(c["id"], "chatcmpl-r-1");
        let choice = &c["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Sunny.");
        assert_eq!(choice["message"]["reasoning_content"], "plan");
        assert_eq!(choice["message"]["tool_calls"][0]["id"], "call_r1_0");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Rome\"}"
        );
        assert_eq!(c["usage"]["total_tokens"], 5);
    }

    #[test]
    fn a_blocked_prompt_is_a_content_filter_stop_and_embeddings_are_not_chat() {
        let c = chat(json!({"promptFeedback": {"blockReason": "SAFETY"}}));
        assert_eq!(c["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        assert!(Generated::parse(br#"{"embeddings": []}"#)
            .unwrap()
            .is_none());
        assert!(Generated::parse(b"[1,").is_err());
    }
}
