//! AWS Bedrock Runtime (`kind: bedrock`) as a [`Provider`]: chat requests become Converse
//! (`POST /model/{modelId}/converse`) or ConverseStream (`/converse-stream`), the model id
//! percent-encoded as one path segment. Requests are signed with SigV4 (service `bedrock`,
//! the `aws-sigv4` crate, over the exact bytes sent) from `access_key_id` /
//! `secret_access_key` / `session_token`, or carry `api_key` as a Bedrock bearer key.
//! Streams arrive in AWS's binary event-stream framing ([`stream`]).

mod answer;
pub mod stream;
pub mod translate;
mod wire;

use super::api::{
    bearer, BodyDecoder, Credentials, EventTranslator, Outgoing, Provider, Target, WholeAnswer,
    Wire,
};
use super::aws_auth::AwsCredentials;
use super::http::{header, HttpClient};
use super::scrub::Scrubber;
use super::{UpstreamErrorKind, UpstreamFailure};
use crate::canonical::{AiRequest, Endpoint};
use crate::config::provider::{BedrockConfig, KindConfig, ProviderConfig};
use crate::errors::GatewayError;
use bytes::Bytes;
use http::HeaderName;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::sync::Arc;
use std::time::SystemTime;

/// What a model id must escape to be one path segment (`:` → `%3A`, `/` → `%2F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug)]
pub struct Bedrock;

#[async_trait::async_trait]
impl Provider for Bedrock {
    fn otel_name(&self) -> Option<&'static str> {
        Some("aws.bedrock")
    }

    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn validate(&self, p: &ProviderConfig, path: &str) -> Vec<crate::config::ConfigProblem> {
        let mut f = super::checks::Found::new(path);
        if let KindConfig::Bedrock(b) = &p.kind {
            super::checks::bedrock(b, &mut f);
        }
        f.problems
    }

    fn default_base_url(&self, p: &ProviderConfig) -> Option<String> {
        let KindConfig::Bedrock(b) = &p.kind else {
            return None;
        };
        Some(format!(
            "https://bedrock-runtime.{}.amazonaws.com",
            b.region
        ))
    }

    fn credentials(&self, p: &ProviderConfig) -> Result<Option<Credentials>, String> {
        let KindConfig::Bedrock(BedrockConfig {
            region,
            keys: Some(keys),
        }) = &p.kind
        else {
            return Ok(None); // a bearer `api_key`
        };
        Ok(Some(Credentials::Aws(AwsCredentials::new(
            region,
            keys.access_key_id.expose(),
            keys.secret_access_key.expose(),
            keys.session_token.as_ref().map(|t| t.expose()),
        ))))
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let body = translate::request(req, t.default_max_tokens)?;
        let action = if req.stream {
            "converse-stream"
        } else {
            "converse"
        };
        Ok(Outgoing {
            path: format!("/model/{}/{action}", utf8_percent_encode(t.model, SEGMENT)),
            // A Bedrock API key is a bearer token; AWS keys sign instead (see `sign`).
            headers: match (t.api_key, t.credentials) {
                (Some(k), None) => bearer(Some(k))?,
                _ => Vec::new(),
            },
            body: Bytes::from(body),
        })
    }

    async fn authorize(
        &self,
        t: &Target<'_>,
        wire: &mut Wire<'_>,
        _http: &Arc<HttpClient>,
        _scrubber: &mut Arc<Scrubber>,
    ) -> Result<(), UpstreamFailure> {
        let Some(Credentials::Aws(aws)) = t.credentials else {
            return Ok(());
        };
        let failed = |e: String| UpstreamFailure::new(UpstreamErrorKind::AuthRejected, e);
        // Signed: what identifies the request (host, content type); others pass unsigned.
        let signed: Vec<(String, String)> =
            std::iter::once(("host".to_string(), wire.authority.to_string()))
                .chain(
                    wire.headers
                        .iter()
                        .filter(|(k, _)| *k == http::header::CONTENT_TYPE)
                        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string()))),
                )
                .collect();
        let url = format!("https://{}{}", wire.authority, wire.path);
        let added = aws
            .sign(&url, &signed, wire.body, SystemTime::now())
            .map_err(|e| failed(format!("SigV4 signing: {e}")))?;
        for (name, value) in added {
            let name = HeaderName::try_from(name)
                .map_err(|e| failed(format!("SigV4 header name: {e}")))?;
            wire.headers.push(header(name, &value).map_err(failed)?);
        }
        Ok(())
    }

    fn stream_translator(&self, model: &str, created: u64) -> Option<Box<dyn EventTranslator>> {
        Some(Box::new(stream::ConverseStream::new(model, created)))
    }

    fn body_decoder(&self, content_type: Option<&str>) -> Option<Box<dyn BodyDecoder>> {
        content_type
            .is_some_and(|c| c.starts_with("application/vnd.amazon.eventstream"))
            .then(|| Box::new(stream::EventStreamDecoder::default()) as Box<dyn BodyDecoder>)
    }

    fn whole_answer(
        &self,
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
        let chat = answer::Converse::parse(&body)?.into_chat(model, created);
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
    fn model_ids_are_one_path_segment() {
        let t = Target {
            model: "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
            api_key: None,
            api_version: None,
            default_max_tokens: 16,
            credentials: None,
        };
        let req = AiRequest::parse(
            Endpoint::ChatCompletions,
            Bytes::from_static(
                br#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream":true}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            Bedrock.outgoing(&t, &req).unwrap().path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc123/converse-stream"
        );
    }
}
