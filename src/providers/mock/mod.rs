//! The built-in mock provider: answers chat, completions and embeddings in OpenAI's wire
//! format without any upstream. Content is deterministic (derived from a hash of the
//! prompt), usage is exact for what it sends, streams are paced at a configured token rate,
//! and failures can be injected (an HTTP status every Nth request, 429 with `retry-after`,
//! a stream cut mid-way). Answers carry `mock.prompt_sha256` / `mock.prompt_bytes` so a
//! test can check that a prompt reached the provider intact.

mod inputs;
mod tools;
use inputs::{embed, inputs_of};

use super::{UpstreamBody, UpstreamErrorKind, UpstreamFailure, UpstreamResponse};
use crate::canonical::{AiRequest, Endpoint};
use crate::config::schema::MockConfig;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "answers",
    "quickly",
    "and",
    "counts",
    "every",
    "token",
    "while",
    "limits",
    "hold",
    "across",
    "instances",
    "so",
    "nothing",
    "is",
    "lost",
    "mock",
    "reply",
    "stream",
];

/// Most tokens one mock answer will produce.
const MAX_COMPLETION_TOKENS: u64 = 4096;

/// The mock as a [`super::Provider`]: it speaks OpenAI's dialect and answers in process
/// (each configured mock is a [`MockProvider`], its [`super::api::InProcess`] upstream,
/// with its own counter).
#[derive(Debug)]
pub struct Mock;

impl super::Provider for Mock {
    fn validate(
        &self,
        p: &crate::config::provider::ProviderConfig,
        path: &str,
    ) -> Vec<crate::config::ConfigProblem> {
        let mut f = super::checks::Found::new(path);
        if let crate::config::provider::KindConfig::Mock(m) = &p.kind {
            super::checks::mock(p, m, &mut f);
        }
        f.problems
    }

    fn in_process(
        &self,
        p: &crate::config::provider::ProviderConfig,
    ) -> Option<std::sync::Arc<dyn super::api::InProcess>> {
        let crate::config::provider::KindConfig::Mock(cfg) = &p.kind else {
            return None;
        };
        Some(std::sync::Arc::new(MockProvider::new(cfg.clone())))
    }

    fn outgoing(
        &self,
        t: &super::api::Target<'_>,
        req: &AiRequest,
    ) -> Result<super::api::Outgoing, crate::errors::GatewayError> {
        super::openai::OpenAi.outgoing(t, req)
    }
}

/// A mock provider with its request counter (for `failure.every`).
#[derive(Debug)]
pub struct MockProvider {
    cfg: MockConfig,
    counter: AtomicU64,
}

/// What a prompt looks like to the mock.
struct Prompt {
    text: String,
    digest: [u8; 32],
}

impl Prompt {
    fn tokens(&self) -> u64 {
        estimate_tokens(&self.text)
    }
}

/// The gateway's rough token estimate: one token per four bytes, at least one.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

#[async_trait::async_trait]
impl super::api::InProcess for MockProvider {
    async fn call(&self, req: &AiRequest, model: &str) -> UpstreamResponse {
        MockProvider::call(self, req, model).await
    }
}

impl MockProvider {
    pub fn new(cfg: MockConfig) -> Self {
        MockProvider {
            cfg,
            counter: AtomicU64::new(0),
        }
    }

