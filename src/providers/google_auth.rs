//! Google service-account auth for Vertex AI: the JWT bearer flow (an RS256 JWT signed
//! with the key file's key, exchanged at its `token_uri` for an access token), with the
//! token cached until a minute before it expires and fetched once however many requests
//! wait for it.

use super::http::{HttpCall, HttpClient, Timeouts};
use super::scrub::Scrubber;
use super::{UpstreamErrorKind, UpstreamFailure};
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token is renewed this long before it expires.
const EARLY: Duration = Duration::from_secs(60);

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
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now.saturating_add(3600),
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key.as_bytes())
            .map_err(|e| e.to_string())?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
    }
}

/// The claims of the JWT a service account asks for a token with (RFC 7523).
#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Access tokens for one service-account file, shared by every request (and kept across
/// config reloads: see [`TokenSource::for_file`]).
pub struct TokenSource {
    path: PathBuf,
    /// The current token and when it must be renewed. The async mutex makes one fetch
    /// serve every request waiting for it.
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// The scrubber of the calls carrying the current token: the config's keys (by the
    /// address of the snapshot's scrubber) plus the token, built once per token.
    scrub: Mutex<Option<TokenScrubber>>,
}

/// The snapshot scrubber it was built over (weak: a freed snapshot's address is never
/// mistaken for a new one), the token, and the scrubber of both.
type TokenScrubber = (Weak<Scrubber>, String, Arc<Scrubber>);

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
                    scrub: Mutex::new(None),
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

    /// The scrubber for a call carrying `token`: `base` (the snapshot's keys) and the
    /// token, so an upstream that echoes the access token has it masked like a key.
    pub fn scrubber(&self, base: &Arc<Scrubber>, token: &str) -> Arc<Scrubber> {
        let mut held = self.scrub.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((b, t, s)) = held.as_ref() {
            if t == token && b.upgrade().is_some_and(|b| Arc::ptr_eq(&b, base)) {
                return s.clone();
            }
        }
        let s = Arc::new(base.with(token));
        *held = Some((Arc::downgrade(base), token.to_string(), s.clone()));
        s
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
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-www-form-urlencoded"),
                )],
                body: Bytes::from(body),
                timeouts: Timeouts {
                    connect: Duration::from_secs(10),
                    read: Duration::from_secs(30),
                    idle: Duration::from_secs(60),
                },
                scrubber: Arc::new(Scrubber::new([])),
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
