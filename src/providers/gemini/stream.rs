//! Gemini's stream (each event a whole `GenerateContentResponse` holding only the new
//! parts; no `[DONE]`: the chunk with `finishReason` is the last) → OpenAI chunks, a
//! usage chunk and `data: [DONE]`. Each event is read once, typed, into the same
//! [`Generated`] a whole answer is read into.

use super::answer::Generated;
use super::translate::{call_id, finish_reason, usage};
use crate::canonical::chunk::{ChunkDelta, Stamp};
use crate::errors::openai_error_body;
use crate::providers::api::{ChatEvent, EventTranslator};
use std::sync::Arc;

/// One Gemini stream being translated.
pub struct GeminiStream {
    stamp: Stamp,
    started: bool,
    calls: usize,
    ended: bool,
}

impl GeminiStream {
    pub fn new(model: &str, created: u64) -> GeminiStream {
        GeminiStream {
            stamp: Stamp::new(model, created),
            started: false,
            calls: 0,
            ended: false,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish: Option<&'static str>) -> ChatEvent {
        ChatEvent::Chunk(self.stamp.chunk(delta, finish))
    }
}

impl EventTranslator for GeminiStream {
    fn event(&mut self, data: &[u8]) -> Vec<ChatEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let Some(mut g) = Generated::read_event(data) else {
            return out;
        };
        if let Some(err) = &g.error {
            self.ended = true;
            let message = err["message"].as_str().unwrap_or("upstream error");
            let body = openai_error_body(message, "server_error", None, None);
            out.push(ChatEvent::Error(body));
            return out;
        }
        if !self.started {
            self.started = true;
            let rid = g.response_id.as_deref().unwrap_or("gemini");
            self.stamp.id = Arc::from(format!("chatcmpl-{rid}"));
            out.push(self.chunk(ChunkDelta::start(), None));
        }
        let blocked = g.prompt_feedback.is_some() && g.candidates.is_none();
        let (reason, said) = g.first_candidate();
        if !said.thought.is_empty() {
            out.push(self.chunk(ChunkDelta::reasoning(said.thought), None));
        }
        if !said.text.is_empty() {
            out.push(self.chunk(ChunkDelta::text(said.text), None));
        }
        for (name, args) in said.calls {
            let index = self.calls;
            self.calls += 1;
            let id = call_id(&self.stamp.id, index);
            let call = ChunkDelta::call(index as u64, Some(id), name.into_owned(), args);
            out.push(self.chunk(call, None));
        }
        if let Some(reason) = reason.as_deref().or(blocked.then_some("SAFETY")) {
            self.ended = true;
            let finish = finish_reason(reason, self.calls > 0);
            out.push(self.chunk(ChunkDelta::default(), Some(finish)));
            let usage = usage(&g.usage);
            out.push(usage.chunk(&self.stamp));
            out.push(ChatEvent::Done);
        }
        out
    }

    fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn bytes(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    /// The chunk objects of some events (`[DONE]` as `None`).
    fn chunks(out: Vec<ChatEvent>) -> Vec<Option<Value>> {
        out.into_iter()
            .map(|e| match e {
                ChatEvent::Chunk(c) => Some(serde_json::to_value(c).unwrap()),
                ChatEvent::Done => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_stream_with_reasoning_text_and_a_call_ends_with_usage_and_done() {
        let mut s = GeminiStream::new("gem", 9);
        let first = chunks(s.event(&bytes(
            json!({"responseId": "r-9", "candidates": [{"content": {
            "parts": [{"text": "think", "thought": true}, {"text": "Hel"}]}}]}),
        )));
        assert_eq!(
            first[0].as_ref().unwrap()["choices"][0]["delta"]["role"],
            "assistant"
        );
        assert_eq!(first[0].as_ref().unwrap()["id"], "chatcmpl-r-9");
        assert_eq!(
            first[1].as_ref().unwrap()["choices"][0]["delta"]["reasoning_content"],
            "think"
        );
        assert_eq!(
            first[2].as_ref().unwrap()["choices"][0]["delta"]["content"],
            "Hel"
        );
        let last = chunks(s.event(&bytes(json!({"candidates": [{"content": {"parts": [
                {"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3}}))));
        let call = &last[0].as_ref().unwrap()["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        // A call ends with STOP: the finish is tool_calls.
        assert_eq!(
            last[1].as_ref().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(last[2].as_ref().unwrap()["usage"]["completion_tokens"], 3);
        assert_eq!(last[3], None);
        assert!(s.ended());
        assert!(s.event(&bytes(json!({"candidates": []}))).is_empty());
    }

    #[test]
    fn an_error_event_ends_the_stream() {
        let mut s = GeminiStream::new("gem", 9);
        let out = s.event(&bytes(json!([{"error": {"code": 500, "message": "boom"}}])));
        assert!(matches!(&out[..], [ChatEvent::Error(_)]));
        assert!(s.ended());
    }
}
