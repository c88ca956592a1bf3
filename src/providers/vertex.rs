//! Google Vertex AI (`kind: vertex`) as a [`Provider`]: Gemini models on
//! `…/publishers/google/models/{model}:generateContent` (the Gemini translations of
//! [`super::gemini`]), Claude models (`claude-…`) on
//! `…/publishers/anthropic/models/{model}:rawPredict` (the Anthropic translations, the
//! model moved to the URL, `anthropic_version: vertex-2023-10-16`), streams on
//! `:streamGenerateContent?alt=sse` / `:streamRawPredict`. The base URL follows the
//! location (`global`, the `us`/`eu` multi-regions, or a region).
//!
//! Auth is the service-account JWT bearer flow ([`TokenSource`]): an RS256 JWT signed with
//! the credentials file's key is exchanged at its `token_uri` for an access token, cached
//! until a minute before it expires, fetched once however many requests wait for it, and
//! dropped when the API answers 401.

use super::anthropic::request as anthropic_request;
use super::api::{Credentials, EventTranslator, Outgoing, Provider, Target, WholeAnswer};
use super::gemini::{self, GeminiStream};
use super::http::{HttpCall, HttpClient, Timeouts};
use super::{UpstreamErrorKind, UpstreamFailure};
use crate::canonical::{AiRequest, Endpoint};
use crate::config::schema::ProviderConfig;
use crate::errors::GatewayError;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `anthropic_version` Vertex wants in Claude bodies.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token is renewed this long before it expires.
const EARLY: Duration = Duration::from_secs(60);

/// The base URL of a project's location.
pub fn base_url(project: &str, location: &str) -> String {
    let host = match location {
        "global" => "https://aiplatform.googleapis.com".to_string(),
        "us" | "eu" => format!("https://aiplatform.{location}.rep.googleapis.com"),
        region => format!("https://{region}-aiplatform.googleapis.com"),
    };
    format!("{host}/v1/projects/{project}/locations/{location}")
}

/// A service-account key file's fields the flow uses.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl ServiceAccount {
    /// Parse a key file's text (validation calls this too, with the file's path for errors).
    pub fn parse(text: &str) -> Result<ServiceAccount, String> {
        let sa: ServiceAccount =
            serde_json::from_str(text).map_err(|e| format!("not a service-account key: {e}"))?;
        jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key.as_bytes())
            .map_err(|e| format!("private_key: {e}"))?;
        crate::url::BaseUrl::parse(&sa.token_uri).map_err(|e| format!("token_uri: {e}"))?;
        Ok(sa)
    }

    /// The signed JWT asking for a token, issued at `now` (unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        let claims = json!({"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
                            "iat": now, "exp": now + 3600});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key.as_bytes())
            .map_err(|e| e.to_string())?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
    }
}

/// Access tokens for one service-account file, shared by every request (and kept across
/// config reloads: see [`TokenSource::for_file`]).
pub struct TokenSource {
    path: PathBuf,
    /// The current token and when it must be renewed. The async mutex makes one fetch
    /// serve every request waiting for it.
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn failure(detail: String) -> UpstreamFailure {
    UpstreamFailure::new(UpstreamErrorKind::AuthRejected, detail)
}

impl TokenSource {
    /// The source of `path`, one per file for the process.
    pub fn for_file(path: &Path) -> Arc<TokenSource> {
        static ALL: OnceLock<Mutex<HashMap<PathBuf, Arc<TokenSource>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        all.entry(path.to_path_buf())
            .or_insert_with(|| {
                Arc::new(TokenSource {
                    path: path.to_path_buf(),
                    token: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// A valid access token, fetched when there is none or it is about to expire.
    pub async fn token(&self, http: &Arc<HttpClient>) -> Result<String, UpstreamFailure> {
        let mut held = self.token.lock().await;
        if let Some((t, renew_at)) = held.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(t.clone());
            }
        }
        let (token, lifetime) = self.fetch(http).await?;
        *held = Some((
            token.clone(),
            Instant::now() + lifetime.saturating_sub(EARLY),
        ));
        Ok(token)
    }

    /// Forget the token (the API refused it).
    pub async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch(&self, http: &Arc<HttpClient>) -> Result<(String, Duration), UpstreamFailure> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| failure(format!("credentials_file {}: {e}", self.path.display())))?;
        let sa = ServiceAccount::parse(&text).map_err(failure)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let jwt = sa.assertion(now).map_err(failure)?;
        let base = crate::url::BaseUrl::parse(&sa.token_uri).map_err(failure)?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
        );
        let mut resp = http
            .send(HttpCall {
                base: &base,
                path: "",
                headers: vec![(
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                )],
                body: Bytes::from(body),
                timeouts: Timeouts {
                    connect: Duration::from_secs(10),
                    read: Duration::from_secs(30),
                    idle: Duration::from_secs(60),
                },
                scrubber: Arc::new(super::scrub::Scrubber::new([])),
            })
            .await?;
        let answer = resp.body.read_all(64 * 1024).await?;
        let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        match (resp.status, v["access_token"].as_str()) {
            (200, Some(t)) => Ok((
                t.to_string(),
                Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600)),
            )),
            (status, _) => Err(failure(format!(
                "token endpoint answered {status}: {}",
                v["error"].as_str().unwrap_or("no access_token")
            ))),
        }
    }
}

/// Whether a Vertex model is one of Anthropic's (served through `rawPredict`).
fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

#[derive(Debug)]
pub struct Vertex;

impl Provider for Vertex {
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::ChatCompletions
    }

    fn default_base_url(&self, p: &ProviderConfig) -> Option<String> {
        Some(base_url(p.project.as_deref()?, p.location.as_deref()?))
    }

    fn credentials(&self, p: &ProviderConfig) -> Result<Option<Credentials>, String> {
        let path = p
            .credentials_file
            .as_deref()
            .ok_or("credentials_file is required")?;
        Ok(Some(Credentials::Google(TokenSource::for_file(path))))
    }

    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError> {
        let model = gemini::model_path(t.model)?;
        let model = model.trim_start_matches("models/");
        let (path, body) = if is_claude(model) {
            let mut body = anthropic_request(&req.json()?, model, t.default_max_tokens)?;
            if let Some(o) = body.as_object_mut() {
                o.remove("model");
                o.insert("anthropic_version".into(), json!(VERTEX_ANTHROPIC_VERSION));
            }
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
        // The bearer token is added per request by the call core (it may need fetching).
        Ok(Outgoing {
            path,
            auth: Vec::new(),
            body: Bytes::from(body.to_string()),
        })
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
    fn event(&mut self, data: &Value) -> Vec<Bytes> {
        let (model, created) = (&self.model, self.created);
        let inner = self.inner.get_or_insert_with(|| {
            if data["type"].is_string() {
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
            out.auth.is_empty(),
            "the bearer token is added by the call core"
        );
    }
}
