//! The `limits` section and limit rules of `gateway.yaml`.

use super::*;

/// One limit rule: a name (its identity, so a reload that changes the numbers keeps the
/// usage so far) and exactly one of `req`, `conn`, `count`, `tokens` or `spend`.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRuleConfig {
    /// Its identity: unique in its scope, kept across reloads (usage so far is kept).
    pub name: String,
    /// APISIX-style key template: `$consumer_name`, `$remote_addr`, `$http_<header>`,
    /// `$model`, combinations such as `"$consumer_name $http_x_user"`. Default: one
    /// counter for the whole scope.
    #[serde(default)]
    pub key: Option<String>,
    /// What a `key` that resolves no variable means for a request: `remote_addr`
    /// (default), `skip` or `rules`.
    #[serde(default)]
    pub key_unresolved: KeyUnresolved,
    /// limit-req: a request rate (leaky bucket).
    #[serde(default)]
    pub req: Option<ReqRuleConfig>,
    /// limit-conn: concurrent requests.
    #[serde(default)]
    pub conn: Option<ConnRuleConfig>,
    /// limit-count: requests per window.
    #[serde(default)]
    pub count: Option<CountRuleConfig>,
    /// Tokens per window.
    #[serde(default)]
    pub tokens: Option<TokensRuleConfig>,
    /// USD per window.
    #[serde(default)]
    pub spend: Option<SpendRuleConfig>,
    /// APISIX compatibility: status of a rejection (default 429, as the SDKs expect).
    #[serde(default)]
    pub rejected_code: Option<u16>,
    /// APISIX compatibility: answer `{"error_msg": "…"}` instead of the OpenAI error body.
    #[serde(default)]
    pub rejected_msg: Option<String>,
    /// APISIX compatibility: send `X-RateLimit-Limit/Remaining/Reset` (count rules).
    #[serde(default)]
    pub show_limit_quota_header: bool,
    /// APISIX limit-count `rules[].header_prefix` (or the rule's 1-based index): this
    /// rule's quota headers are `X-<prefix>-RateLimit-*`, beside the other rules'.
    #[serde(default)]
    pub quota_header_prefix: Option<String>,
    /// Token rules with `show_limit_quota_header`: APISIX ai-rate-limiting's headers
    /// `X-AI-RateLimit-{Limit,Remaining,Reset}-<suffix>` (the instance name); with
    /// `quota_header_prefix` instead, `X-AI-<prefix>-RateLimit-*` (its `rules`).
    #[serde(default)]
    pub quota_header_suffix: Option<String>,
    /// A request over this limit: `reject` (a 429 at once) or `queue` (wait for headroom,
    /// at most `max_wait`, behind at most `max_queue` others).
    #[serde(default)]
    pub on_limit: OnLimit,
    /// With `on_limit: queue`: the longest a request waits for headroom before its 429.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub max_wait: Duration,
    /// With `on_limit: queue`: the most requests waiting on this rule's key; past it a
    /// request gets its 429 at once.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
}

impl LimitRuleConfig {
    /// The rule's group, if its kind has one set.
    pub fn group(&self) -> Option<&str> {
        self.req
            .as_ref()
            .and_then(|r| r.group.as_deref())
            .or(self.conn.as_ref().and_then(|r| r.group.as_deref()))
            .or(self.count.as_ref().and_then(|r| r.group.as_deref()))
    }
}

/// A limit whose `key` resolves no variable for a request (a header it names is absent,
/// and the key has no `??` default).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyUnresolved {
    /// The client's address is the key (APISIX's limit plugins with `var_combination`).
    #[default]
    RemoteAddr,
    /// The limit does not apply to that request.
    Skip,
    /// APISIX limit-count `rules`: as `skip`, and a request to which none of its scope's
    /// `rules` limits applies is refused with a 500 ("failed to get rate limit rules").
    Rules,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    #[default]
    Reject,
    Queue,
}

