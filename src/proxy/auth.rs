//! Auth phase: the consumer's gateway key (`Authorization: Bearer …`, or the `x-api-key`,
//! `api-key` or APISIX key-auth `apikey` header), or its HTTP Basic credential
//! (`Authorization: Basic …`, APISIX basic-auth) → consumer name.
//! The client's Authorization header is only read here and is never forwarded upstream
//! (upstream requests are built from scratch in [`crate::gateway::upstream`]).

use crate::errors::GatewayError;
use crate::runtime::Runtime;
use pingora::proxy::Session;
use std::sync::Arc;

/// The consumer of this request, or `None` when auth is switched off.
pub fn authenticate(session: &Session, rt: &Runtime) -> Result<Option<Arc<str>>, GatewayError> {
    if !rt.config.auth.enabled {
        return Ok(None);
    }
    let headers = &session.req_header().headers;
    // HTTP Basic (APISIX basic-auth): `Authorization: Basic base64(user:password)`.
    if let Some(encoded) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        })
    {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(GatewayError::InvalidApiKey)?;
        let (user, password) = decoded.split_once(':').ok_or(GatewayError::InvalidApiKey)?;
        return rt
            .consumer_for_basic(user, password)
            .map(Some)
            .ok_or(GatewayError::InvalidApiKey);
    }
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        // Anthropic- and Azure-style clients send their key in these headers, and APISIX
        // key-auth clients in `apikey`.
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()))
        .filter(|k| !k.is_empty())
        .ok_or(GatewayError::MissingApiKey)?;
    rt.consumer_for_key(key)
        .map(Some)
        .ok_or(GatewayError::InvalidApiKey)
}
