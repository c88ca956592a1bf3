//! The one error type of the request path.
//!
//! Every response the gateway makes itself comes from a [`GatewayError`]: this module maps
//! each variant, in one place, to its HTTP status, its OpenAI error body
//! (`{"error":{"message","type","param","code"}}`) and its bounded metric label. Messages
//! never contain provider keys: variants carry only what the client may see.

use crate::quota::{Budget, Quota};
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;

/// Errors the gateway answers with itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")]
    MissingApiKey,
    #[error("Incorrect API key provided.")]
    InvalidApiKey,
    /// Too many failed authentications from this address (or for this user).
    #[error("Too many failed authentication attempts. Please try again in {}s.", .retry_after_ms.div_ceil(1000))]
    AuthThrottled { retry_after_ms: u64 },
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: String, path: String },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    #[error("Request body too large: the limit is {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Request header fields too large: the limit is {limit} bytes and {fields} fields.")]
    HeaderTooLarge { limit: usize, fields: usize },
    #[error("The request head was not received in time (limit: {0}s).")]
    HeaderTimeout(u64),
    /// An HTTP request the gateway cannot parse (bad request line, bad header).
    #[error("Malformed HTTP request: {0}.")]
    MalformedRequest(&'static str),
    #[error("The model `{0}` has no enabled deployment (is its provider key set?).")]
    NoDeployment(String),
    #[error("All upstream deployments failed: {0}")]
    UpstreamUnavailable(String),
    #[error("The upstream did not answer in time.")]
    UpstreamTimeout,
    /// Every deployment left refused the gateway's own provider credentials (401/403):
    /// an operator's problem, not the client's key.
    #[error("The provider rejected the gateway's credentials for model `{0}`. This is a gateway configuration problem, not a problem with your API key; the operator can see it in the gateway's logs and metrics.")]
    ProviderAuthRejected(String),
    #[error("The upstream sent an invalid response: {0}")]
    UpstreamProtocol(String),
    #[error(
        "Rate limit reached for {limit} on {}. Please try again in {}.",
        .budget.as_str(),
        wait_text(*.retry_after_ms)
    )]
    RateLimited {
        /// Which limit, as the client may see it.
        limit: Arc<str>,
        /// Status to answer with (429 unless an APISIX `rejected_code` says otherwise).
        status: u16,
        /// APISIX `rejected_msg`: answer `{"error_msg": …}` instead of the OpenAI body.
        apisix_msg: Option<Arc<str>>,
        budget: Budget,
        retry_after_ms: u64,
        quotas: Vec<Quota>,
    },
    /// A request larger than a whole limit's window: retrying cannot help (OpenAI's
    /// "Request too large").
    #[error(
        "Request too large for {limit} on {}: Limit {allowed}, Requested {requested}. The input or output tokens must be reduced in order to run successfully.",
        .budget.as_str()
    )]
    RequestTooLarge {
        limit: Arc<str>,
        budget: Budget,
        allowed: String,
        requested: String,
    },
    /// APISIX ai-proxy-multi: every instance was at its limits (503).
    #[error("{message}")]
    AllServersTried {
        message: &'static str,
        retry_after_ms: u64,
        quotas: Vec<Quota>,
    },
    /// A resource of the gateway's own API (a file, a batch) that does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("The server is shutting down.")]
    ShuttingDown,
    /// The shared limit store cannot be reached and `allow_degradation` is off.
    #[error("Rate limits cannot be checked right now (limit store unavailable); please retry.")]
    LimiterUnavailable(String),
    #[error("Internal error: {0}")]
    Internal(String),
    /// A consumer a route or model does not allow (APISIX `consumer-restriction`).
    #[error("{message}")]
    ConsumerForbidden {
        status: u16,
        message: String,
        /// Answer APISIX's `{"message": …}` body (imported routes).
        apisix: bool,
    },
}

