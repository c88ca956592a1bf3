//! Providers: how one deployment's request is carried out.
//!
//! - [`http`]: OpenAI and OpenAI-compatible upstreams over HTTP(S), driven by the gateway
//!   itself through pingora-core's pooled connectors (so bodies of any size go through and
//!   a 429/5xx can fail over to the next deployment; see docs/internals.md).
//! - [`mock`]: the built-in mock that answers without an upstream.
//! - [`api`]: the [`Provider`] trait (request mapping, default headers, whole-answer and stream translation),
//!   implemented by [`openai`], [`azure`] and [`Anthropic`] ([`anthropic`] holds its
//!   translations), chosen by [`registry`].
//!
//! Both produce an [`UpstreamResponse`] whose body is read chunk by chunk, so the stream
//! phase treats a mock exactly like a real upstream.

pub mod anthropic;
mod anthropic_answer;
#[path = "anthropic_api.rs"]
mod anthropic_api;
pub mod api;
pub mod aws_auth;
pub mod azure;
pub mod bedrock;
pub mod chat_wire;
pub mod checks;
pub mod gemini;
pub mod google_auth;
pub mod http;
pub mod mock;
pub mod openai;
pub mod scrub;
pub mod signals;
#[cfg(test)]
mod snapshot_tests;
pub mod vertex;

pub use anthropic_api::Anthropic;
pub use api::{EventTranslator, Provider};

use crate::config::schema::ProviderKind;
use bytes::Bytes;

/// The checks of a provider's kind-specific settings (`path`: `providers[i]`), for
/// `config::validate`, which knows no provider: its kind's own checks of the values
/// (which settings a kind takes is the typed config's: `config::provider`).
pub fn check(
    p: &crate::config::provider::ProviderConfig,
    path: &str,
) -> Vec<crate::config::ConfigProblem> {
    registry(p.kind.kind()).validate(p, path)
}

/// The provider implementation of a kind: the one place that matches on it.
pub fn registry(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Openai => &openai::OpenAi,
        ProviderKind::OpenaiCompatible => &openai::OpenAiCompatible,
        ProviderKind::Azure => &azure::Azure,
        ProviderKind::Anthropic => &Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
        ProviderKind::Bedrock => &bedrock::Bedrock,
        ProviderKind::Vertex => &vertex::Vertex,
        ProviderKind::Mock => &mock::Mock,
    }
}

/// Why one upstream attempt failed (bounded set: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Status429,
    Status5xx,
    /// 402: the key has no credit left (DeepSeek).
    NoCredit,
    /// 401/403: the provider refused the gateway's own credentials for this key.
    AuthRejected,
    StreamCut,
    Protocol,
}

impl UpstreamErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Status429 => "status_429",
            UpstreamErrorKind::Status5xx => "status_5xx",
            UpstreamErrorKind::NoCredit => "no_credit",
            UpstreamErrorKind::AuthRejected => "auth_rejected",
            UpstreamErrorKind::StreamCut => "stream_cut",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

/// A failed attempt. `detail` is for logs and never holds a key.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    pub kind: UpstreamErrorKind,
    pub detail: String,
}

impl UpstreamFailure {
    pub fn new(kind: UpstreamErrorKind, detail: impl Into<String>) -> Self {
        UpstreamFailure {
            kind,
            detail: detail.into(),
        }
    }
}

/// An upstream's answer: status line facts and a body read incrementally.
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    /// The provider's rate-limit headers (read by [`Provider::signals`]).
    pub ratelimit_headers: signals::RateLimitHeaders,
    pub body: UpstreamBody,
}

impl UpstreamResponse {
    pub fn is_event_stream(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/event-stream"))
    }
}

/// The body of an [`UpstreamResponse`].
pub enum UpstreamBody {
    /// A body generated in process (mock JSON).
    Full(Option<Bytes>),
    /// A paced event stream generated in process (mock SSE).
    Mock(mock::MockStream),
    /// A body read from an upstream connection.
    Http(http::HttpBody),
    /// A body in a binary framing, decoded into SSE events as it is read.
    Decoded(Box<DecodedBody>),
}

/// A body and the decoder of its framing (see [`api::BodyDecoder`]).
pub struct DecodedBody {
    pub inner: UpstreamBody,
    pub decoder: Box<dyn api::BodyDecoder>,
    pub ready: std::collections::VecDeque<Bytes>,
}

impl UpstreamBody {
    /// The next chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamFailure> {
        match self {
            UpstreamBody::Full(b) => Ok(b.take()),
            UpstreamBody::Mock(m) => m.next_chunk().await,
            UpstreamBody::Http(h) => h.next_chunk().await,
            UpstreamBody::Decoded(d) => loop {
                if let Some(event) = d.ready.pop_front() {
                    return Ok(Some(event));
                }
                match Box::pin(d.inner.next_chunk()).await? {
                    Some(chunk) => d.ready.extend(d.decoder.feed(&chunk)?),
                    None => {
                        d.decoder.finish()?;
                        return Ok(None);
                    }
                }
            },
        }
    }

    /// Read the rest of the body, failing past `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, UpstreamFailure> {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = self.next_chunk().await? {
            if buf.len() + chunk.len() > limit {
                return Err(UpstreamFailure::new(
                    UpstreamErrorKind::Protocol,
                    format!("response body larger than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}
