//! Auth phase: the consumer's gateway key (`Authorization: Bearer …`, or the `x-api-key`,
//! `api-key` or APISIX key-auth `apikey` header), or its HTTP Basic credential
//! (`Authorization: Basic …`, APISIX basic-auth) → consumer name.
//! The client's Authorization header is only read here and is never forwarded upstream
//! on AI routes (upstream requests are built from scratch in [`crate::gateway::upstream`]);
//! pass-through routes forward it unless `hide_credentials` is set, as APISIX does.
//!
//! Failed attempts are braked per client address and per basic-auth user
//! ([`crate::limits::auth_failures`]): a braked attempt is answered 429 before its
//! credential is checked.

use crate::errors::GatewayError;
use crate::limits::auth_failures::Attempt;
use crate::runtime::Runtime;
use crate::state::AppState;
use pingora::proxy::Session;
use std::sync::Arc;

/// A credential as the client sent it.
enum Credential<'a> {
    Basic(String),
    Key(&'a str),
}

fn credential(session: &Session) -> Result<Credential<'_>, GatewayError> {
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
        return Ok(Credential::Basic(decoded));
    }
    headers
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
        .map(Credential::Key)
        .ok_or(GatewayError::MissingApiKey)
}

/// The consumer of this request, or `None` when auth is switched off.
pub fn authenticate(
    state: &AppState,
    session: &Session,
    rt: &Runtime,
) -> Result<Option<Arc<str>>, GatewayError> {
    if !rt.config.auth.enabled {
        return Ok(None);
    }
    let addr = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let cred = match credential(session) {
        Ok(c) => c,
        Err(GatewayError::InvalidApiKey) => {
            // An undecodable basic credential is a failed attempt too.
            let a = Attempt { addr, user: None };
            throttled(state, &a)?;
            record(state, &a, false);
            return Err(GatewayError::InvalidApiKey);
        }
        Err(e) => return Err(e),
    };
    let (user, password) = match &cred {
        Credential::Basic(decoded) => match decoded.split_once(':') {
            Some((u, p)) => (Some(u), p),
            None => (None, ""),
        },
        Credential::Key(_) => (None, ""),
    };
    let attempt = Attempt { addr, user };
    throttled(state, &attempt)?;
    let found = match &cred {
        Credential::Basic(_) if user.is_none() => None,
        Credential::Basic(_) => rt.consumer_for_basic(user.unwrap_or_default(), password),
        Credential::Key(k) => rt.consumer_for_key(k),
    };
    record(state, &attempt, found.is_some());
    found.map(Some).ok_or(GatewayError::InvalidApiKey)
}

fn now(state: &AppState) -> f64 {
    state.started.elapsed().as_secs_f64()
}

/// Refuse an attempt its address or user must wait for.
fn throttled(state: &AppState, a: &Attempt<'_>) -> Result<(), GatewayError> {
    let wait = state
        .auth_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(a, now(state));
    if wait > 0.0 {
        state.metrics.auth_throttled.inc();
        return Err(GatewayError::AuthThrottled {
            retry_after_ms: (wait * 1000.0).ceil() as u64,
        });
    }
    Ok(())
}

fn record(state: &AppState, a: &Attempt<'_>, ok: bool) {
    if ok && a.user.is_none() {
        return; // nothing to remember of a good key
    }
    let mut t = state
        .auth_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if ok {
        t.succeeded(a);
    } else {
        t.failed(a, now(state));
    }
}
