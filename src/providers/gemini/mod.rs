//! Google's Gemini API (`kind: gemini`) as a [`Provider`]: chat completions become
//! `generateContent` / `streamGenerateContent?alt=sse`, embeddings `batchEmbedContents`,
//! the key goes in `x-goog-api-key` (never in the URL). Answers, streams and Google's
//! error shapes come back in OpenAI's dialect ([`translate`]); a 429's
//! `RetryInfo.retryDelay` becomes the key's cool-down and the client's `retry-after`, and
//! an invalid key (Google's 400 `API_KEY_INVALID`) counts as the provider refusing the
//! gateway's credentials. Vertex AI takes the same bodies (`super::vertex`).

mod answer;
mod stream;
pub mod translate;
mod wire;

pub use stream::GeminiStream;

use super::api::{key_header, EventTranslator, Outgoing, Provider, Target, WholeAnswer};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use bytes::Bytes;
use http::HeaderName;
use serde_json::Value;

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

    fn default_base_url(&self, _p: &crate::config::provider::ProviderConfig) -> Option<String> {
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
            let g: translate::BatchEmbeddings<'_> = serde_json::from_slice(&body)
                .map_err(|_| GatewayError::UpstreamProtocol("not a Gemini answer".into()))?;
            serde_json::to_vec(&translate::embeddings_response(g, model))
                .map_err(|e| GatewayError::Internal(format!("writing the answer: {e}")))?
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
