//! The built-in mock provider: answers chat, completions and embeddings in OpenAI's wire
//! format without any upstream. Content is deterministic (derived from a hash of the
//! prompt), usage is exact for what it sends, streams are paced at a configured token rate,
//! and failures can be injected (an HTTP status every Nth request, 429 with `retry-after`,
//! a stream cut mid-way). Answers carry `mock.prompt_sha256` / `mock.prompt_bytes` so a
//! test can check that a prompt reached the provider intact.

mod inputs;
mod tools;
mod wire;
pub use inputs::estimate_tokens;
use inputs::{embed, inputs_of, prompt_of, Prompt};
use wire::{
    Answer, ChatChoice, Embedding, EmbeddingUsage, Embeddings, Head, Message, MockInfo, TextChoice,
    Usage, Vector,
};

use super::{UpstreamBody, UpstreamErrorKind, UpstreamFailure, UpstreamResponse};
use crate::canonical::chunk::ChunkDelta;
use crate::canonical::{AiRequest, Endpoint};
use crate::config::schema::MockConfig;
use base64::Engine;
use bytes::Bytes;
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
            Endpoint::Embeddings => self.embeddings(req, model, &prompt),
            Endpoint::ChatCompletions | Endpoint::Completions if req.stream => {
                self.stream(req, model, &prompt)
            }
            Endpoint::ChatCompletions | Endpoint::Completions => {
                self.completion(req, model, &prompt)
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

    fn completion(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> UpstreamResponse {
        let (words, finish) = self.completion_words(req, model, prompt);
        let chat = req.endpoint != Endpoint::Completions;
        let id = if chat {
            format!("chatcmpl-{}", rand_id())
        } else {
            format!("cmpl-{}", rand_id())
        };
        let head = Head {
            id: &id,
            object: if chat {
                "chat.completion"
            } else {
                "text_completion"
            },
            created: now(),
            model,
        };
        let chat_choice = |finish_reason, message| ChatChoice {
            finish_reason,
            index: 0,
            logprobs: None,
            message,
        };
        if let Some(call) = self.tool_call(req, model, prompt) {
            let message = Message::call(&call.id, &call.name, &call.arguments);
            let usage = Usage::new(prompt.tokens(), call.tokens());
            let choice = chat_choice("tool_calls", message);
            return json_response(&Answer::new(head, choice, usage, mock_info(prompt)));
        }
        let usage = Usage::new(prompt.tokens(), words.len() as u64);
        let text = words.concat();
        if chat {
            let choice = chat_choice(finish, Message::text(&text));
            json_response(&Answer::new(head, choice, usage, mock_info(prompt)))
        } else {
            let choice = TextChoice {
                finish_reason: Some(finish),
                index: 0,
                logprobs: None,
                text: &text,
            };
            json_response(&Answer::new(head, choice, usage, mock_info(prompt)))
        }
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
        let head = Head {
            id: &id,
            object,
            created: now(),
            model,
        };
        // The gateway always asks upstreams for the usage chunk (and drops it when the
        // client did not): the in-process mock answers as such an upstream would.
        let mut frames: Vec<Bytes> = Vec::with_capacity(words.len() + 6);
        let mut push = |delta: ChunkDelta, text: &str, finish: Option<&'static str>| {
            frames.push(if chat {
                frame(&head.chunk(wire::delta_choice(delta, finish)))
            } else {
                frame(&head.chunk(TextChoice {
                    finish_reason: finish,
                    index: 0,
                    logprobs: None,
                    text,
                }))
            })
        };
        let content = |text: &str| ChunkDelta {
            content: Some(text.to_string()),
            ..ChunkDelta::default()
        };
        if chat {
            let role = ChunkDelta {
                role: Some("assistant".into()),
                ..content("")
            };
            push(role, "", None);
        }
        for w in &words {
            push(content(w), w, None);
        }
        for d in call
            .iter()
            .flat_map(|c| wire::call_deltas(&c.id, &c.name, &c.arguments))
        {
            push(d, "", None);
        }
        push(ChunkDelta::default(), "", Some(finish));
        let completion = call
            .as_ref()
            .map_or(words.len() as u64, tools::Call::tokens);
        frames.push(frame(&head.last(Usage::new(prompt.tokens(), completion))));
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

    fn embeddings(&self, req: &AiRequest, model: &str, prompt: &Prompt) -> UpstreamResponse {
        let dims = req
            .field("dimensions")
            .and_then(|r| r.get().parse::<usize>().ok())
            .filter(|d| (1..=8192).contains(d))
            .unwrap_or(self.cfg.embedding_dimensions);
        let base64 = req.field("encoding_format").map(|r| r.get()) == Some("\"base64\"");
        let inputs = inputs_of(req.field("input"));
        let data = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let v = embed(input, dims);
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Vector::Floats(v.iter().map(|&f| f64::from(f)).collect())
                };
                Embedding {
                    embedding,
                    index,
                    object: "embedding",
                }
            })
            .collect();
        let tokens: u64 = inputs.iter().map(|s| estimate_tokens(s)).sum();
        json_response(&Embeddings {
            data,
            mock: mock_info(prompt),
            model,
            object: "list",
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        })
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

fn json_response(answer: &impl serde::Serialize) -> UpstreamResponse {
    UpstreamResponse {
        status: 200,
        content_type: Some("application/json".into()),
        retry_after: None,
        ratelimit_headers: Vec::new(),
        body: UpstreamBody::Full(Some(Bytes::from(
            serde_json::to_vec(answer).unwrap_or_default(),
        ))),
    }
}

/// One SSE event of `chunk`.
fn frame(chunk: &impl serde::Serialize) -> Bytes {
    Bytes::from(crate::canonical::write::sse(None, chunk))
}

fn mock_info(p: &Prompt) -> MockInfo {
    MockInfo {
        prompt_bytes: p.text.len(),
        prompt_sha256: hex::encode(p.digest),
    }
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

#[cfg(test)]
mod tests;
