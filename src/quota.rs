//! The budgets and quotas limits report (for the 429 answer and the rate-limit headers): a
//! leaf module, so the error enum can name them without depending on the limiter.

/// What kind of budget a quota or rejection is about (OpenAI's `requests` / `tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Requests,
    Tokens,
    Concurrency,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Requests | Budget::Concurrency => "requests",
            Budget::Tokens => "tokens",
        }
    }
}

/// A quota seen while admitting, for the rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub budget: Budget,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    /// Also sent as APISIX's `X-RateLimit-*` headers (`show_limit_quota_header`).
    pub apisix_header: bool,
}