/// A wait as OpenAI writes it: seconds with milliseconds under a minute (`1.250s`), else
/// hours, minutes and seconds (`59m59s`, `23h59m0s`).
fn wait_text(ms: u64) -> String {
    if ms < 60_000 {
        return format!("{:.3}s", ms as f64 / 1000.0);
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param,
            code: None,
        }
    }

    /// A 400 about the request field `param` (the translations' refusals).
    pub fn invalid(message: impl Into<String>, param: &'static str) -> Self {
        GatewayError::bad_request(message, Some(param))
    }

    /// HTTP status of the response.
    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            MissingApiKey | InvalidApiKey => 401,
            UnknownRoute { .. } | ModelNotFound(_) | NotFound(_) => 404,
            BadRequest { .. } => 400,
            RateLimited { status, .. } => *status,
            RequestTooLarge { .. } => 429,
            AuthThrottled { .. } => 429,
            PayloadTooLarge { .. } => 413,
            HeaderTooLarge { .. } => 431,
            HeaderTimeout(_) => 408,
            MalformedRequest(_) => 400,
            NoDeployment(_) | ShuttingDown | LimiterUnavailable(_) | AllServersTried { .. } => 503,
            UpstreamUnavailable(_) | UpstreamProtocol(_) | ProviderAuthRejected(_) => 502,
            UpstreamTimeout => 504,
            Internal(_) => 500,
            ConsumerForbidden { status, .. } => *status,
        }
    }

    /// OpenAI `error.type`.
    pub fn error_type(&self) -> &'static str {
        if let GatewayError::RateLimited { budget, .. }
        | GatewayError::RequestTooLarge { budget, .. } = self
        {
            if *budget == Budget::Spend {
                // OpenAI's answer to an account out of credit (a 429 too).
                return "insufficient_quota";
            }
            return budget.as_str();
        }
        if let GatewayError::AuthThrottled { .. } = self {
            return "requests";
        }
        match self.status() {
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// OpenAI `error.code`.
    pub fn code(&self) -> Option<&'static str> {
        use GatewayError::*;
        match self {
            MissingApiKey | InvalidApiKey => Some("invalid_api_key"),
            AuthThrottled { .. } => Some("auth_throttled"),
            ModelNotFound(_) => Some("model_not_found"),
            BadRequest { code, .. } => *code,
            PayloadTooLarge { .. } => Some("request_too_large"),
            HeaderTooLarge { .. } => Some("request_header_too_large"),
            HeaderTimeout(_) => Some("request_timeout"),
            MalformedRequest(_) => Some("invalid_http_request"),
            RateLimited {
                budget: Budget::Spend,
                ..
            } => Some("insufficient_quota"),
            RateLimited { .. } | RequestTooLarge { .. } => Some("rate_limit_exceeded"),
            ProviderAuthRejected(_) => Some("provider_auth_failed"),
            ConsumerForbidden { .. } => Some("consumer_forbidden"),
            AllServersTried { .. } => Some("all_servers_tried"),
            _ => None,
        }
    }

    /// OpenAI `error.param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            GatewayError::BadRequest { param, .. } => *param,
            GatewayError::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// Bounded label for metrics and the access log.
    pub fn label(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingApiKey => "missing_api_key",
            InvalidApiKey => "invalid_api_key",
            AuthThrottled { .. } => "auth_throttled",
            UnknownRoute { .. } => "unknown_route",
            ModelNotFound(_) => "model_not_found",
            BadRequest { .. } => "bad_request",
            PayloadTooLarge { .. } => "payload_too_large",
            HeaderTooLarge { .. } => "header_too_large",
            HeaderTimeout(_) => "header_timeout",
            MalformedRequest(_) => "malformed_request",
            RateLimited { .. } => "rate_limited",
            RequestTooLarge { .. } => "request_too_large_for_limit",
            NoDeployment(_) => "no_deployment",
            UpstreamUnavailable(_) => "upstream_unavailable",
            UpstreamTimeout => "upstream_timeout",
            ProviderAuthRejected(_) => "provider_auth_rejected",
            UpstreamProtocol(_) => "upstream_protocol",
            NotFound(_) => "not_found",
            ShuttingDown => "shutting_down",
            LimiterUnavailable(_) => "limiter_unavailable",
            Internal(_) => "internal",
            ConsumerForbidden { .. } => "consumer_forbidden",
            AllServersTried { .. } => "all_servers_tried",
        }
    }

    /// Whether an SDK should retry; sent as `x-should-retry` where it differs from the
    /// status-based default (a 5xx caused by configuration will not heal by retrying).
    pub fn should_retry(&self) -> Option<bool> {
        match self {
            GatewayError::NoDeployment(_)
            | GatewayError::ProviderAuthRejected(_)
            | GatewayError::RequestTooLarge { .. } => Some(false),
            // A spend budget that frees in more than a minute: the SDKs' retries (a few
            // seconds apart) cannot succeed.
            GatewayError::RateLimited {
                budget: Budget::Spend,
                retry_after_ms,
                ..
            } if *retry_after_ms > 60_000 => Some(false),
            _ => None,
        }
    }

    /// The OpenAI error body (or APISIX's `{"error_msg"}` for a rule that asks for it).
    pub fn body(&self) -> Bytes {
        if let GatewayError::RateLimited {
            apisix_msg: Some(m),
            ..
        } = self
        {
            let mut b = json!({ "error_msg": &**m }).to_string();
            b.push('\n');
            return Bytes::from(b);
        }
        if let GatewayError::ConsumerForbidden {
            message,
            apisix: true,
            ..
        } = self
        {
            return Bytes::from(json!({ "message": message }).to_string());
        }
        openai_error_body(
            &self.to_string(),
            self.error_type(),
            self.param(),
            self.code(),
        )
    }
}

