//! The shape of `gateway.yaml`. Every struct denies unknown fields so a typo is an error
//! with a path, never a silently ignored setting. Defaults live here, next to the field.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod admin;
mod ai_route;
mod amount;
mod batch;
mod limits;
mod price;
mod responses;
mod route;
mod secret;
mod traces;
pub use admin::*;
pub use ai_route::*;
pub use amount::*;
pub use batch::*;
pub use limits::*;
pub use price::*;
pub use responses::*;
pub use route::*;
pub use secret::*;
pub use traces::*;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, body and header bounds, shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// Log format, level and the access log.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Whether clients need a consumer key.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The clients of the gateway, their keys and their limits.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Upstream LLM providers: kind, base URL, credentials.
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
    /// The public model names clients ask for, each served by deployments on providers.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Pass-through HTTP routes (paths other than the OpenAI API), e.g. imported APISIX
    /// routes without ai-proxy.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How a model's deployments are tried.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Where limit counters live, how instances share them, the APISIX quota headers.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The batch module (Files and Batches API).
    #[serde(default)]
    pub batch: BatchConfig,
    /// The Responses API's store of responses (`previous_response_id`, `GET`).
    #[serde(default)]
    pub responses: ResponsesConfig,
    /// Timeouts, pool and bounds of upstream connections.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Watching this file for changes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The admin pages of the metrics listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// OpenTelemetry traces (OTLP/HTTP); unset: none.
    #[serde(default)]
    pub traces: Option<TracesConfig>,
}

/// Listeners and process settings. Changing these needs a restart.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Proxy listener (OpenAI-compatible API).
    pub listen: String,
    /// Metrics and health listener.
    pub metrics_listen: String,
    /// Serve the proxy listener over TLS with these files.
    pub tls: Option<TlsListenerConfig>,
    /// Worker threads of the proxy; 0 = one per core.
    pub threads: usize,
    /// One work-stealing runtime for all threads (true) or one runtime per thread (false,
    /// cheaper wake-ups; connections stay on the thread that accepted them).
    pub work_stealing: bool,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers, HTTP/1.x); larger ones get 431.
    pub max_header_bytes: usize,
    /// Longest time a client may take to send a whole request head (from its first byte;
    /// on a new connection from the connection's start); past it: 408 and close.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub header_read_timeout: Duration,
    /// After SIGTERM, how long in-flight requests may run before the process exits.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub shutdown_grace_period: Duration,
    /// The unix socket a graceful upgrade passes the listeners through (`run --upgrade`
    /// plus SIGQUIT to the old process). Default: `/tmp/ai-rate-limiter-<listen port>.sock`
    /// (the temp dir). The old process hands over only to a socket of its own user that
    /// no other user can replace (each directory above it owned by root or that user, and
    /// writable by others only with the sticky bit); otherwise it logs why and keeps serving.
    pub upgrade_sock: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9080".into(),
            metrics_listen: "127.0.0.1:9091".into(),
            tls: None,
            upgrade_sock: None,
            threads: 0,
            work_stealing: false,
            max_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace_period: Duration::from_secs(30),
        }
    }
}

/// `limits.local_max_keys` when unset (about 50 MB of counters).
pub const DEFAULT_LOCAL_MAX_KEYS: usize = 250_000;

/// Largest `server.max_header_bytes` (Pingora refuses larger heads itself).
pub const MAX_HEAD_LIMIT: usize = 1024 * 1024 - 1;

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// PEM certificate chain (re-read on reload).
    pub cert_file: PathBuf,
    /// PEM private key (re-read on reload).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `text` (human-readable lines) or `json` (one JSON object a line).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,ai_rate_limiter=debug`; `RUST_LOG` wins.
    pub level: String,
    /// One line per request at target `access`.
    pub access_log: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

/// Client authentication.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a consumer key. Can only be switched off explicitly.
    pub enabled: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { enabled: true }
    }
}

/// A client of the gateway, identified by one or more gateway keys.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Its identity (limit keys `$consumer_name`, metrics, logs, model restrictions).
    pub name: String,
    /// Its gateway keys (`Authorization: Bearer`, `x-api-key`, `api-key`, `apikey`):
    /// each the key itself, `${ENV_VAR}`, or `sha256:<64 hex digits>` of the key.
    #[serde(default)]
    pub keys: Vec<Secret>,
    /// HTTP Basic credentials (`Authorization: Basic …`, APISIX `basic-auth`).
    #[serde(default)]
    pub basic_auth: Vec<BasicAuthConfig>,
    /// Limits on everything this consumer sends, across models.
    #[serde(default)]
    pub limits: Vec<LimitRuleConfig>,
    /// The models it may use, by their public names (empty: every model); another is a
    /// 404 `model_not_found`, as OpenAI answers a model the key has no access to.
    #[serde(default)]
    pub models: Vec<String>,
}

