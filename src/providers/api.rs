//! The [`Provider`] trait: what differs between upstream APIs (request mapping, default
//! headers and base URL, answer and stream translation, error normalisation, usage
//! extraction, rate-limit signals), one implementation per provider module
//! ([`super::openai`], [`super::azure`], [`super::Anthropic`], [`super::mock`]), chosen
//! by [`super::registry`] — the one place that matches on a provider kind. Adding a
//! provider is one module and one line there.

use super::checks::{base_url_required, Found};
use super::http::{header, Header, HttpClient};
use super::scrub::Scrubber;
use super::signals::{self, Signals};
use super::UpstreamFailure;
use crate::canonical::chunk::ChatChunk;
use crate::canonical::{AiRequest, Endpoint, Usage};
use crate::config::provider::ProviderConfig;
use crate::config::ConfigProblem;
use crate::errors::GatewayError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// The deployment facts a provider builds its request from.
pub struct Target<'a> {
    /// The upstream model (or Azure deployment) name.
    pub model: &'a str,
    pub api_key: Option<&'a str>,
    /// Azure's `api-version`, when set.
    pub api_version: Option<&'a str>,
    /// Completion tokens to ask for when the client set none (APIs that require it).
    pub default_max_tokens: u64,
    /// Cloud credentials the provider signs with (Bedrock's AWS keys).
    pub credentials: Option<&'a Credentials>,
}

/// A provider's cloud credentials, built once per config snapshot by
/// [`Provider::credentials`].
#[derive(Debug)]
pub enum Credentials {
    /// AWS keys (Bedrock): requests are signed with SigV4.
    Aws(super::aws_auth::AwsCredentials),
    /// A Google service account (Vertex AI): requests carry an OAuth2 access token.
    Google(Arc<super::google_auth::TokenSource>),
}

/// An upstream in the gateway's process (the mock): the call core hands it the request
/// where another provider's goes over HTTP, and reads its answer the same way.
#[async_trait::async_trait]
pub trait InProcess: Send + Sync + std::fmt::Debug {
    /// The answer to `req` for the upstream `model`.
    async fn call(&self, req: &AiRequest, model: &str) -> super::UpstreamResponse;
}

/// Turns an upstream body in a binary framing into SSE events (Bedrock's event stream),
/// so the stream phase reads every provider's stream alike.
pub trait BodyDecoder: Send {
    /// The SSE events (each ending with its blank line) completed by `chunk`.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, UpstreamFailure>;
    /// The body ended: an error when it ended inside a frame.
    fn finish(&mut self) -> Result<(), UpstreamFailure>;
}

/// A request as it goes on the wire, for providers that sign it.
pub struct Wire<'a> {
    /// `host[:port]`, as sent in `Host`.
    pub authority: &'a str,
    /// The whole path (base prefix included) and query.
    pub path: &'a str,
    pub headers: &'a mut Vec<Header>,
    pub body: &'a [u8],
}

