//! Google Vertex AI (`kind: vertex`) as a [`Provider`]: Gemini models on
//! `…/publishers/google/models/{model}:generateContent` (the Gemini translations of
//! [`super::gemini`]), Claude models (`claude-…`) on
//! `…/publishers/anthropic/models/{model}:rawPredict` (the Anthropic translations, the
//! model moved to the URL, `anthropic_version: vertex-2023-10-16`), streams on
//! `:streamGenerateContent?alt=sse` / `:streamRawPredict`. The base URL follows the
//! location (`global`, the `us`/`eu` multi-regions, or a region).
//!
//! Auth is the service-account JWT bearer flow ([`TokenSource`], in
//! [`super::google_auth`]): an RS256 JWT signed with
//! the credentials file's key is exchanged at its `token_uri` for an access token, cached
//! until a minute before it expires, fetched once however many requests wait for it, and
//! dropped when the API answers 401.

use super::anthropic::{request as anthropic_request, Fixed};
use super::api::{
    ChatEvent, Credentials, EventTranslator, Outgoing, Provider, Target, WholeAnswer, Wire,
};
use super::gemini::{self, GeminiStream};
use super::google_auth::TokenSource;
use super::http::{header, HttpClient};
use super::scrub::Scrubber;
use super::{UpstreamErrorKind, UpstreamFailure};
use crate::canonical::{AiRequest, Endpoint};
use crate::config::provider::{KindConfig, ProviderConfig};
use crate::errors::GatewayError;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;

/// The `anthropic_version` Vertex wants in Claude bodies.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The base URL of a project's location.
pub fn base_url(project: &str, location: &str) -> String {
    let host = match location {
        "global" => "https://aiplatform.googleapis.com".to_string(),
        "us" | "eu" => format!("https://aiplatform.{location}.rep.googleapis.com"),
        region => format!("https://{region}-aiplatform.googleapis.com"),
    };
    format!("{host}/v1/projects/{project}/locations/{location}")
}

/// Whether a Vertex model is one of Anthropic's (served through `rawPredict`).
fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

#[derive(Debug)]
pub struct Vertex;

#[async_trait::async_trait]
impl Provider for Vertex {
    fn otel_name(&self) -> Option<&'static str> {
        Some("gcp.vertex_ai")
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn validate(&self, p: &ProviderConfig, path: &str) -> Vec<crate::config::ConfigProblem> {
        let mut f = super::checks::Found::new(path);
        if let KindConfig::Vertex(v) = &p.kind {
            super::checks::vertex(v, &mut f);
        }
        f.problems
    }

    fn default_base_url(&self, p: &ProviderConfig) -> Option<String> {
        let KindConfig::Vertex(v) = &p.kind else {
            return None;
        };
        Some(base_url(v.project.as_deref()?, v.location.as_deref()?))
    }

    fn credentials(&self, p: &ProviderConfig) -> Result<Option<Credentials>, String> {
        let KindConfig::Vertex(v) = &p.kind else {
            return Err("not a vertex provider".into());
        };
        Ok(Some(Credentials::Google(TokenSource::for_file(
            &v.credentials_file,
        ))))
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let model = gemini::model_path(t.model)?;
        let model = model.trim_start_matches("models/");
        let (path, body) = if is_claude(model) {
            // Vertex names the model in the path; the body carries its API version.
            let fixed = Fixed {
                model: None,
                anthropic_version: Some(VERTEX_ANTHROPIC_VERSION),
            };
            let body = anthropic_request(req, fixed, t.default_max_tokens)?;
            let method = if req.stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            (
                format!("/publishers/anthropic/models/{model}:{method}"),
                body,
            )
        } else {
            let (body, method) = gemini::chat_call(req)?;
            (format!("/publishers/google/models/{model}{method}"), body)
        };
        // The bearer token is added per attempt by `authorize` (it may need fetching).
        Ok(Outgoing {
            path,
            headers: Vec::new(),
            body: Bytes::from(body),
        })
    }