fn default_max_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_max_queue() -> usize {
    1000
}

/// limit-req: leaky bucket.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReqRuleConfig {
    /// Requests per second admitted on average.
    pub rate: f64,
    /// Requests above `rate` admitted after a delay (or at once with `nodelay`); past
    /// `rate + burst` a request is refused.
    #[serde(default)]
    pub burst: f64,
    /// Admit burst requests at once instead of delaying them to the rate.
    #[serde(default)]
    pub nodelay: bool,
    /// One bucket shared by every req rule of this group (e.g. the routes of an imported
    /// APISIX service); their numbers and key must be equal.
    #[serde(default)]
    pub group: Option<String>,
}

/// limit-conn: concurrent requests.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnRuleConfig {
    /// Concurrent requests admitted at once.
    pub conn: u64,
    /// Requests above `conn` admitted after `default_conn_delay`; past `conn + burst` a
    /// request is refused.
    #[serde(default)]
    pub burst: u64,
    /// The delay of a request admitted in the burst.
    #[serde(default = "one_second", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub default_conn_delay: Duration,
    /// Accepted for APISIX configs. APISIX 3.16+ never adapts the delay (its limiter is
    /// rebuilt per request), so the delay is always `default_conn_delay` here too.
    #[serde(default)]
    pub only_use_default_delay: bool,
    /// One set of slots shared by every conn rule of this group; their numbers and key
    /// must be equal.
    #[serde(default)]
    pub group: Option<String>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// limit-count: fixed window opened by the first request.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountRuleConfig {
    /// A number, or an APISIX template resolved per request (`"${http_count ?? 2}"`).
    pub count: Amount,
    /// A duration, or a template giving seconds.
    pub time_window: Window,
    /// APISIX `group`: every count rule with this group (anywhere in the file) shares one
    /// counter per resolved key. Their `count`, `time_window` and `key` must be equal.
    #[serde(default)]
    pub group: Option<String>,
    /// `fixed` (opened by a key's first request) or `sliding` (APISIX 3.18: epoch-aligned
    /// windows, the previous one weighted by its overlap; rejections not counted).
    #[serde(default)]
    pub window_type: WindowType,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    #[default]
    Fixed,
    Sliding,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenStrategy {
    #[default]
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    /// `cost_expr` over the answer's usage fields.
    Expression,
}

/// Token limit per window, reserved at admission and reconciled with real usage.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokensRuleConfig {
    /// A number, or an APISIX template resolved per request.
    pub limit: Amount,
    /// A duration, or a template giving seconds.
    pub time_window: Window,
    /// What counts: `total_tokens` (default), `prompt_tokens`, `completion_tokens`, or
    /// `expression` (`cost_expr`).
    #[serde(default)]
    pub strategy: TokenStrategy,
    /// With `strategy: expression`: the cost of an answer from its usage fields, e.g.
    /// `input_tokens + cache_read_input_tokens * 0.1 + output_tokens` (APISIX
    /// ai-rate-limiting's `cost_expr`).
    #[serde(default)]
    pub cost_expr: Option<String>,
    /// `reserve` (default): admitted only if the estimate fits. `any_left` (APISIX): admitted
    /// while one token is left, reserving what is left up to the estimate. `hard`: the
    /// completion is capped at what is left (the cap sent upstream, exactly it reserved).
    #[serde(default)]
    pub admission: TokenAdmission,
}

/// How a token limit or spend budget admits a request ([`crate::gateway::cap`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenAdmission {
    /// Admitted only if its estimate (prompt + `max_tokens` × choices) fits what is left;
    /// a request larger than the whole limit is refused.
    #[default]
    Reserve,
    /// APISIX's ai-rate-limiting: admitted while one token is left.
    AnyLeft,
    /// The completion is capped at what the limit can still pay for: that cap is sent
    /// upstream (`max_tokens` or the surface's own field) and exactly it is reserved, so
    /// the limit cannot be overspent.
    Hard,
}