/// One HTTP Basic credential of a consumer.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

/// Which consumers may use a route or model (APISIX `consumer-restriction`, by consumer
/// name): one listed in `deny` is refused; with `allow`, only those listed are let in.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerRestriction {
    /// Consumers let in (empty: all but those denied).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Consumers refused.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Status of a refusal (default 403).
    #[serde(default = "default_forbidden")]
    pub rejected_code: u16,
    /// Message of a refusal (default `The consumer_name is forbidden.`).
    #[serde(default)]
    pub rejected_msg: Option<String>,
    /// Answer APISIX's `{"message": …}` body instead of the OpenAI error (set by the
    /// importer, so migrated clients get the same answer).
    #[serde(default)]
    pub apisix_body: bool,
}

fn default_forbidden() -> u16 {
    403
}

impl ConsumerRestriction {
    /// Refuse `consumer` (`None`: no consumer identified, APISIX's 401).
    pub fn check(&self, consumer: Option<&str>) -> Result<(), crate::errors::GatewayError> {
        let Some(name) = consumer else {
            return Err(crate::errors::GatewayError::MissingApiKey);
        };
        let denied = self.deny.iter().any(|d| d == name)
            || (!self.allow.is_empty() && !self.allow.iter().any(|a| a == name));
        if !denied {
            return Ok(());
        }
        Err(crate::errors::GatewayError::ConsumerForbidden {
            status: self.rejected_code,
            message: self
                .rejected_msg
                .clone()
                .unwrap_or_else(|| "The consumer_name is forbidden.".into()),
            apisix: self.apisix_body,
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// api.openai.com (default base URL).
    Openai,
    /// Any server that speaks the OpenAI API: DeepSeek, vLLM, Ollama, another gateway…
    OpenaiCompatible,
    /// Anthropic's Messages API (api.anthropic.com by default): chat requests are
    /// translated both ways.
    Anthropic,
    /// Azure OpenAI: `base_url` is the resource (`https://NAME.openai.azure.com`); with
    /// `api_version` the classic deployment URLs, without it the `/openai/v1` API. The key
    /// goes in the `api-key` header; a deployment's `model` is the Azure deployment name.
    Azure,
    /// Google's Gemini API (generativelanguage.googleapis.com by default): chat requests
    /// are translated to `generateContent`, embeddings to `batchEmbedContents`.
    Gemini,
    /// Google Vertex AI (`project`, `location`, `credentials_file`): Gemini models on the
    /// `publishers/google` path, Claude models (`claude-…`) on `publishers/anthropic`.
    Vertex,
    /// AWS Bedrock Runtime (`region` and keys, or `api_key` as a bearer key): Converse and
    /// ConverseStream, signed with SigV4.
    Bedrock,
    /// Answers inside the gateway, no upstream.
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Mock => "mock",
        }
    }
}

/// An upstream account as the file and the Admin API write it: where it is and the key to
/// use, every kind's settings side by side. [`super::provider::ProviderConfig::from_spec`]
/// sorts them into the typed config the gateway runs (only its kind's settings).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Its identity (deployments name it; metrics and logs show it).
    pub name: String,
    /// Which API it speaks.
    pub kind: ProviderKind,
    /// Base URL up to and including the version segment, e.g. `https://api.openai.com/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The provider key. Present but empty (an unset `${VAR:-}`) switches the provider off.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Azure: `api-version` of the classic deployment URLs (e.g. `2024-10-21`); unset uses
    /// the `/openai/v1` API.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Pass the provider's own rate-limit headers (`x-ratelimit-*`,
    /// `anthropic-ratelimit-*`) on to clients. Off by default: clients see the gateway's.
    #[serde(default)]
    pub pass_ratelimit_headers: bool,
    /// Behaviour of a `mock` provider.
    #[serde(default)]
    pub mock: Option<MockConfig>,
    /// Bedrock: the AWS region (`us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Bedrock: the AWS access key id (with `secret_access_key`; or `api_key` as a bearer
    /// key instead).
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    /// Bedrock: the AWS secret access key of `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Bedrock: the session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Vertex: the Google Cloud project.
    #[serde(default)]
    pub project: Option<String>,
    /// Vertex: the location (`us-central1`, `global`, `us`, `eu`, …).
    #[serde(default)]
    pub location: Option<String>,
    /// Vertex: a service-account JSON key file (its `token_uri` is where tokens come from).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// What the built-in mock provider does.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Delay before the response starts.
    pub latency_ms: u64,
    /// Streaming pace; 0 sends every token at once.
    pub tokens_per_second: f64,
    /// Completion length when the request sets no `max_tokens`.
    pub completion_tokens: u32,
    /// Embedding vector length when the request sets no `dimensions`.
    pub embedding_dimensions: usize,
    /// Fail some requests with an HTTP status.
    pub failure: Option<MockFailure>,
    /// End streams abruptly after this many content tokens (no `[DONE]`).
    pub cut_stream_after_tokens: Option<u32>,
    /// Answer `completion_tokens` whatever `max_tokens` says, as a provider that ignores
    /// the cap it is sent (for testing hard limits).
    pub ignore_max_tokens: bool,
    /// Upstream model names that act as an agent: with tools offered and `tool_choice`
    /// `auto`, a user turn gets a call of one of them, and a tool result an answer quoting
    /// it, so an agent's tool round trip can be tried end to end.
    pub agent_models: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency_ms: 0,
            tokens_per_second: 0.0,
            completion_tokens: 16,
            embedding_dimensions: 64,
            failure: None,
            cut_stream_after_tokens: None,
            ignore_max_tokens: false,
            agent_models: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockFailure {
    /// Status to answer with (429, 500, 503…).
    pub status: u16,
    /// Fail every Nth request (1 = all).
    #[serde(default = "one")]
    pub every: u64,
    /// `retry-after` seconds sent with the failure.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

fn one() -> u64 {
    1
}

/// A public model name and the deployments that serve it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The public name; with one `*` a pattern (`openai/*`): a requested name it matches
    /// goes to the deployments without a `model` as the part the `*` stands for.
    pub name: String,
    /// Other names clients may use for this model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `owned_by` in `/v1/models`; defaults to the first deployment's provider kind.
    #[serde(default)]
    pub owned_by: Option<String>,
    /// Where it is served: a provider, its model name there, optionally a key and limits.
    pub deployments: Vec<DeploymentConfig>,
    /// Limits on this model route (per key expression; default one shared counter).
    #[serde(default)]
    pub limits: Vec<LimitRuleConfig>,
    /// Which consumers may use it (default: every consumer).
    #[serde(default)]
    pub consumer_restriction: Option<ConsumerRestriction>,
    /// Served at these paths instead of by name on the OpenAI API (an APISIX AI route).
    #[serde(default)]
    pub route: Option<AiRouteConfig>,
    /// APISIX ai-proxy-multi's choice and fallback between the deployments.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    /// The default price of its deployments (USD per million tokens).
    #[serde(default)]
    pub price: Option<Price>,
}

/// One place a model is served: provider + upstream model name + key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// The `name` of a provider.
    pub provider: String,
    /// Model name upstream; defaults to the public name (on an AI route: the request's).
    #[serde(default)]
    pub model: Option<String>,
    /// Top-level body fields set on every request this deployment sends, replacing the
    /// client's (APISIX ai-proxy `options`; `model` is the field above).
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// With the model's `fallback`: higher priorities are tried first.
    #[serde(default)]
    pub priority: i64,
    /// With the model's `fallback`: share of traffic inside its priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides the provider's key for this deployment (several keys = several deployments).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// The provider key's own limits (RPM, TPM, concurrency): a deployment over them is
    /// skipped by routing, and the request fails over to one with headroom.
    #[serde(default)]
    pub limits: Vec<LimitRuleConfig>,
    /// This deployment's price, over the model's field by field.
    #[serde(default)]
    pub price: Option<Price>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// Start at the next deployment each request, fail over through the rest.
    #[default]
    RoundRobin,
    /// Always start at the first deployment.
    Ordered,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `round_robin`: start at the next deployment each request; `ordered`: always at the
    /// first. Either fails over through the rest.
    pub strategy: RoutingStrategy,
    /// Extra attempts on other deployments after a connect error, 429 or 5xx.
    pub retries: u32,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: RoutingStrategy::RoundRobin,
            retries: 2,
            default_max_tokens: 1024,
        }
    }
}

/// How the gateway talks to upstreams.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Longest wait for a TCP (and TLS) connection to an upstream.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub connect_timeout: Duration,
    /// Longest wait for any single read (header or body chunk).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub read_timeout: Duration,
    /// How long an idle pooled connection is kept.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub idle_timeout: Duration,
    /// Pooled idle connections kept per process (restart to change).
    pub pool_size: usize,
    /// PEM file of extra CA certificates trusted in addition to the system roots
    /// (restart to change).
    pub extra_ca_file: Option<PathBuf>,
    /// Largest streamed event (SSE) an upstream may send; a longer one ends the stream
    /// as a protocol error.
    pub max_event_bytes: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(60),
            pool_size: 256,
            extra_ca_file: None,
            max_event_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Hot reload of the config file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Poll the file for changes (SIGHUP always reloads).
    pub watch: bool,
    /// How often the file is checked for changes (with `watch`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            poll_interval: Duration::from_secs(1),
        }
    }
}