impl GatewayError {
    /// The body in Anthropic's shape, for clients of `/v1/messages`:
    /// `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> Bytes {
        let etype = match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 | 431 => "request_too_large",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 => "overloaded_error",
            _ => "api_error",
        };
        anthropic_error_body(etype, &self.to_string())
    }
}

/// Anthropic's error shape, `{"type":"error","error":{"type","message"}}`, as bytes.
pub fn anthropic_error_body(etype: &str, message: &str) -> Bytes {
    Bytes::from(json!({"type": "error", "error": {"type": etype, "message": message}}).to_string())
}

/// `{"error":{"message","type","param","code"}}` as bytes.
pub fn openai_error_body(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Bytes {
    let v =
        json!({"error": {"message": message, "type": error_type, "param": param, "code": code}});
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_all_four_keys() {
        let e = GatewayError::ModelNotFound("gpt-x".into());
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let err = &v["error"];
        assert_eq!(e.status(), 404);
        assert_eq!(err["code"], "model_not_found");
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["param"], "model");
        assert!(err["message"].as_str().unwrap().contains("gpt-x"));
        let e = GatewayError::UpstreamTimeout;
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["error"]["param"].is_null() && v["error"]["code"].is_null());
        assert_eq!(v["error"]["type"], "server_error");
    }

    #[test]
    fn statuses() {
        assert_eq!(GatewayError::InvalidApiKey.status(), 401);
        assert_eq!(GatewayError::PayloadTooLarge { limit: 1 }.status(), 413);
        assert_eq!(GatewayError::UpstreamTimeout.status(), 504);
        assert_eq!(
            GatewayError::NoDeployment("m".into()).should_retry(),
            Some(false)
        );
    }

    #[test]
    fn an_exhausted_budget_is_openais_insufficient_quota() {
        let spent = |retry_after_ms| GatewayError::RateLimited {
            limit: "consumer:a/daily".into(),
            status: 429,
            apisix_msg: None,
            budget: Budget::Spend,
            retry_after_ms,
            quotas: Vec::new(),
        };
        let e = spent(3_600_000);
        assert_eq!(e.status(), 429);
        assert_eq!(e.error_type(), "insufficient_quota");
        assert_eq!(e.code(), Some("insufficient_quota"));
        // Retrying a day's budget in seconds cannot succeed; a second's budget can.
        assert_eq!(e.should_retry(), Some(false));
        assert_eq!(spent(1_000).should_retry(), None);
        let tokens = GatewayError::RateLimited {
            limit: "model:m/tpm".into(),
            status: 429,
            apisix_msg: None,
            budget: Budget::Tokens,
            retry_after_ms: 3_600_000,
            quotas: Vec::new(),
        };
        assert_eq!(tokens.code(), Some("rate_limit_exceeded"));
        assert_eq!(tokens.should_retry(), None);
    }

    #[test]
    fn waits_over_a_minute_read_in_hours_and_minutes() {
        assert_eq!(wait_text(1250), "1.250s");
        assert_eq!(wait_text(59_999), "59.999s");
        assert_eq!(wait_text(3_599_909), "1h0m0s");
        assert_eq!(wait_text(3_500_000), "58m20s");
        assert_eq!(wait_text(86_340_000), "23h59m0s");
    }
}
