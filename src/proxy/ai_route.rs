//! AI routes: a model served at its own paths, as an APISIX ai-proxy / ai-proxy-multi
//! route is. The body says which API it is (APISIX's protocol detection, in its order,
//! except Bedrock Converse bodies, which are not understood: on a `/converse` path a
//! `messages` body is chat, translated to Converse for Bedrock deployments):
//! a path ending in `/v1/messages` is Anthropic Messages; a path ending in `/v1/responses`
//! with an `input` is the Responses API; a `messages` array is chat completions (on any
//! path); an `input` is embeddings. The body's `model` is optional: a deployment with a
//! configured model sends that one (APISIX's `options.model` overwrite), one without sends
//! the client's. From there the request is the OpenAI API's (limits, token accounting,
//! fallback, streaming), answered in its API's shape.

use super::body;
use crate::canonical::Endpoint;
use crate::errors::GatewayError;
use crate::runtime::{ModelRoute, Runtime};
use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Which API a body on an AI route is for (APISIX `detect_request_type`).
pub fn detect(path: &str, fields: &BTreeMap<String, &RawValue>) -> Result<Endpoint, GatewayError> {
    let path = path.trim_end_matches('/');
    let is_array = |k: &str| fields.get(k).is_some_and(|v| v.get().starts_with('['));
    if path.ends_with("/v1/messages") {
        return Ok(Endpoint::Messages);
    }
    let has_input = fields.contains_key("input");
    if path.ends_with("/v1/responses") && has_input {
        return Ok(Endpoint::Responses);
    }
    if is_array("messages") {
        return Ok(Endpoint::ChatCompletions);
    }
    if has_input {
        return Ok(Endpoint::Embeddings);
    }
    Err(GatewayError::bad_request(
        "no matching AI protocol for the request",
        None,
    ))
}

/// Read and classify the body of a request on an AI route; returns the API and the body.
pub async fn read(rt: &Runtime, session: &mut Session) -> Result<(Endpoint, Bytes), GatewayError> {
    let header = session.req_header();
    if let Some(ct) = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    {
        if !ct.to_ascii_lowercase().starts_with("application/json") {
            return Err(GatewayError::bad_request(
                format!("unsupported content-type: {ct}, only application/json is supported"),
                None,
            ));
        }
    }
    let path = header.uri.path().to_string();
    let raw = body::read_body(session, rt.config.server.max_body_bytes).await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(
            "failed to get request body: request body is empty",
            None,
        ));
    }
    let fields: BTreeMap<String, &RawValue> = serde_json::from_slice(&raw).map_err(|e| {
        GatewayError::bad_request(format!("could not parse JSON request body: {e}"), None)
    })?;
    let endpoint = detect(&path, &fields)?;
    Ok((endpoint, raw))
}

/// The body to serve: with the route's name as `model` when the client sent none (and no
/// deployment needs the client's).
pub fn with_route_model(route: &ModelRoute, raw: Bytes) -> Result<Bytes, GatewayError> {
    let fields: BTreeMap<String, &RawValue> = serde_json::from_slice(&raw).unwrap_or_default();
    let client_model = fields
        .get("model")
        .and_then(|m| serde_json::from_str::<String>(m.get()).ok())
        .filter(|m| !m.is_empty());
    if client_model.is_some() {
        return Ok(raw);
    }
    if route.deployments.iter().any(|d| d.client_model) {
        return Err(GatewayError::bad_request(
            "You must provide a model parameter.",
            Some("model"),
        ));
    }
    Ok(with_model(&raw, &route.name))
}

/// `body` (a JSON object) with `"model": name` as its first field, any `model` it had
/// (not a usable string) dropped.
fn with_model(body: &[u8], name: &str) -> Bytes {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).unwrap_or_default();
    fields.remove("model");
    let mut out = serde_json::Map::with_capacity(fields.len() + 1);
    out.insert("model".into(), name.into());
    out.extend(fields);
    Bytes::from(serde_json::Value::Object(out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(path: &str, body: &str) -> Result<Endpoint, String> {
        let f: BTreeMap<String, &RawValue> = serde_json::from_str(body).unwrap();
        detect(path, &f).map_err(|e| e.to_string())
    }

    #[test]
    fn detects_apisix_protocols_in_order() {
        let chat = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(kind("/ai", chat), Ok(Endpoint::ChatCompletions));
        assert_eq!(kind("/anything/v1/messages", chat), Ok(Endpoint::Messages));
        assert_eq!(
            kind("/ai/v1/responses", r#"{"input":"x"}"#),
            Ok(Endpoint::Responses)
        );
        // A Responses body elsewhere is embeddings, as APISIX classifies it.
        assert_eq!(kind("/ai", r#"{"input":"x"}"#), Ok(Endpoint::Embeddings));
        assert_eq!(
            kind("/ai/v1/responses", chat),
            Ok(Endpoint::ChatCompletions)
        );
        assert!(kind("/ai", "{}")
            .unwrap_err()
            .contains("no matching AI protocol"));
        assert!(kind("/ai", r#"{"prompt":"x"}"#).is_err());
        assert_eq!(kind("/m/converse", chat), Ok(Endpoint::ChatCompletions));
    }

    #[test]
    fn inserts_the_route_name_as_model() {
        let b = with_model(br#"{"messages":[],"model":null}"#, "r");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "r");
        assert!(v["messages"].is_array());
    }
}
