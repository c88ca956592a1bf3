//! The canonical AI request: an OpenAI-style body scanned once into its top-level fields,
//! each kept as a byte range of the received body (no copy, no tree), so a 10 MiB prompt
//! costs one validation pass. The upstream body is the received body itself when nothing
//! needs changing; otherwise it is written back from those ranges with only `model` (and,
//! for streams, `stream_options`) replaced. Unknown fields pass through untouched.
//!
//! Used by the proxy (from a client's body) and the batch dispatcher (from an input line).

pub mod anthropic;
pub mod chat;
pub mod chat_write;
pub mod chunk;
pub mod fields;
pub mod finish;
pub mod lenient;
pub mod numbers;
pub mod parts;
pub mod usage_read;
pub mod write;

use crate::errors::GatewayError;
use bytes::Bytes;
use fields::Fields;
use serde_json::value::RawValue;
/// Token usage of one answer, in the gateway's terms (what token limits and accounting
/// charge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The total the provider reported (`total_tokens`), which is not always the sum
    /// (some count cached, audio or tool tokens apart): what `total_tokens` limits
    /// charge. `None`: it reported none, and the sum stands in.
    pub total_tokens: Option<u64>,
}

impl Usage {
    /// The provider's total, or the sum when it reported none.
    pub fn total(&self) -> u64 {
        self.total_tokens
            .unwrap_or_else(|| self.prompt_tokens.saturating_add(self.completion_tokens))
    }
}

impl Usage {
    /// An OpenAI `usage` object, of chat (`prompt_tokens`, `completion_tokens`) or of the
    /// Responses API (`input_tokens`, `output_tokens`); without completion tokens,
    /// `total - prompt`, as embeddings answers have none.
    pub fn from_openai(u: &serde_json::Value) -> Option<Usage> {
        let u = u.as_object()?;
        let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64);
        // Chat's names, or the Responses API's.
        let prompt = n("prompt_tokens").or(n("input_tokens")).unwrap_or(0);
        let completion = n("completion_tokens")
            .or(n("output_tokens"))
            .unwrap_or_else(|| n("total_tokens").unwrap_or(prompt).saturating_sub(prompt));
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: n("total_tokens"),
        })
    }
}

/// The text of a message content: a string as it is, or the text of its parts (`text`,
/// or a refusal's `refusal`) joined by `sep`. Chat text parts, Anthropic text blocks and
/// Responses input/output text all read this way.
pub fn content_text(content: &serde_json::Value, sep: &str) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").or(p.get("refusal")))
            .filter_map(serde_json::Value::as_str)
            .collect::<Vec<_>>()
            .join(sep),
        _ => String::new(),
    }
}

/// The OpenAI endpoints that carry a model in their body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's Messages API (`POST /v1/messages`).
    Messages,
    /// OpenAI's Responses API (`POST /v1/responses`).
    Responses,
}

impl Endpoint {
    /// Path after the API version prefix.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
            Endpoint::Responses => "/responses",
        }
    }

    /// The public route the gateway serves it at.
    pub fn route(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Responses => "/v1/responses",
        }
    }
}

/// A parsed AI request body.
#[derive(Debug)]
pub struct AiRequest {
    pub endpoint: Endpoint,
    /// The body as received.
    body: Bytes,
    /// Top-level fields: name → byte range of the raw JSON value in `body`.
    fields: Fields,
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// The completion cap per choice the client asked for: `max_completion_tokens`, else
    /// `max_tokens` (chat), `max_output_tokens` (Responses) — validated ([`numbers`]).
    pub max_tokens: Option<u64>,
    /// How many completions the upstream generates and bills (`n`, `best_of`; ≥ 1).
    pub choices: u64,
    /// For a surface other than chat (`/v1/messages`): the same request as an OpenAI chat
    /// request, sent to deployments whose provider does not serve the surface itself
    /// (see `crate::surfaces`).
    pub pivot: Option<Box<AiRequest>>,
    /// A Messages client's `anthropic-beta` header, passed on to Anthropic deployments
    /// (which serve the betas); translated requests carry what the betas add (mid-turn
    /// system messages) or drop it (the README's table).
    pub anthropic_beta: Option<http::HeaderValue>,
}

