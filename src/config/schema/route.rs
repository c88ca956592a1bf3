//! Pass-through routes (`routes:`): where they match, their upstream nodes, and what
//! they change on the way — APISIX `proxy-rewrite` (`rewrite`: the path, host, method
//! and headers the backend receives) and `cors` (browser cross-origin answers).

use super::*;

/// A pass-through route: matching requests are proxied as they are (method, path, query,
/// headers, body) to one of its upstream nodes, picked by weight, under its limits.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Its identity (limit counters, metrics, logs).
    pub name: String,
    /// Paths it serves: exact (`/hello`), or a prefix ending in `*` (`/api/*`).
    pub uris: Vec<String>,
    /// HTTP methods it serves; empty = all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// `Host` values it serves; empty = any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Require a consumer key (`Authorization: Bearer`, `apikey`, `x-api-key`, `api-key`).
    #[serde(default)]
    pub auth: bool,
    /// Remove the consumer's credential headers (`authorization`, `x-api-key`, `api-key`,
    /// `apikey`) before the request goes to the backend (APISIX key-auth / basic-auth
    /// `hide_credentials`; off by default, as in APISIX).
    #[serde(default)]
    pub hide_credentials: bool,
    /// Where matching requests go.
    pub upstream: RouteUpstreamConfig,
    /// Limits on this route.
    #[serde(default)]
    pub limits: Vec<LimitRuleConfig>,
    /// Which consumers may use it (needs `auth`).
    #[serde(default)]
    pub consumer_restriction: Option<ConsumerRestriction>,
    /// The path, host, method and headers the backend receives (APISIX `proxy-rewrite`).
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    /// Cross-origin answers for browsers (APISIX `cors`).
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteUpstreamConfig {
    /// Nodes picked by weighted round robin.
    pub nodes: Vec<NodeConfig>,
    /// Keep the client's `Host` header (APISIX `pass_host: pass`, the default) or send
    /// the node's (`node`).
    #[serde(default)]
    pub pass_host: PassHost,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PassHost {
    #[default]
    Pass,
    Node,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// Share of the route's requests (weighted round robin).
    #[serde(default = "one_u32")]
    pub weight: u32,
}

fn one_u32() -> u32 {
    1
}

/// The request as the backend receives it (APISIX `proxy-rewrite`); what is not set is
/// passed as the client sent it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// The path sent instead of the client's (the client's query string is kept unless
    /// this one has its own `?`).
    #[serde(default)]
    pub uri: Option<String>,
    /// `[regex, replacement]` pairs (APISIX `regex_uri`): the first regex that matches the
    /// client's path replaces its first match with the replacement (`$1` … name the
    /// captures). Ignored when `uri` is set.
    #[serde(default)]
    pub regex_uri: Vec<String>,
    /// The `Host` header sent (over the route's `pass_host`).
    #[serde(default)]
    pub host: Option<String>,
    /// The method sent instead of the client's.
    #[serde(default)]
    pub method: Option<String>,
    /// Headers set, added or removed.
    #[serde(default)]
    pub headers: HeaderRewrite,
}

/// Header changes, applied in APISIX's order: `add`, then `set`, then `remove`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRewrite {
    /// Headers appended beside the client's of the same name.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers replacing the client's of the same name.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Cross-origin answers for browsers (APISIX `cors`): a preflight (`OPTIONS`) is answered
/// 200 at once (no key, no limit), and every answer of the route carries the
/// `Access-Control-*` headers.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// `*` (any origin, written `*`), `**` (the request's origin echoed), one origin, or
    /// several separated by commas (the request's origin echoed when listed, no CORS
    /// headers otherwise).
    pub allow_origins: String,
    /// `Access-Control-Allow-Methods`; `**`: every method.
    pub allow_methods: String,
    /// `Access-Control-Allow-Headers`; `**`: the request's
    /// `Access-Control-Request-Headers` echoed.
    pub allow_headers: String,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: String,
    /// `Access-Control-Max-Age` in seconds (-1: no caching).
    pub max_age: i64,
    /// Send `Access-Control-Allow-Credentials: true` (then no option may be `*`).
    pub allow_credential: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: "*".into(),
            allow_methods: "*".into(),
            allow_headers: "*".into(),
            expose_headers: "*".into(),
            max_age: 5,
            allow_credential: false,
        }
    }
}
