//! The [`Provider`] trait: what differs between upstream APIs, one implementation per
//! provider module ([`super::openai`], [`super::azure`], [`super::Anthropic`]), chosen
//! by [`super::registry`] — the one place that matches on a provider kind. Adding a
//! provider is one module and one line there.

use crate::canonical::{AiRequest, Endpoint};
use crate::errors::GatewayError;
use bytes::Bytes;

/// The deployment facts a provider builds its request from.
pub struct Target<'a> {
    /// The upstream model (or Azure deployment) name.
    pub model: &'a str,
    pub api_key: Option<&'a str>,
    /// Azure's `api-version`, when set.
    pub api_version: Option<&'a str>,
    /// Completion tokens to ask for when the client set none (APIs that require it).
    pub default_max_tokens: u64,
}

/// What is sent upstream: the path after the base URL, auth headers and the body.
pub struct Outgoing {
    pub path: String,
    pub auth: Vec<(String, String)>,
    pub body: Bytes,
}

/// The wire dialect of a provider's answers, which decides how they reach an OpenAI
/// client (passed on, or translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    /// Anthropic's Messages API (answers and event streams are translated).
    AnthropicMessages,
}

/// One upstream API.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Whether it serves requests on `endpoint`.
    fn serves(&self, endpoint: Endpoint) -> bool {
        endpoint != Endpoint::Messages
    }

    /// The request for a deployment: path, auth headers and body (the client's body with
    /// `model` replaced, or translated). A body that cannot be translated is the client's
    /// error (400), not a reason to fail over.
    fn outgoing(&self, t: &Target<'_>, req: &AiRequest) -> Result<Outgoing, GatewayError>;

    /// Headers every request carries unless the provider's `headers` set them.
    fn default_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The dialect its answers are written in.
    fn dialect(&self) -> Dialect {
        Dialect::OpenAi
    }
}

/// `Authorization: Bearer <key>`, when there is a key.
pub fn bearer(key: Option<&str>) -> Vec<(String, String)> {
    key.map(|k| vec![("authorization".to_string(), format!("Bearer {k}"))])
        .unwrap_or_default()
}
