//! Azure OpenAI: with `api_version`, the classic `/openai/deployments/{deployment}/…?
//! api-version=…` URLs (the deployment's `model` is the Azure deployment name); without
//! it, the `/openai/v1/…` API. The key goes in `api-key`.

use super::api::{key_header, Outgoing, Provider, Target};
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use http::HeaderName;

#[derive(Debug)]
pub struct Azure;

/// Characters escaped in a URL path segment (an Azure deployment name).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

impl Provider for Azure {
    fn otel_name(&self) -> Option<&'static str> {
        Some("azure.ai.openai")
    }

    fn validate(
        &self,
        p: &crate::config::provider::ProviderConfig,
        path: &str,
    ) -> Vec<crate::config::ConfigProblem> {
        let mut f = super::checks::Found::new(path);
        super::checks::base_url_required(p, None, &mut f);
        if let crate::config::provider::KindConfig::Azure { api_version } = &p.kind {
            super::checks::azure(api_version.as_deref(), &mut f);
        }
        f.problems
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let path = match t.api_version {
            // Classic: the deployment in the path picks the model.
            Some(v) => format!(
                "/openai/deployments/{}{}?api-version={v}",
                percent_encoding::utf8_percent_encode(t.model, PATH_SEGMENT),
                req.endpoint.path()
            ),
            None => format!("/openai/v1{}", req.endpoint.path()),
        };
        Ok(Outgoing {
            path,
            headers: key_header(HeaderName::from_static("api-key"), t.api_key)?,
            body: req.upstream_body(t.model),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Endpoint;

    #[test]
    fn classic_and_v1_urls_with_the_api_key_header() {
        let req = AiRequest::parse(
            Endpoint::Embeddings,
            bytes::Bytes::from_static(br#"{"model":"m","input":"x"}"#),
        )
        .unwrap();
        let mut t = Target {
            model: "my deploy",
            api_key: Some("az-key"),
            api_version: Some("2024-10-21"),
            default_max_tokens: 16,
            credentials: None,
        };
        let out = Azure.outgoing(&t, &req).unwrap();
        assert_eq!(
            out.path,
            "/openai/deployments/my%20deploy/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            crate::providers::api::plain(&out.headers),
            vec![("api-key".into(), "az-key".into())]
        );
        assert_eq!(&out.body[..], br#"{"input":"x","model":"my deploy"}"#);
        t.api_version = None;
        assert_eq!(
            Azure.outgoing(&t, &req).unwrap().path,
            "/openai/v1/embeddings"
        );
    }
}
