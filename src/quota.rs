//! The budgets and quotas limits report (for the 429 answer and the rate-limit headers): a
//! leaf module, so the error enum can name them without depending on the limiter.

/// What kind of budget a quota or rejection is about (OpenAI's `requests` / `tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Requests,
    Tokens,
    Concurrency,
    /// A spend budget (micro-dollars).
    Spend,
}

impl Budget {
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Requests | Budget::Concurrency => "requests",
            Budget::Tokens => "tokens",
            Budget::Spend => "spend",
        }
    }
}

/// A quota seen while admitting, for the rate-limit headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub budget: Budget,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    /// Also sent as APISIX's `X-RateLimit-*` headers (`show_limit_quota_header`).
    pub apisix_header: Option<ApisixHeader>,
}

/// How a limit-count rule names its APISIX quota headers: the configured names
/// (`X-RateLimit-Limit`, … by default), with a rule's prefix (APISIX `rules[].header_prefix`,
/// or the rule's 1-based index) put before their first `RateLimit-`.
///
/// A token rule's are ai-rate-limiting's: `X-AI-RateLimit-*` (never renamed by metadata),
/// with the instance name after them (`X-AI-RateLimit-Limit-primary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApisixHeader {
    pub prefix: Option<std::sync::Arc<str>>,
    /// ai-rate-limiting's names.
    pub ai: bool,
    pub suffix: Option<std::sync::Arc<str>>,
}

impl ApisixHeader {
    /// `base` with this prefix: `X-RateLimit-Limit` + `jack` → `X-jack-RateLimit-Limit`.
    /// A name without `RateLimit-` is left as it is (APISIX does the same).
    pub fn name(&self, base: &str) -> String {
        let mut name = match (&self.prefix, base.find("RateLimit-")) {
            (Some(p), Some(at)) => format!("{}{p}-{}", &base[..at], &base[at..]),
            _ => base.to_string(),
        };
        if let Some(s) = &self.suffix {
            name.push('-');
            name.push_str(s);
        }
        name
    }

    /// The names of the three headers: the configured ones, or ai-rate-limiting's.
    pub fn names(&self, configured: [&str; 3]) -> [String; 3] {
        let ai = [
            "X-AI-RateLimit-Limit",
            "X-AI-RateLimit-Remaining",
            "X-AI-RateLimit-Reset",
        ];
        let bases = if self.ai { ai } else { configured };
        bases.map(|b| self.name(b))
    }
}
