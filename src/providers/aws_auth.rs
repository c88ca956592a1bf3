//! AWS request signing (SigV4) for Bedrock, with the `aws-sigv4` crate: the keys of a
//! provider and the headers that sign one request's exact bytes.

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
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
}
