//! Google's Gemini API (`kind: gemini`) as a [`Provider`]: chat completions become
//! `generateContent` / `streamGenerateContent?alt=sse`, embeddings `batchEmbedContents`,
//! the key goes in `x-goog-api-key` (never in the URL). Answers, streams and Google's
//! error shapes come back in OpenAI's dialect ([`translate`]); a 429's
//! `RetryInfo.retryDelay` becomes the key's cool-down and the client's `retry-after`, and
//! an invalid key (Google's 400 `API_KEY_INVALID`) counts as the provider refusing the
//! gateway's credentials. Vertex AI takes the same bodies (`super::vertex`).

mod answer;
pub mod translate;

use super::api::{key_header, ChatEvent, EventTranslator, Outgoing, Provider, Target, WholeAnswer};
use crate::canonical::chunk::{ChatChunk, ChunkDelta};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::{openai_error_body, GatewayError};
use bytes::Bytes;
use http::HeaderName;
use serde_json::Value;
use std::sync::Arc;
use translate::{call_id, finish_reason, split_parts, usage};

/// Where `kind: gemini` goes when the config names no `base_url`.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

#[derive(Debug)]
pub struct Gemini;

/// A model name safe to put in a URL path (`models/` added unless it names another
/// collection, such as `tunedModels/…`).
pub fn model_path(model: &str) -> Result<String, GatewayError> {
    let bad = model.is_empty()
        || model.contains("..")
        || model
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "-._/@".contains(c)));
    if bad {
        return Err(GatewayError::bad_request(
            format!("model name {model:?} cannot be sent to this provider"),
            Some("model"),
        ));
    }
    Ok(if model.contains('/') {
        model.to_string()
    } else {
        format!("models/{model}")
    })
}

/// The `generateContent` body and method suffix of a chat request.
pub fn chat_call(req: &AiRequest) -> Result<(Vec<u8>, &'static str), GatewayError> {
    let body = translate::request(req)?;
    let method = if req.stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    };
    Ok((body, method))
}

impl Provider for Gemini {
    fn otel_name(&self) -> Option<&'static str> {
        Some("gcp.gemini")
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Embeddings)
    }

    fn default_base_url(&self, _p: &crate::config::schema::ProviderConfig) -> Option<String> {
        Some(GEMINI_BASE_URL.to_string())
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let model = model_path(t.model)?;
        let (path, body) = if req.endpoint == Endpoint::Embeddings {
            let body = translate::embeddings_request(req, &model)?;
            (format!("/{model}:batchEmbedContents"), body)
        } else {
            let (body, method) = chat_call(req)?;
            (format!("/{model}{method}"), body)
        };
        Ok(Outgoing {
            path,
            headers: key_header(HeaderName::from_static("x-goog-api-key"), t.api_key)?,
            body: Bytes::from(body),
        })
    }

    fn stream_translator(&self, model: &str, created: u64) -> Option<Box<dyn EventTranslator>> {
        Some(Box::new(GeminiStream::new(model, created)))
    }

    fn whole_answer(
        &self,
        status: u16,
        body: Bytes,
        model: &str,
        created: u64,
    ) -> Result<WholeAnswer, GatewayError> {
        whole_answer(status, body, model, created)
    }

    fn reads_error_bodies(&self) -> bool {
        true
    }

    fn error_verdict(&self, status: u16, body: &[u8]) -> Option<(u16, Option<u64>)> {
        error_verdict(status, body)
    }
}