impl AiRequest {
    pub fn parse(endpoint: Endpoint, body: Bytes) -> Result<Self, GatewayError> {
        let fields =
            Fields::scan(&body).map_err(|fields::Refused(e)| GatewayError::BadRequest {
                code: e.contains("duplicate key").then_some("duplicate_key"),
                message: format!("We could not parse the JSON body of your request. ({e})"),
                param: None,
            })?;
        let raw = |name: &str| {
            let range = fields.get(name)?;
            std::str::from_utf8(&body[range]).ok()
        };
        let model = match raw("model").map(serde_json::from_str::<String>) {
            Some(Ok(m)) if !m.is_empty() => m,
            Some(Ok(_)) | None => {
                return Err(GatewayError::bad_request(
                    "You must provide a model parameter.",
                    Some("model"),
                ))
            }
            Some(Err(_)) => {
                return Err(GatewayError::bad_request(
                    "'model' must be a string.",
                    Some("model"),
                ))
            }
        };
        let stream = match raw("stream") {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "'stream' must be a boolean.",
                    Some("stream"),
                ))
            }
        };
        let client_wants_usage = raw("stream_options")
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .and_then(|v| v.get("include_usage").and_then(|u| u.as_bool()))
            .unwrap_or(false);
        let numbers = numbers::read(endpoint, raw)?;
        let req = AiRequest {
            endpoint,
            body,
            fields,
            model,
            stream,
            client_wants_usage,
            max_tokens: numbers.max_tokens,
            choices: numbers.choices,
            pivot: None,
            anthropic_beta: None,
        };
        req.check_required()?;
        Ok(req)
    }

    /// The request a provider gets: this one when it serves the endpoint, else the chat
    /// pivot when it serves chat; `None` when it can serve neither.
    pub fn for_provider(&self, serves: impl Fn(Endpoint) -> bool) -> Option<&AiRequest> {
        if serves(self.endpoint) {
            return Some(self);
        }
        self.pivot.as_deref().filter(|p| serves(p.endpoint))
    }

    /// Bytes of the body as received.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The raw JSON text of a top-level field.
    fn raw(&self, name: &str) -> Option<&str> {
        let range = self.fields.get(name)?;
        std::str::from_utf8(&self.body[range]).ok()
    }

    fn check_required(&self) -> Result<(), GatewayError> {
        let (name, param) = match self.endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => ("messages", "messages"),
            Endpoint::Completions => ("prompt", "prompt"),
            Endpoint::Embeddings | Endpoint::Responses => ("input", "input"),
        };
        let Some(raw) = self.raw(name) else {
            return Err(GatewayError::bad_request(
                format!("Missing required parameter: '{name}'."),
                Some(param),
            ));
        };
        if self.endpoint == Endpoint::ChatCompletions {
            if !raw.starts_with('[') {
                return Err(GatewayError::bad_request(
                    "'messages' must be an array.",
                    Some(param),
                ));
            }
            if raw[1..].trim_start().starts_with(']') {
                return Err(GatewayError::BadRequest {
                    message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into(),
                    param: Some("messages"),
                    code: Some("empty_array"),
                });
            }
        }
        if self.endpoint == Endpoint::Embeddings && self.stream {
            return Err(GatewayError::bad_request(
                "Embeddings cannot be streamed.",
                Some("stream"),
            ));
        }
        Ok(())
    }

    /// A rough count of the prompt's tokens (one per four bytes of its raw JSON), used to
    /// reserve tokens before the real usage is known. It errs on the high side.
    pub fn prompt_estimate(&self) -> u64 {
        let field = match self.endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses => "input",
        };
        let bytes = self.raw(field).map_or(0, str::len)
            + self.raw("instructions").map_or(0, str::len)
            + self.raw("system").map_or(0, str::len);
        (bytes as u64).div_ceil(4).max(1)
    }

    /// A top-level field as raw JSON.
    pub fn field(&self, name: &str) -> Option<&RawValue> {
        serde_json::from_str(self.raw(name)?).ok()
    }

    /// Every top-level field but those in `skip`, as JSON trees: the small part of a body,
    /// for translations that take its large array item by item ([`Self::items`]), so no
    /// request is ever held as one tree.
    pub fn head(
        &self,
        skip: &[&str],
    ) -> Result<serde_json::Map<String, serde_json::Value>, GatewayError> {
        let mut head = serde_json::Map::new();
        for name in self.fields.keys().filter(|k| !skip.contains(k)) {
            let raw = self.raw(name).unwrap_or("null");
            let v = serde_json::from_str(raw)
                .map_err(|e| GatewayError::bad_request(format!("invalid JSON body: {e}"), None))?;
            head.insert(name.to_string(), v);
        }
        Ok(head)
    }

    /// The items of a top-level array field, each as its raw JSON in the body (`None`: the
    /// field is absent, `null` or not an array).
    pub fn items(&self, name: &str) -> Option<Vec<&RawValue>> {
        serde_json::from_str(self.raw(name)?).ok()
    }

    /// This request with top-level fields set (APISIX ai-proxy `options`: a flat overwrite
    /// of the client's fields), parsed again.
    pub fn with_fields(
        &self,
        set: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<AiRequest, GatewayError> {
        let mut out = serde_json::Map::with_capacity(self.fields.len() + set.len());
        for k in self.fields.keys().filter(|k| !set.contains_key(*k)) {
            if let Some(v) = self.field(k) {
                out.insert(k.to_string(), serde_json::to_value(v).unwrap_or_default());
            }
        }
        out.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        let body = Bytes::from(serde_json::Value::Object(out).to_string());
        AiRequest::parse(self.endpoint, body)
    }

    /// The fields that cap this request's completion per choice, as its API names them
    /// (the first is the one added when the client sent none).
    fn cap_fields(&self) -> &'static [&'static str] {
        match self.endpoint {
            Endpoint::ChatCompletions if self.fields.contains_key("max_completion_tokens") => {
                &["max_completion_tokens", "max_tokens"]
            }
            Endpoint::ChatCompletions => &["max_tokens", "max_completion_tokens"],
            Endpoint::Completions | Endpoint::Messages => &["max_tokens"],
            Endpoint::Responses => &["max_output_tokens"],
            Endpoint::Embeddings => &[],
        }
    }

    /// This request with its completion capped at `cap` tokens per choice, when that is
    /// below what it asks (`None`: nothing to change). Every cap field the body has is
    /// lowered (the first is added when it has none); the other fields are the received
    /// bytes. A hard limit relies on this cap, so it goes upstream.
    pub fn with_cap(&self, cap: u64) -> Result<Option<AiRequest>, GatewayError> {
        let fields = self.cap_fields();
        if fields.is_empty() || self.max_tokens.is_some_and(|m| m <= cap) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.body.len() + 32);
        out.push(b'{');
        let mut seen = false;
        for k in self.fields.keys() {
            let mut v = self.raw(k).unwrap_or("null").to_string();
            if fields.contains(&k) {
                seen = true;
                let asked = v.parse::<u64>().unwrap_or(u64::MAX);
                v = asked.min(cap).to_string();
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
        if !seen {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{}\":{cap}", fields[0]).as_bytes());
        }
        out.push(b'}');
        AiRequest::parse(self.endpoint, Bytes::from(out)).map(Some)
    }

    /// The body to send upstream: `model` replaced by the deployment's model name and, for
    /// streams, `stream_options.include_usage` forced on so usage can be accounted. When
    /// neither changes anything, the received bytes themselves.
    pub fn upstream_body(&self, upstream_model: &str) -> Bytes {
        // Anthropic always reports usage (and has no `stream_options`).
        // Responses report usage in their terminal event.
        let force_usage = self.stream
            && !matches!(
                self.endpoint,
                Endpoint::Embeddings | Endpoint::Messages | Endpoint::Responses
            )
            && !self.client_wants_usage;
        if upstream_model == self.model && !force_usage {
            return self.body.clone();
        }
        let mut out = Vec::with_capacity(self.body.len() + upstream_model.len() + 48);
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, k: &str, v: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Keys came from valid JSON: re-encode them to keep escapes right.
            out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        };
        let model_json = serde_json::to_string(upstream_model).unwrap_or_default();
        let mut saw_options = false;
        for k in self.fields.keys() {
            let v = self.raw(k).unwrap_or("null");
            match k {
                "model" => push(&mut out, k, &model_json),
                "stream_options" if force_usage => {
                    saw_options = true;
                    let mut opts = serde_json::from_str::<serde_json::Value>(v)
                        .ok()
                        .filter(|o| o.is_object())
                        .unwrap_or_else(|| serde_json::json!({}));
                    opts["include_usage"] = serde_json::Value::Bool(true);
                    push(&mut out, k, &opts.to_string());
                }
                _ => push(&mut out, k, v),
            }
        }
        if force_usage && !saw_options {
            push(&mut out, "stream_options", r#"{"include_usage":true}"#);
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(endpoint: Endpoint, body: &[u8]) -> Result<AiRequest, GatewayError> {
        AiRequest::parse(endpoint, Bytes::copy_from_slice(body))
    }

    #[test]
    fn peeks_and_rewrites() {
        let body = br#"{"model":"pub","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":7,"extra":{"a":[1,2.50]}}"#;
        let r = parse(Endpoint::ChatCompletions, body).unwrap();
        assert_eq!(r.model, "pub");
        assert!(r.stream && !r.client_wants_usage);
        assert_eq!(r.max_tokens, Some(7));
        let up: serde_json::Value = serde_json::from_slice(&r.upstream_body("up-model")).unwrap();
        assert_eq!(up["model"], "up-model");
        assert_eq!(up["stream_options"]["include_usage"], true);
        assert_eq!(up["messages"][0]["content"], "hi");
        // Raw numbers are copied byte for byte.
        assert!(String::from_utf8(r.upstream_body("m").to_vec())
            .unwrap()
            .contains("[1,2.50]"));
    }

    #[test]
    fn passes_unchanged_bodies_through_and_keeps_escapes() {
        let plain = br#"{"model":"pub", "messages":[{"role":"user","content":"hi"}]}"#;
        let r = parse(Endpoint::ChatCompletions, plain).unwrap();
        assert_eq!(&r.upstream_body("pub")[..], &plain[..]);
        let esc = br#"{"model":"pub","messages":[{"content":"a\"b"}],"we\u0069rd":"\u00e9"}"#;
        let r = parse(Endpoint::ChatCompletions, esc).unwrap();
        let up: serde_json::Value = serde_json::from_slice(&r.upstream_body("x")).unwrap();
        assert_eq!(up["weird"], "\u{e9}");
        assert_eq!(up["messages"][0]["content"], "a\"b");
        assert_eq!(up["model"], "x");
    }

    #[test]
    fn keeps_client_stream_options() {
        let body = br#"{"model":"m","prompt":"x","stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#;
        let r = parse(Endpoint::Completions, body).unwrap();
        assert!(r.client_wants_usage);
        let up: serde_json::Value = serde_json::from_slice(&r.upstream_body("m")).unwrap();
        assert_eq!(up["stream_options"]["include_obfuscation"], false);
    }

    #[test]
    fn rejects_bad_bodies() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "parse"),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                "model parameter",
            ),
            (br#"{"model":3,"messages":[]}"#, "must be a string"),
            (br#"{"model":"m","messages":[ ]}"#, "empty array"),
            (
                br#"{"model":"m"}"#,
                "Missing required parameter: 'messages'",
            ),
            (
                br#"{"model":"m","messages":[{}],"stream":"yes"}"#,
                "boolean",
            ),
        ];
        for (body, want) in cases {
            let e = parse(Endpoint::ChatCompletions, body).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn caps_go_into_the_body_only_when_lower() {
        let chat =
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":100,"n":2}"#;
        let r = parse(Endpoint::ChatCompletions, chat).unwrap();
        assert!(r.with_cap(100).unwrap().is_none());
        let c = r.with_cap(40).unwrap().unwrap();
        assert_eq!((c.max_tokens, c.choices), (Some(40), 2));
        let body = br#"{"model":"m","input":"hi"}"#;
        let r = parse(Endpoint::Responses, body).unwrap();
        let c = r.with_cap(7).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&c.upstream_body("m")).unwrap();
        assert_eq!(v["max_output_tokens"], 7);
        let e = parse(Endpoint::Embeddings, br#"{"model":"m","input":"x"}"#).unwrap();
        assert!(e.with_cap(1).unwrap().is_none());
    }

    #[test]
    fn options_overwrite_top_level_fields() {
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#;
        let r = parse(Endpoint::ChatCompletions, body).unwrap();
        let set = serde_json::json!({"temperature": 1.0, "foo": "bar"});
        let o = r.with_fields(set.as_object().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.upstream_body("m")).unwrap();
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["foo"], "bar");
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(o.model, "m");
    }
}