/// What is sent upstream: the path after the base URL, the request's own headers (its
/// credentials; for a native Messages call the client's `anthropic-beta`) and the body.
pub struct Outgoing {
    pub path: String,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

/// One upstream API.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Its `gen_ai.provider.name` in OpenTelemetry's GenAI semantic conventions; `None`
    /// (an OpenAI-compatible server, which could be anything; the mock): the provider's
    /// name in the config.
    fn otel_name(&self) -> Option<&'static str> {
        None
    }

    /// Whether it serves requests on `endpoint` itself (else the call core sends it the
    /// chat form of a surface request: see `crate::surfaces`).
    fn serves(&self, endpoint: Endpoint) -> bool {
        !matches!(endpoint, Endpoint::Messages | Endpoint::Responses)
    }

    /// The request for a deployment: path, auth headers and body (the client's body with
    /// `model` replaced, or translated). A body that cannot be translated is the client's
    /// error (400), not a reason to fail over.
    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError>;

    /// The base URL when the config names none (`None`: the config must name one); it may
    /// depend on the provider's settings (Bedrock's region, Vertex's project and location).
    fn default_base_url(&self, _p: &ProviderConfig) -> Option<String> {
        None
    }

    /// Its kind's own checks of a provider's settings (`path`: `providers[i]`), each
    /// problem with its field's path. By default a base URL is required when the kind has
    /// no default one.
    fn validate(&self, p: &ProviderConfig, path: &str) -> Vec<ConfigProblem> {
        let mut f = Found::new(path);
        base_url_required(p, self.default_base_url(p), &mut f);
        f.problems
    }

    /// The cloud credentials its requests need, from its settings (checked by validation).
    fn credentials(&self, _p: &ProviderConfig) -> Result<Option<Credentials>, String> {
        Ok(None)
    }

    /// Authorise a request as it goes on the wire, after every other header is set; the
    /// call core calls it only for a provider with cloud credentials ([`Provider::credentials`]:
    /// a key travels in [`Outgoing::auth`]). Bedrock signs with SigV4; Vertex adds an OAuth2
    /// access token, fetched when needed, and masks it in what is read back (`scrubber`).
    async fn authorize(
        &self,
        _t: &Target<'_>,
        _wire: &mut Wire<'_>,
        _http: &Arc<HttpClient>,
        _scrubber: &mut Arc<Scrubber>,
    ) -> Result<(), UpstreamFailure> {
        Ok(())
    }

    /// The upstream refused (`status` ≥ 400) a request this provider authorised with its
    /// credentials (Vertex: a 401 drops the cached token, so the next attempt fetches a
    /// fresh one).
    async fn answered(&self, _t: &Target<'_>, _status: u16) {}

    /// For a provider that answers in the gateway's process (the mock), its upstream for
    /// these settings; `None`: its requests go over HTTP.
    fn in_process(&self, _p: &ProviderConfig) -> Option<Arc<dyn InProcess>> {
        None
    }

    /// What a response's rate-limit headers say about the key.
    fn signals(&self, headers: &[(String, String)]) -> Signals {
        signals::openai(headers)
    }

    /// Token usage in a whole answer of its own API, as relayed untranslated to a client
    /// of that API (`/v1/messages`). Translated answers are OpenAI's and read with
    /// [`Usage::from_openai`].
    fn usage(&self, answer: &serde_json::Value) -> Option<Usage> {
        Usage::from_openai(answer.get("usage")?)
    }

    /// What one event of its own stream API says about usage, added to `usage` (chat
    /// chunks carry `usage`; Responses' terminal events carry `response.usage`).
    fn stream_usage(&self, event: &serde_json::Value, usage: &mut Usage) {
        let u = event
            .get("usage")
            .or(event.get("response").and_then(|r| r.get("usage")));
        if let Some(u) = u.and_then(Usage::from_openai) {
            *usage = u;
        }
    }

    /// A decoder for a successful answer's body in a binary framing (by its content
    /// type); the stream phase then sees SSE events.
    fn body_decoder(&self, _content_type: Option<&str>) -> Option<Box<dyn BodyDecoder>> {
        None
    }

    /// Whether its error answers must be read before the call core classifies them (the
    /// body says what the status does not: see [`Provider::error_verdict`]).
    fn reads_error_bodies(&self) -> bool {
        false
    }

    /// For a provider that [`reads_error_bodies`](Provider::reads_error_bodies): the
    /// status and retry-after seconds to classify an error answer by (Gemini: an invalid
    /// key is a 400 that means 401; a 429's retry delay is in the body). `None`: as sent.
    fn error_verdict(&self, _status: u16, _body: &[u8]) -> Option<(u16, Option<u64>)> {
        None
    }

    /// Headers every request carries unless the provider's `headers` set them.
    fn default_headers(&self) -> &'static [(HeaderName, HeaderValue)] {
        &[]
    }

    /// A translator of its event streams for OpenAI clients (`None`: they already speak
    /// OpenAI's and pass through).
    fn stream_translator(&self, _model: &str, _created: u64) -> Option<Box<dyn EventTranslator>> {
        None
    }

    /// A whole (non-stream) answer as an OpenAI client sees it: errors in the OpenAI
    /// shape, answers translated when the provider speaks another API. `Err`: the body is
    /// not an answer of this API (a protocol error).
    fn whole_answer(
        &self,
        status: u16,
        body: Bytes,
        _model: &str,
        _created: u64,
    ) -> Result<WholeAnswer, GatewayError> {
        Ok(openai_whole_answer(status, body))
    }
}

/// One event of an OpenAI chat stream, typed until it is written: a surface (Messages,
/// Responses) reads a translated chunk as it is, without parsing it back.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// An event as the upstream sent it (an OpenAI-dialect stream passed through).
    Raw(Bytes),
    /// A `chat.completion.chunk` object.
    Chunk(ChatChunk),
    /// An OpenAI error body: the stream's last event.
    Error(Bytes),
    /// `data: [DONE]`.
    Done,
}