/// A whole Gemini answer (chat or embeddings) in OpenAI's dialect.
pub fn whole_answer(
    status: u16,
    body: Bytes,
    model: &str,
    created: u64,
) -> Result<WholeAnswer, GatewayError> {
    if status >= 400 {
        let (status, body) = translate::error(status, &body);
        return Ok(WholeAnswer {
            status,
            body,
            as_sent: false,
        });
    }
    let out = match answer::Generated::parse(&body)? {
        Some(g) => serde_json::to_vec(&g.into_chat(model, created))
            .map_err(|e| GatewayError::Internal(format!("writing the answer: {e}")))?,
        None => {
            let g: Value = serde_json::from_slice(&body)
                .map_err(|_| GatewayError::UpstreamProtocol("not a Gemini answer".into()))?;
            if g.get("embeddings").is_none() {
                return Err(GatewayError::UpstreamProtocol("not a Gemini answer".into()));
            }
            translate::embeddings_response(&g, model)
                .to_string()
                .into_bytes()
        }
    };
    Ok(WholeAnswer {
        status,
        body: Bytes::from(out),
        as_sent: false,
    })
}

/// What a Google error means for routing: an invalid key is the provider refusing the
/// gateway's credentials (401); a 429 waits its `retryDelay`.
pub fn error_verdict(status: u16, body: &[u8]) -> Option<(u16, Option<u64>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = if v.is_array() {
        &v[0]["error"]
    } else {
        &v["error"]
    };
    if translate::key_invalid(e) {
        return Some((401, None));
    }
    Some((status, translate::retry_delay(e)))
}

/// Gemini's stream (each event a whole `GenerateContentResponse` holding only the new
/// parts; no `[DONE]`: the chunk with `finishReason` is the last) → OpenAI chunks, a
/// usage chunk and `data: [DONE]`.
pub struct GeminiStream {
    id: Arc<str>,
    model: Arc<str>,
    created: u64,
    started: bool,
    calls: usize,
    ended: bool,
}

impl GeminiStream {
    pub fn new(model: &str, created: u64) -> GeminiStream {
        GeminiStream {
            id: Arc::from(""),
            model: Arc::from(model),
            created,
            started: false,
            calls: 0,
            ended: false,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish: Option<&'static str>) -> ChatEvent {
        ChatEvent::Chunk(ChatChunk::delta(
            &self.id,
            self.created,
            &self.model,
            delta,
            finish,
        ))
    }
}

impl EventTranslator for GeminiStream {
    fn event(&mut self, data: &[u8]) -> Vec<ChatEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let Ok(data) = serde_json::from_slice::<Value>(data) else {
            return out;
        };
        let err = if data.is_array() {
            &data[0]["error"]
        } else {
            &data["error"]
        };
        if err.is_object() {
            self.ended = true;
            let message = err["message"].as_str().unwrap_or("upstream error");
            let body = openai_error_body(message, "server_error", None, None);
            out.push(ChatEvent::Error(body));
            return out;
        }
        if !self.started {
            self.started = true;
            let rid = data["responseId"].as_str().unwrap_or("gemini");
            self.id = Arc::from(format!("chatcmpl-{rid}"));
            out.push(self.chunk(ChunkDelta::start(), None));
        }
        let cand = &data["candidates"][0];
        let (text, thought, calls) = split_parts(&cand["content"]["parts"]);
        if !thought.is_empty() {
            out.push(self.chunk(ChunkDelta::reasoning(thought), None));
        }
        if !text.is_empty() {
            out.push(self.chunk(ChunkDelta::text(text), None));
        }
        for (name, args) in calls {
            let index = self.calls;
            self.calls += 1;
            let id = call_id(&self.id, index);
            let call = ChunkDelta::call(index as u64, Some(id), name, args);
            out.push(self.chunk(call, None));
        }
        let blocked = data.get("promptFeedback").is_some() && data["candidates"].is_null();
        if let Some(reason) = cand["finishReason"]
            .as_str()
            .or(blocked.then_some("SAFETY"))
        {
            self.ended = true;
            let finish = finish_reason(reason, self.calls > 0);
            out.push(self.chunk(ChunkDelta::default(), Some(finish)));
            let usage = usage(&data["usageMetadata"]);
            out.push(usage.chunk(&self.id, self.created, &self.model));
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
