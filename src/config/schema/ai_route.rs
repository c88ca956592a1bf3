//! AI routes (APISIX ai-proxy / ai-proxy-multi on their own URIs) and the APISIX fallback
//! policy of a model's deployments.

use super::*;

/// A model served at its own paths, as an APISIX ai-proxy route is: whatever model the body
/// names (or none), with ai-proxy's protocol detection (see `proxy::ai_route`).
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRouteConfig {
    /// Exact paths, or prefixes ending in `*`.
    pub uris: Vec<String>,
    /// Methods matched (default: any; APISIX does not check the method of an AI body).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Host names matched (default: any).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Ask for a consumer's key (default). `false`: anyone may call it (an APISIX route
    /// without key-auth), without a consumer.
    #[serde(default = "yes")]
    pub auth: bool,
}

fn yes() -> bool {
    true
}

/// When a model moves on to its next deployment, as APISIX ai-proxy-multi decides
/// (`fallback_strategy`, `fallback_http_statuses`, `max_retries`,
/// `retry_on_failure_within_ms`). A model with `fallback` picks deployments by `priority`
/// (highest first) and `weight` (weighted round robin inside a priority) and moves on only
/// as said here; a model without it uses the gateway's own failover (`routing`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The failures that move a request on to the next deployment (APISIX
    /// `fallback_strategy`).
    #[serde(default)]
    pub on: Vec<FallbackOn>,
    /// More upstream statuses that move on (400..=599).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// Most retries after the first attempt (default: until every deployment was tried).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// A failed attempt that took longer than this is not retried.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<DurationText>")]
    pub retry_within: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackOn {
    /// A deployment at its limits is skipped (APISIX's dry-run pre-check); when every one
    /// is, the answer is APISIX's 503 `all servers tried`.
    RateLimiting,
    /// An upstream 429 moves on.
    #[serde(rename = "http_429")]
    Http429,
    /// An upstream 5xx, timeout or connection error moves on.
    #[serde(rename = "http_5xx")]
    Http5xx,
}

/// Weight of a deployment when none is given.
pub(super) fn default_weight() -> u32 {
    1
}