    /// Answer one request as the upstream model `model`.
    pub async fn call(&self, req: &AiRequest, model: &str) -> UpstreamResponse {
        if self.cfg.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.cfg.latency_ms)).await;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(f) = &self.cfg.failure {
            if n.is_multiple_of(f.every) {
                return failure(f.status, f.retry_after_secs);
            }
        }
        let prompt = prompt_of(req);
        match req.endpoint {
            Endpoint::Embeddings => json_response(self.embeddings(req, model, &prompt)),
            Endpoint::ChatCompletions | Endpoint::Completions if req.stream => {
                self.stream(req, model, &prompt)
            }
            Endpoint::ChatCompletions | Endpoint::Completions => {
                json_response(self.completion(req, model, &prompt))
            }
            // Messages and Responses requests reach the mock as their chat pivot.
            Endpoint::Messages | Endpoint::Responses => failure(404, None),
        }
    }

    fn completion_words(
        &self,
        req: &AiRequest,
        model: &str,
        prompt: &Prompt,
    ) -> (Vec<String>, &'static str) {
        if req.endpoint == Endpoint::ChatCompletions {
            if let Some(json) = tools::structured(req) {
                return (json, "stop");
            }
            if let Some(tools::AgentStep::Report(text)) = self.agent(req, model, prompt) {
                let words = text.split_inclusive(' ').map(str::to_string).collect();
                return (words, "stop");
            }
        }
        let wanted = u64::from(self.cfg.completion_tokens).min(MAX_COMPLETION_TOKENS);
        let (count, finish) = match req.max_tokens {
            Some(m) if m < wanted && !self.cfg.ignore_max_tokens => (m, "length"),
            _ => (wanted, "stop"),
        };
        let seed = u64::from_le_bytes(prompt.digest[..8].try_into().unwrap_or_default());
        let words = (0..count)
            .map(|i| {
                let w =
                    WORDS[((seed.wrapping_add(i.wrapping_mul(31))) % WORDS.len() as u64) as usize];
                if i == 0 {
                    w.to_string()
                } else {
                    format!(" {w}")
                }
            })
            .collect();
        (words, finish)
    }

    fn completion(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> Value {
        let (words, finish) = self.completion_words(req, model, prompt);
        if let Some(call) = self.tool_call(req, model, prompt) {
            return json!({"id": format!("chatcmpl-{}", rand_id()), "object": "chat.completion",
                "created": now(), "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "message": call.message(), "logprobs": null,
                             "finish_reason": "tool_calls"}],
                "usage": usage(prompt.tokens(), call.tokens()), "mock": mock_info(prompt)});
        }
        let usage = usage(prompt.tokens(), words.len() as u64);
        let text = words.concat();
        let (id, object, choice) = match req.endpoint {
            Endpoint::Completions => (
                format!("cmpl-{}", rand_id()),
                "text_completion",
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
            ),
            _ => (
                format!("chatcmpl-{}", rand_id()),
                "chat.completion",
                json!({"index": 0,
                       "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
                       "logprobs": null, "finish_reason": finish}),
            ),
        };
        json!({"id": id, "object": object, "created": now(), "model": model,
               "choices": [choice], "usage": usage, "system_fingerprint": "fp_mock",
               "mock": mock_info(prompt)})
    }

    /// The tool call a chat request requires, or an agent model makes (see [`tools`]).
    fn tool_call(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> Option<tools::Call> {
        let seed = u64::from_le_bytes(prompt.digest[..8].try_into().unwrap_or_default());
        if req.endpoint != Endpoint::ChatCompletions {
            return None;
        }
        tools::required(req, seed).or_else(|| match self.agent(req, model, prompt) {
            Some(tools::AgentStep::Call(c)) => Some(c),
            _ => None,
        })
    }

    /// The next step of `model` when it is one of the agent models.
    fn agent(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> Option<tools::AgentStep> {
        let seed = u64::from_le_bytes(prompt.digest[..8].try_into().unwrap_or_default());
        self.cfg
            .agent_models
            .iter()
            .any(|m| m == model)
            .then(|| tools::agent_step(req, seed))
            .flatten()
    }

    fn stream(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> UpstreamResponse {
        let (mut words, mut finish) = self.completion_words(req, model, prompt);
        let call = self.tool_call(req, model, prompt);
        if call.is_some() {
            (words, finish) = (Vec::new(), "tool_calls");
        }
        let chat = req.endpoint == Endpoint::ChatCompletions;
        let id = if chat {
            format!("chatcmpl-{}", rand_id())
        } else {
            format!("cmpl-{}", rand_id())
        };
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let created = now();
        // The gateway always asks upstreams for the usage chunk (and drops it when the
        // client did not): the in-process mock answers as such an upstream would.
        let with_usage = true;
        let chunk = |choice: Value| {
            let mut c = json!({"id": id, "object": object, "created": created, "model": model,
                               "system_fingerprint": "fp_mock", "choices": [choice]});
            if with_usage {
                c["usage"] = Value::Null;
            }
            c
        };
        let delta_choice = |delta: Value, text: &str, finish: Value| {
            if chat {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        let mut events = Vec::with_capacity(words.len() + 4);
        if chat {
            events.push(chunk(delta_choice(
                json!({"role": "assistant", "content": ""}),
                "",
                Value::Null,
            )));
        }
        for w in &words {
            events.push(chunk(delta_choice(json!({"content": w}), w, Value::Null)));
        }
        for d in call.iter().flat_map(tools::Call::deltas) {
            events.push(chunk(delta_choice(d, "", Value::Null)));
        }
        events.push(chunk(delta_choice(json!({}), "", json!(finish))));
        let completion = call
            .as_ref()
            .map_or(words.len() as u64, tools::Call::tokens);
        if with_usage {
            events.push(
                json!({"id": id, "object": object, "created": created, "model": model,
                               "system_fingerprint": "fp_mock", "choices": [],
                               "usage": usage(prompt.tokens(), completion)}),
            );
        }
        let mut frames: Vec<Bytes> = events
            .iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let first_token = usize::from(chat);
        let cut_at = self
            .cfg
            .cut_stream_after_tokens
            .map(|n| (first_token + n as usize).min(frames.len() - 1));
        let interval = (self.cfg.tokens_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.cfg.tokens_per_second));
        UpstreamResponse {
            status: 200,
            content_type: Some("text/event-stream".into()),
            retry_after: None,
            ratelimit_headers: Vec::new(),
            body: UpstreamBody::Mock(MockStream {
                frames,
                next: 0,
                cut_at,
                interval,
                next_at: Instant::now(),
            }),
        }
    }

    fn embeddings(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> Value {
        let dims = req
            .field("dimensions")
            .and_then(|r| r.get().parse::<usize>().ok())
            .filter(|d| (1..=8192).contains(d))
            .unwrap_or(self.cfg.embedding_dimensions);
        let base64 = req.field("encoding_format").map(|r| r.get()) == Some("\"base64\"");
        let inputs = inputs_of(req.field("input"));
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let v = embed(input, dims);
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let tokens: u64 = inputs.iter().map(|s| estimate_tokens(s)).sum();
        json!({"object": "list", "model": model, "data": data,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
               "mock": mock_info(prompt)})
    }
}

/// A mock event stream, paced and possibly cut.
pub struct MockStream {
    frames: Vec<Bytes>,
    next: usize,
    cut_at: Option<usize>,
    interval: Option<Duration>,
    next_at: Instant,
}

impl MockStream {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamFailure> {
        if self.next >= self.frames.len() {
            return Ok(None);
        }
        if let Some(interval) = self.interval {
            if self.next > 0 {
                self.next_at += interval;
                tokio::time::sleep_until(self.next_at).await;
            } else {
                self.next_at = Instant::now();
            }
        }
        if self.cut_at == Some(self.next) {
            self.next = self.frames.len();
            return Err(UpstreamFailure::new(
                UpstreamErrorKind::StreamCut,
                "mock stream cut (failure injection)",
            ));
        }
        self.next += 1;
        Ok(Some(self.frames[self.next - 1].clone()))
    }
}

fn failure(status: u16, retry_after: Option<u64>) -> UpstreamResponse {
    let (message, etype, code) = match status {
        429 => (
            "Rate limit reached for mock (failure injection).",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500..=599 => (
            "The mock server had an error (failure injection).",
            "server_error",
            None,
        ),
        _ => (
            "The mock rejected the request (failure injection).",
            "invalid_request_error",
            None,
        ),
    };
    UpstreamResponse {
        status,
        content_type: Some("application/json".into()),
        retry_after: retry_after.map(|s| s.to_string()),
        ratelimit_headers: Vec::new(),
        body: UpstreamBody::Full(Some(crate::errors::openai_error_body(
            message, etype, None, code,
        ))),
    }
}

fn json_response(v: Value) -> UpstreamResponse {
    UpstreamResponse {
        status: 200,
        content_type: Some("application/json".into()),
        retry_after: None,
        ratelimit_headers: Vec::new(),
        body: UpstreamBody::Full(Some(Bytes::from(v.to_string()))),
    }
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn mock_info(p: &Prompt) -> Value {
    json!({"prompt_sha256": hex::encode(p.digest), "prompt_bytes": p.text.len()})
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rand_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// The prompt text: message contents (text parts) for chat, `prompt` for completions,
/// `input` for embeddings, joined by newlines.
fn prompt_of(req: &AiRequest) -> Prompt {
    let text = match req.endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => {
            // One message's tree at a time: a large prompt is never held as one tree.
            let mut text = String::new();
            for (i, raw) in req.items("messages").unwrap_or_default().iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                let m: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                match &m["content"] {
                    Value::String(s) => text.push_str(s),
                    Value::Array(parts) => {
                        let texts = parts.iter().filter_map(|p| p["text"].as_str());
                        for (j, t) in texts.enumerate() {
                            if j > 0 {
                                text.push('\n');
                            }
                            text.push_str(t);
                        }
                    }
                    _ => {}
                }
            }
            text
        }
        Endpoint::Completions => inputs_of(req.field("prompt")).join("\n"),
        Endpoint::Embeddings => inputs_of(req.field("input")).join("\n"),
    };
    let digest = Sha256::digest(text.as_bytes()).into();
    Prompt { text, digest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::MockFailure;

    fn req(endpoint: Endpoint, body: &str) -> AiRequest {
        AiRequest::parse(endpoint, Bytes::copy_from_slice(body.as_bytes())).unwrap()
    }

    async fn body_json(r: UpstreamResponse) -> Value {
        let mut b = r.body;
        serde_json::from_slice(&b.read_all(1 << 20).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn chat_is_deterministic_with_exact_usage() {
        let m = MockProvider::new(MockConfig::default());
        let r = req(
            Endpoint::ChatCompletions,
            r#"{"model":"x","messages":[{"role":"user","content":"hello there"}]}"#,
        );
        let a = body_json(m.call(&r, "up").await).await;
        let b = body_json(m.call(&r, "up").await).await;
        assert_eq!(
            a["choices"][0]["message"]["content"],
            b["choices"][0]["message"]["content"]
        );
        assert_eq!(a["usage"]["completion_tokens"], 16);
        assert_eq!(a["usage"]["prompt_tokens"], 3);
        assert_eq!(a["usage"]["total_tokens"], 19);
        assert_eq!(a["model"], "up");
        assert_eq!(
            a["mock"]["prompt_sha256"],
            hex::encode(Sha256::digest(b"hello there"))
        );
        let short = req(
            Endpoint::ChatCompletions,
            r#"{"model":"x","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let c = body_json(m.call(&short, "up").await).await;
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        assert_eq!(c["usage"]["completion_tokens"], 2);
    }

    #[tokio::test]
    async fn failure_every_nth() {
        let m = MockProvider::new(MockConfig {
            failure: Some(MockFailure {
                status: 429,
                every: 2,
                retry_after_secs: Some(3),
            }),
            ..MockConfig::default()
        });
        let r = req(Endpoint::Completions, r#"{"model":"x","prompt":"p"}"#);
        assert_eq!(m.call(&r, "x").await.status, 200);
        let f = m.call(&r, "x").await;
        assert_eq!((f.status, f.retry_after.as_deref()), (429, Some("3")));
        assert_eq!(body_json(f).await["error"]["code"], "rate_limit_exceeded");
    }

    #[tokio::test]
    async fn stream_frames_and_cut() {
        let m = MockProvider::new(MockConfig {
            cut_stream_after_tokens: Some(2),
            ..MockConfig::default()
        });
        let r = req(
            Endpoint::ChatCompletions,
            r#"{"model":"x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let mut resp = m.call(&r, "x").await;
        assert!(resp.is_event_stream());
        let mut got = vec![];
        let err = loop {
            match resp.body.next_chunk().await {
                Ok(Some(c)) => got.push(c),
                Ok(None) => panic!("stream should be cut"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind, UpstreamErrorKind::StreamCut);
        assert_eq!(got.len(), 3); // role chunk + 2 tokens
    }

    #[tokio::test]
    async fn embeddings_base64_matches_float() {
        let m = MockProvider::new(MockConfig::default());
        let f = body_json(
            m.call(
                &req(
                    Endpoint::Embeddings,
                    r#"{"model":"e","input":["a","b"],"encoding_format":"float"}"#,
                ),
                "e",
            )
            .await,
        )
        .await;
        let b = body_json(
            m.call(
                &req(
                    Endpoint::Embeddings,
                    r#"{"model":"e","input":["a","b"],"encoding_format":"base64","dimensions":8}"#,
                ),
                "e",
            )
            .await,
        )
        .await;
        assert_eq!(f["data"].as_array().unwrap().len(), 2);
        assert_eq!(f["data"][0]["embedding"].as_array().unwrap().len(), 64);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b["data"][1]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 8 * 4);
    }
}
