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

use http::HeaderName;
use std::sync::{Arc, OnceLock};

/// How a limit-count rule names its APISIX quota headers: the configured names
/// (`X-RateLimit-Limit`, … by default), with a rule's prefix (APISIX `rules[].header_prefix`,
/// or the rule's 1-based index) put before their first `RateLimit-`.
///
/// A token rule's are ai-rate-limiting's: `X-AI-RateLimit-*` (never renamed by metadata),
/// with the instance name after them (`X-AI-RateLimit-Limit-primary`).
#[derive(Debug, Clone, Default)]
pub struct ApisixHeader {
    pub prefix: Option<Arc<str>>,
    /// ai-rate-limiting's names.
    pub ai: bool,
    pub suffix: Option<Arc<str>>,
    /// The three names as header names, built on first use (they go out on every answer
    /// of the rule), with the configured names they were built from. Shared by the clones.
    built: Arc<OnceLock<Built>>,
}

#[derive(Debug)]
struct Built {
    configured: [Box<str>; 3],
    names: [Option<HeaderName>; 3],
}

/// Equal when they name the same headers (the built names are a cache).
impl PartialEq for ApisixHeader {
    fn eq(&self, o: &Self) -> bool {
        self.prefix == o.prefix && self.ai == o.ai && self.suffix == o.suffix
    }
}

impl Eq for ApisixHeader {}

impl ApisixHeader {
    pub fn new(prefix: Option<Arc<str>>, ai: bool, suffix: Option<Arc<str>>) -> Self {
        ApisixHeader {
            prefix,
            ai,
            suffix,
            built: Arc::default(),
        }
    }

    /// [`Self::names`] as lower-case header names (`None` where a name is no valid header
    /// name), built once for the configured names and then cloned.
    pub fn header_names(&self, configured: [&str; 3]) -> [Option<HeaderName>; 3] {
        let same = |b: &Built| b.configured.iter().zip(configured).all(|(a, c)| **a == *c);
        match self.built.get() {
            Some(b) if same(b) => b.names.clone(),
            Some(_) => self.build(configured),
            None => {
                let names = self.build(configured);
                let _ = self.built.set(Built {
                    configured: configured.map(Box::from),
                    names: names.clone(),
                });
                names
            }
        }
    }

    fn build(&self, configured: [&str; 3]) -> [Option<HeaderName>; 3] {
        self.names(configured).map(|mut n| {
            n.make_ascii_lowercase();
            HeaderName::try_from(n).ok()
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: [&str; 3] = [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ];

    fn names(h: &ApisixHeader, configured: [&str; 3]) -> Vec<String> {
        h.header_names(configured)
            .iter()
            .map(|n| n.as_ref().map_or("-".into(), |n| n.to_string()))
            .collect()
    }

    #[test]
    fn header_names_are_built_once_for_the_names_they_were_built_from() {
        let h = ApisixHeader::new(Some("jack".into()), false, Some("x".into()));
        let want = [
            "x-jack-ratelimit-limit-x",
            "x-jack-ratelimit-remaining-x",
            "x-jack-ratelimit-reset-x",
        ];
        assert_eq!(names(&h, DEFAULT), want);
        // A clone shares what was built, and says the same.
        assert_eq!(names(&h.clone(), DEFAULT), want);
        // Other configured names are never answered from what was built for the first.
        let other = ["Quota-RateLimit-Max", "Quota-RateLimit-Left", "Bad Name"];
        assert_eq!(
            names(&h, other),
            [
                "quota-jack-ratelimit-max-x",
                "quota-jack-ratelimit-left-x",
                "-"
            ]
        );
        assert_eq!(names(&h, DEFAULT), want);
        // ai-rate-limiting's names ignore the configured ones.
        let ai = ApisixHeader::new(None, true, Some("primary".into()));
        assert_eq!(names(&ai, other)[0], "x-ai-ratelimit-limit-primary");
        // The cache takes no part in equality.
        assert_eq!(
            h,
            ApisixHeader::new(Some("jack".into()), false, Some("x".into()))
        );
    }
}