    async fn authorize(
        &self,
        t: &Target<'_>,
        wire: &mut Wire<'_>,
        http: &Arc<HttpClient>,
        scrubber: &mut Arc<Scrubber>,
    ) -> Result<(), UpstreamFailure> {
        let Some(Credentials::Google(tokens)) = t.credentials else {
            return Ok(());
        };
        let token = tokens.token(http).await?;
        *scrubber = tokens.scrubber(scrubber, &token);
        let auth = header(http::header::AUTHORIZATION, &format!("Bearer {token}"))
            .map_err(|e| UpstreamFailure::new(UpstreamErrorKind::AuthRejected, e))?;
        wire.headers.push(auth);
        Ok(())
    }

    async fn answered(&self, t: &Target<'_>, status: u16) {
        if let (401, Some(Credentials::Google(tokens))) = (status, t.credentials) {
            tokens.invalidate().await;
        }
    }

    fn stream_translator(&self, model: &str, created: u64) -> Option<Box<dyn EventTranslator>> {
        Some(Box::new(Sniffing {
            model: model.to_string(),
            created,
            inner: None,
        }))
    }

    fn whole_answer(
        &self,
        status: u16,
        body: Bytes,
        model: &str,
        created: u64,
    ) -> Result<WholeAnswer, GatewayError> {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // Claude answers and errors carry a `type`; Gemini's do not.
        if v["type"].is_string() {
            return super::Anthropic.whole_answer(status, body, model, created);
        }
        gemini::whole_answer(status, body, model, created)
    }

    fn reads_error_bodies(&self) -> bool {
        true
    }

    fn error_verdict(&self, status: u16, body: &[u8]) -> Option<(u16, Option<u64>)> {
        gemini::error_verdict(status, body)
    }
}

/// A stream translator that picks Gemini's or Anthropic's by the first event (Claude's
/// events have a `type`).
struct Sniffing {
    model: String,
    created: u64,
    inner: Option<Box<dyn EventTranslator>>,
}

impl EventTranslator for Sniffing {
    fn event(&mut self, data: &[u8]) -> Vec<ChatEvent> {
        let (model, created) = (&self.model, self.created);
        let inner = self.inner.get_or_insert_with(|| {
            // Read as a tree once, for the first event only.
            let first = serde_json::from_slice::<Value>(data).unwrap_or_default();
            if first["type"].is_string() {
                Box::new(super::anthropic::StreamTranslator::new(model, created))
            } else {
                Box::new(GeminiStream::new(model, created))
            }
        });
        inner.event(data)
    }

    fn ended(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.ended())
    }

    fn throttled(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.throttled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_follow_the_location() {
        assert_eq!(
            base_url("p1", "us-central1"),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p1/locations/us-central1"
        );
        assert_eq!(
            base_url("p1", "global"),
            "https://aiplatform.googleapis.com/v1/projects/p1/locations/global"
        );
        assert_eq!(
            base_url("p1", "eu"),
            "https://aiplatform.eu.rep.googleapis.com/v1/projects/p1/locations/eu"
        );
    }

    #[test]
    fn claude_and_gemini_paths_and_bodies() {
        let t = Target {
            model: "claude-sonnet-4@20250514",
            api_key: None,
            api_version: None,
            default_max_tokens: 64,
            credentials: None,
        };
        let req = |stream: bool| {
            AiRequest::parse(
                Endpoint::ChatCompletions,
                Bytes::from(format!(r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"Hi"}}]}}"#)),
            )
            .unwrap()
        };
        let out = Vertex.outgoing(&t, &req(true)).unwrap();
        assert_eq!(
            out.path,
            "/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
        );
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert!(body.get("model").is_none());
        assert_eq!(body["anthropic_version"], VERTEX_ANTHROPIC_VERSION);
        assert_eq!(body["stream"], true);
        let g = Target {
            model: "gemini-2.5-flash",
            ..t
        };
        let out = Vertex.outgoing(&g, &req(false)).unwrap();
        assert_eq!(
            out.path,
            "/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert!(
            out.headers.is_empty(),
            "the bearer token is added by the call core"
        );
    }
}