fn hard_admission() -> TokenAdmission {
    TokenAdmission::Hard
}

/// A spend budget per window: USD, reserved at admission from the request's estimate at
/// the highest price among the model's deployments and reconciled with the real cost
/// (see `crate::limits::rules::RuleKind::Spend`).
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendRuleConfig {
    /// USD the key may spend per window (priced from the deployments' `price`).
    pub limit_usd: f64,
    /// The window's length (`24h`, `30days`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub time_window: Duration,
    /// `hard` (default) or `reserve` (as for token limits; `any_left` is for token
    /// limits only).
    #[serde(default = "hard_admission")]
    pub admission: TokenAdmission,
}

/// Where the counters of every limit rule live.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LimitPolicy {
    /// In-process: exact for one gateway.
    #[default]
    Local,
    /// One Redis server shared by every gateway instance.
    Redis,
    /// A Redis Cluster shared by every gateway instance.
    RedisCluster,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `local` (this process), `redis` or `redis-cluster` (shared by every instance).
    pub policy: LimitPolicy,
    /// The Redis the `redis` and `redis-cluster` policies use.
    pub redis: RedisConfig,
    /// When Redis cannot be reached: `true` decides with the local counters of this
    /// instance (visible in `gateway_limiter_degraded`), `false` answers 503.
    pub allow_degradation: bool,
    /// Concurrency slots and token reservations are leases of this length, refreshed every
    /// third of it while the request runs: a killed gateway's slots free up after it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub lease_ttl: Duration,
    /// Redis policies: decide count rules whose window is longer than this from local
    /// counters, pushing deltas to Redis this often (faster; see docs/limits.md, accuracy
    /// bound). Unset: every decision is made in Redis.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Option<DurationText>")]
    pub sync_interval: Option<Duration>,
    /// Most limit counters held in this instance's memory (the `local` policy and the
    /// degraded fallback). When full, a new counter evicts the one due to end soonest
    /// (`gateway_limiter_local_evictions_total`); that key starts afresh.
    pub local_max_keys: usize,
    /// Names of the APISIX quota headers (APISIX `plugin_metadata` of limit-count).
    pub quota_headers: QuotaHeaderNames,
}

/// The names of APISIX's quota headers.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaHeaderNames {
    /// The limit's header.
    pub limit: String,
    /// The header of what is left.
    pub remaining: String,
    /// The header of the seconds until the window resets.
    pub reset: String,
}

impl Default for QuotaHeaderNames {
    fn default() -> Self {
        QuotaHeaderNames {
            limit: "X-RateLimit-Limit".into(),
            remaining: "X-RateLimit-Remaining".into(),
            reset: "X-RateLimit-Reset".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            policy: LimitPolicy::Local,
            redis: RedisConfig::default(),
            allow_degradation: false,
            lease_ttl: Duration::from_secs(15),
            sync_interval: None,
            local_max_keys: DEFAULT_LOCAL_MAX_KEYS,
            quota_headers: QuotaHeaderNames::default(),
        }
    }
}

/// The Redis of the shared limit policies.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`); policy `redis`.
    pub url: Option<Secret>,
    /// Seed nodes (`redis://host:port` each); policy `redis-cluster`.
    pub nodes: Vec<Secret>,
    /// Longest wait for one Redis call; past it the call counts as a Redis fault.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Prefix of every key the gateway writes (several gateways fleets on one Redis).
    pub key_prefix: String,
    /// Quota leases: a hot fixed-window count is counted in Redis in slices that this
    /// instance then spends without a call (exact: a window never admits past its count;
    /// see docs/limits.md). `false`: one Redis call per request.
    pub quota_leases: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            nodes: Vec::new(),
            timeout: Duration::from_secs(1),
            key_prefix: String::new(),
            quota_leases: true,
        }
    }
}
