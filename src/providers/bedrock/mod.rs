//! AWS Bedrock Runtime (`kind: bedrock`) as a [`Provider`]: chat requests become Converse
//! (`POST /model/{modelId}/converse`) or ConverseStream (`/converse-stream`), the model id
//! percent-encoded as one path segment. Requests are signed with SigV4 (service `bedrock`,
//! the `aws-sigv4` crate, over the exact bytes sent) from `access_key_id` /
//! `secret_access_key` / `session_token`, or carry `api_key` as a Bedrock bearer key.
//! Streams arrive in AWS's binary event-stream framing ([`stream`]).

pub mod stream;
pub mod translate;

use super::api::{
    BodyDecoder, Credentials, EventTranslator, Outgoing, Provider, Target, WholeAnswer, Wire,
};
use crate::canonical::{AiRequest, Endpoint};
use crate::config::schema::ProviderConfig;
use crate::errors::GatewayError;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::SystemTime;

/// AWS keys a Bedrock provider signs with.
pub struct AwsCredentials {
    pub region: String,
    identity: Identity,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    pub fn new(region: &str, key_id: &str, secret: &str, token: Option<&str>) -> AwsCredentials {
        let creds = aws_credential_types::Credentials::new(
            key_id,
            secret,
            token.map(str::to_string),
            None,
            "gateway.yaml",
        );
        AwsCredentials {
            region: region.to_string(),
            identity: creds.into(),
        }
    }

    /// SigV4 headers (`x-amz-date`, `x-amz-security-token`, `authorization`) for a Bedrock
    /// request to `url` with `headers` (all of them signed) and `body`, at `time`.
    pub fn sign(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        self.sigv4("POST", "bedrock", url, headers, body, time)
    }

    fn sigv4(
        &self,
        method: &str,
        service: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let (added, _) = instructions.into_parts();
        Ok(added
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }
}

/// What a model id must escape to be one path segment (`:` → `%3A`, `/` → `%2F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug)]
pub struct Bedrock;

impl Provider for Bedrock {
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn default_base_url(&self, p: &ProviderConfig) -> Option<String> {
        p.region
            .as_ref()
            .map(|r| format!("https://bedrock-runtime.{r}.amazonaws.com"))
    }

    fn credentials(&self, p: &ProviderConfig) -> Result<Option<Credentials>, String> {
        let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) else {
            return Ok(None); // a bearer `api_key`, or nothing
        };
        let region = p.region.as_deref().ok_or("region is required")?;
        Ok(Some(Credentials::Aws(AwsCredentials::new(
            region,
            id.expose(),
            secret.expose(),
            p.session_token.as_ref().map(|t| t.expose()),
        ))))
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let body = translate::request(&req.json()?, t.default_max_tokens)?;
        let action = if req.stream {
            "converse-stream"
        } else {
            "converse"
        };
        Ok(Outgoing {
            path: format!("/model/{}/{action}", utf8_percent_encode(t.model, SEGMENT)),
            // A Bedrock API key is a bearer token; AWS keys sign instead (see `sign`).
            auth: match (t.api_key, t.credentials) {
                (Some(k), None) => vec![("authorization".to_string(), format!("Bearer {k}"))],
                _ => Vec::new(),
            },
            body: Bytes::from(body.to_string()),
        })
    }

    fn sign(&self, t: &Target<'_>, wire: &mut Wire<'_>) -> Result<(), GatewayError> {
        let Some(Credentials::Aws(aws)) = t.credentials else {
            return Ok(());
        };
        // Signed: what identifies the request (host, content type); others pass unsigned.
        let signed: Vec<(String, String)> =
            std::iter::once(("host".to_string(), wire.authority.to_string()))
                .chain(
                    wire.headers
                        .iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                        .cloned(),
                )
                .collect();
        let url = format!("https://{}{}", wire.authority, wire.path);
        let added = aws
            .sign(&url, &signed, wire.body, SystemTime::now())
            .map_err(|e| GatewayError::Internal(format!("SigV4 signing: {e}")))?;
        wire.headers.extend(added);
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
        let c: serde_json::Value = serde_json::from_slice(&body)
            .ok()
            .filter(|c: &serde_json::Value| c.get("output").is_some())
            .ok_or_else(|| GatewayError::UpstreamProtocol("not a Converse answer".into()))?;
        Ok(WholeAnswer {
            status,
            body: Bytes::from(translate::response(&c, model, created).to_string()),
            as_sent: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// 20150830T123600Z, the AWS test suite's date.
    fn when() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn auth(headers: &[(String, String)]) -> String {
        headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone()
    }

    #[test]
    fn aws_test_suite_vectors() {
        let plain = AwsCredentials::new("us-east-1", ID, SECRET, None);
        let host = h(&[("host", "example.amazonaws.com")]);
        let get = |c: &AwsCredentials| {
            c.sigv4(
                "GET",
                "service",
                "https://example.amazonaws.com/",
                &host,
                b"",
                when(),
            )
            .unwrap()
        };
        // get-vanilla
        assert_eq!(
            auth(&get(&plain)),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        // get-vanilla-with-session-token: the token is sent and signed.
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let temporary = AwsCredentials::new("us-east-1", ID, SECRET, Some(token));
        let added = get(&temporary);
        assert!(added.contains(&("x-amz-security-token".to_string(), token.to_string())));
        assert!(auth(&added).ends_with(
            "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        ));
        // post-x-www-form-urlencoded: the body's hash and the content type are signed.
        let form = h(&[
            ("host", "example.amazonaws.com"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        let added = plain
            .sigv4(
                "POST",
                "service",
                "https://example.amazonaws.com/",
                &form,
                b"Param1=value1",
                when(),
            )
            .unwrap();
        assert!(auth(&added).ends_with(
            "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        ));
    }

    #[test]
    fn bedrock_converse_is_signed_as_botocore_does() {
        // The reference's worked example (§c.5), confirmed with botocore: the model id's
        // `%3A` is encoded again (`%253A`) in the canonical request.
        let creds = AwsCredentials::new("us-east-1", ID, SECRET, None);
        let body = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":64}}"#;
        let added = creds
            .sign(
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                &h(&[("host", "bedrock-runtime.us-east-1.amazonaws.com"), ("content-type", "application/json")]),
                body,
                when(),
            )
            .unwrap();
        assert_eq!(
            auth(&added),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=4e695fb0b2a4354d996741d54fc5502cf897a33edb0f41a5a880045bb55a5eca"
        );
        assert!(added.contains(&("x-amz-date".to_string(), "20150830T123600Z".to_string())));
    }

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
