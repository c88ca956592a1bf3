//! OpenAI and every OpenAI-compatible server (DeepSeek, vLLM, Ollama, another gateway):
//! the client's body goes upstream with only `model` replaced, on the same path, with the
//! key as a bearer token.

use super::api::{bearer, Outgoing, Provider, Target};
use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;

/// Where `kind: openai` goes when the config names no `base_url`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Debug)]
pub struct OpenAi;

impl Provider for OpenAi {
    fn otel_name(&self) -> Option<&'static str> {
        Some("openai")
    }

    /// OpenAI serves the Responses API itself.
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint != Endpoint::Messages
    }

    fn default_base_url(&self, _p: &crate::config::provider::ProviderConfig) -> Option<String> {
        Some(OPENAI_BASE_URL.to_string())
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        Ok(Outgoing {
            path: req.endpoint.path().into(),
            headers: bearer(t.api_key)?,
            body: req.upstream_body(t.model),
        })
    }
}

/// An OpenAI-compatible server (DeepSeek, vLLM, Ollama, another gateway): OpenAI's
/// request mapping, but it is not assumed to serve the Responses API.
#[derive(Debug)]
pub struct OpenAiCompatible;

impl Provider for OpenAiCompatible {
    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        OpenAi.outgoing(t, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_path_bearer_key_and_only_the_model_replaced() {
        let req = AiRequest::parse(
            Endpoint::ChatCompletions,
            bytes::Bytes::from_static(
                br#"{"model":"public","messages":[{"role":"user","content":"hi"}],"x":1}"#,
            ),
        )
        .unwrap();
        let t = Target {
            model: "gpt-4o-mini",
            api_key: Some("sk-k"),
            api_version: None,
            default_max_tokens: 16,
            credentials: None,
        };
        let out = OpenAi.outgoing(&t, &req).unwrap();
        assert_eq!(out.path, "/chat/completions");
        assert_eq!(
            crate::providers::api::plain(&out.headers),
            vec![("authorization".into(), "Bearer sk-k".into())]
        );
        assert_eq!(
            &out.body[..],
            br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini","x":1}"#
        );
    }
}