impl ChatEvent {
    /// The event as SSE (`data: …` and its blank line).
    pub fn to_sse(&self) -> Bytes {
        match self {
            ChatEvent::Raw(b) => b.clone(),
            ChatEvent::Chunk(c) => Bytes::from(c.to_sse()),
            ChatEvent::Error(body) => Bytes::from([b"data: ".as_slice(), body, b"\n\n"].concat()),
            ChatEvent::Done => Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }
}

/// Turns a provider's stream events into OpenAI `chat.completion.chunk` events.
pub trait EventTranslator: Send {
    /// The events to send for one upstream event (its `data`, JSON text read here once).
    fn event(&mut self, data: &[u8]) -> Vec<ChatEvent>;
    /// Whether the provider's stream has ended (its last event, or an error).
    fn ended(&self) -> bool;
    /// Whether it ended with the provider's rate-limit error (Bedrock's
    /// `throttlingException` mid-stream): the key is over its limits, as a 429 says.
    fn throttled(&self) -> bool {
        false
    }
}

/// A whole answer in the OpenAI dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeAnswer {
    pub status: u16,
    pub body: Bytes,
    /// The upstream's own answer, passed on as it is (its `content-type` is kept).
    pub as_sent: bool,
}

/// An OpenAI-dialect answer: errors normalised to the four-key shape (Azure's code-only
/// errors included), successes passed on without the blank keep-alive lines DeepSeek puts
/// before slow JSON answers.
pub fn openai_whole_answer(status: u16, body: Bytes) -> WholeAnswer {
    if status >= 400 {
        return WholeAnswer {
            status,
            body: normalise_error(status, &body),
            as_sent: false,
        };
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    WholeAnswer {
        status,
        body: body.slice(start..),
        as_sent: true,
    }
}

/// An upstream error body in the OpenAI shape with all four keys (provider keys were
/// already masked as the bytes were read: see [`super::scrub`]).
pub fn normalise_error(status: u16, body: &[u8]) -> Bytes {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let err = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let text = String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned();
    let message = err["message"].as_str().map(str::to_string).unwrap_or(text);
    let default_type = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let etype = err["type"].as_str().unwrap_or(default_type);
    let param = err["param"].as_str();
    let code = match &err["code"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    crate::errors::openai_error_body(&message, etype, param, code.as_deref())
}

/// A provider's error answer as the OpenAI error a client gets, with `status`: 401 →
/// `invalid_api_key`, 429 → type `requests` and `rate_limit_exceeded`, 5xx →
/// `server_error`, others `invalid_request_error`. `message` falls back to the start of
/// the provider's body.
pub fn error_answer(status: u16, message: Option<&str>, body: &[u8]) -> WholeAnswer {
    let text = message
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned());
    let (etype, code) = match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        429 => ("requests", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    WholeAnswer {
        status,
        body: crate::errors::openai_error_body(&text, etype, None, code),
        as_sent: false,
    }
}

/// `Authorization: Bearer <key>`, when there is a key.
pub fn bearer(key: Option<&str>) -> Result<Vec<Header>, GatewayError> {
    key_header(
        http::header::AUTHORIZATION,
        key.map(|k| ["Bearer ", k].concat()).as_deref(),
    )
}

/// The header `name: key`, when there is a key (a key that is no valid header value is
/// the operator's error, named without the key).
pub fn key_header(name: HeaderName, key: Option<&str>) -> Result<Vec<Header>, GatewayError> {
    key.map(|k| header(name, k).map_err(GatewayError::Internal))
        .transpose()
        .map(|h| h.into_iter().collect())
}

/// Headers as plain text pairs (for tests and snapshots).
pub fn plain(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_azure_errors() {
        let b = normalise_error(
            429,
            br#"{"error":{"code":"429","message":"Requests ... exceeded token rate limit"}}"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "429");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        let b = normalise_error(502, b"<html>bad gateway</html>");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn whole_openai_answers_lose_keep_alive_blank_lines() {
        let a = openai_whole_answer(200, Bytes::from_static(b"\n\n  {\"id\":1}"));
        assert_eq!(
            a,
            WholeAnswer {
                status: 200,
                body: Bytes::from_static(b"{\"id\":1}"),
                as_sent: true
            }
        );
        assert!(!openai_whole_answer(500, Bytes::from_static(b"{}")).as_sent);
    }
}
