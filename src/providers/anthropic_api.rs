//! Anthropic as a [`Provider`]: chat requests translated to the Messages API (see
//! [`super::anthropic`] for the translations), `/v1/messages` passed through, the key in
//! `x-api-key`, `anthropic-version` on every request.

use super::anthropic::{request, Fixed, API_VERSION};
use super::api::{key_header, EventTranslator, Outgoing, Provider, Target, WholeAnswer};
use super::signals::Signals;
use crate::canonical::anthropic::{Event, Usage as AnthropicUsage};
use crate::canonical::{AiRequest, Endpoint, Usage};
use crate::errors::GatewayError;
use bytes::Bytes;
use http::HeaderName;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug)]
pub struct Anthropic;

impl Provider for Anthropic {
    fn otel_name(&self) -> Option<&'static str> {
        Some("anthropic")
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages)
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let mut headers = key_header(HeaderName::from_static("x-api-key"), t.api_key)?;
        let body = if req.endpoint == Endpoint::Messages {
            // Native: passed through, with the betas the client enabled.
            if let Some(beta) = &req.anthropic_beta {
                headers.push((HeaderName::from_static("anthropic-beta"), beta.clone()));
            }
            req.upstream_body(t.model)
        } else {
            let fixed = Fixed {
                model: Some(t.model),
                anthropic_version: None,
            };
            Bytes::from(request(req, fixed, t.default_max_tokens)?)
        };
        Ok(Outgoing {
            path: "/messages".into(),
            headers,
            body,
        })
    }

    fn default_base_url(&self, _p: &crate::config::provider::ProviderConfig) -> Option<String> {
        Some("https://api.anthropic.com/v1".to_string())
    }

    fn signals(&self, headers: &[(String, String)]) -> Signals {
        super::signals::anthropic(headers)
    }

    fn usage(&self, message: &Value) -> Option<Usage> {
        let u = AnthropicUsage::deserialize(message.get("usage")?).unwrap_or_default();
        Some(Usage {
            prompt_tokens: u.prompt(),
            completion_tokens: u.output(),
            total_tokens: None,
        })
    }

    /// `message_start` carries the input tokens, `message_delta` the output so far.
    fn stream_usage(&self, event: &Value, usage: &mut Usage) {
        match Event::of(event) {
            Event::MessageStart { message } => usage.prompt_tokens = message.usage.prompt(),
            Event::MessageDelta { usage: u, .. } => usage.completion_tokens = u.output(),
            _ => {}
        }
    }

    fn default_headers(&self) -> &'static [(HeaderName, http::HeaderValue)] {
        static VERSION: [(HeaderName, http::HeaderValue); 1] = [(
            HeaderName::from_static("anthropic-version"),
            http::HeaderValue::from_static(API_VERSION),
        )];
        &VERSION
    }

    fn stream_translator(&self, model: &str, created: u64) -> Option<Box<dyn EventTranslator>> {
        Some(Box::new(super::anthropic::StreamTranslator::new(
            model, created,
        )))
    }

    fn whole_answer(
        &self,
        status: u16,
        body: Bytes,
        model: &str,
        created: u64,
    ) -> Result<WholeAnswer, GatewayError> {
        if status >= 400 {
            let (status, body) = super::anthropic::error(status, &body);
            return Ok(WholeAnswer {
                status,
                body,
                as_sent: false,
            });
        }
        let chat = super::anthropic_answer::into_chat(
            super::anthropic_answer::parse(&body)?,
            model,
            created,
        );
        let body = serde_json::to_vec(&chat)
            .map_err(|e| GatewayError::Internal(format!("writing the answer: {e}")))?;
        Ok(WholeAnswer {
            status,
            body: Bytes::from(body),
            as_sent: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_is_translated_and_messages_pass_through() {
        let t = Target {
            model: "claude-x",
            api_key: Some("sk-ant"),
            api_version: None,
            default_max_tokens: 64,
            credentials: None,
        };
        let chat = AiRequest::parse(
            Endpoint::ChatCompletions,
            Bytes::from_static(br#"{"model":"c","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#),
        )
        .unwrap();
        let out = Anthropic.outgoing(&t, &chat).unwrap();
        assert_eq!(out.path, "/messages");
        assert_eq!(
            crate::providers::api::plain(&out.headers),
            vec![("x-api-key".into(), "sk-ant".into())]
        );
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "claude-x", "max_tokens": 64, "system": "be brief",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
        let native = AiRequest::parse(
            Endpoint::Messages,
            Bytes::from_static(br#"{"model":"c","max_tokens":5,"messages":[]}"#),
        )
        .unwrap();
        assert_eq!(
            &Anthropic.outgoing(&t, &native).unwrap().body[..],
            br#"{"max_tokens":5,"messages":[],"model":"claude-x"}"#
        );
        assert!(!Anthropic.serves(Endpoint::Embeddings));
    }
}
