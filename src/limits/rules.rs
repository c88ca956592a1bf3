//! Compiled limit rules: a config rule plus the identity of its counters.
//!
//! A rule's identity is its scope and name (`consumer:jack/rpm`), never its numbers, so a
//! reload that changes a limit keeps the usage consumed so far (APISIX keys counters by a
//! hash of the config and resets them on any edit: reference bug 9).

use super::conn::ConnLimit;
use super::count::CountLimit;
use super::req::ReqLimit;
use super::tokens::TokenLimit;
use crate::config::cost_expr::CostExpr;
use crate::config::key::{KeyContext, KeyTemplate};
use crate::config::schema::{LimitRuleConfig, OnLimit, TokenStrategy};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleKind {
    Req(ReqLimit),
    Conn(ConnLimit),
    Count(CountLimit),
    Tokens(TokenLimit, TokenStrategy),
    /// A spend budget: the token algorithm in micro-dollars (`limit` µUSD per window),
    /// each request reserving its spend estimate and charged its real cost.
    Spend(TokenLimit),
}

impl RuleKind {
    /// The window algorithm of a token or spend rule (they differ only in their unit).
    pub fn reservation(&self) -> Option<TokenLimit> {
        match self {
            RuleKind::Tokens(l, _) | RuleKind::Spend(l) => Some(*l),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// `scope/name`: the identity of the rule's counters.
    pub id: Arc<str>,
    /// What the rule's counters are about, without the rule's name: the scope
    /// (`consumer:a`, `model:m`, …) or the group. On Redis Cluster a counter's hash tag is
    /// this plus the counter's resolved key, so the counters of one entity share a slot
    /// and unrelated entities spread over the nodes.
    pub entity: Arc<str>,
    pub kind: RuleKind,
    /// `None`: one counter for the whole scope.
    pub key: Option<KeyTemplate>,
    /// What a key that resolves no variable means.
    pub key_unresolved: crate::config::schema::KeyUnresolved,
    /// How a rejection by this rule is answered.
    pub answer: RejectAnswer,
    /// Where the rule is attached.
    pub scope: Scope,
    /// `on_limit: queue`: wait for headroom instead of a 429.
    pub queue: Option<QueueSpec>,
    /// Token rules with `strategy: expression`: the parsed `cost_expr`.
    pub cost_expr: Option<Arc<CostExpr>>,
    /// APISIX 3.18 templates of the rule's numbers, resolved per request.
    pub templates: Option<Arc<NumberTemplates>>,
    /// A hard token limit or spend budget: requests' completions are capped to fit it
    /// ([`crate::gateway::cap`]).
    pub hard: bool,
}

/// The templated numbers of a count or token rule (`None`: the configured value).
#[derive(Debug, Clone)]
pub struct NumberTemplates {
    pub amount: Option<KeyTemplate>,
    /// Seconds.
    pub window: Option<KeyTemplate>,
}

impl NumberTemplates {
    /// `kind` with the templated numbers of one request (an error APISIX answers with 500).
    pub fn apply(&self, kind: RuleKind, cx: &KeyContext<'_>) -> Result<RuleKind, String> {
        let amount = self.amount.as_ref().map(|t| t.number(cx)).transpose()?;
        let window_ms = self
            .window
            .as_ref()
            .map(|t| t.number(cx).map(|s| s.saturating_mul(1000)))
            .transpose()?;
        Ok(match kind {
            RuleKind::Count(mut l) => {
                l.count = amount.unwrap_or(l.count);
                l.window_ms = window_ms.unwrap_or(l.window_ms);
                RuleKind::Count(l)
            }
            RuleKind::Tokens(mut l, strategy) => {
                l.limit = amount.unwrap_or(l.limit);
                l.window_ms = window_ms.unwrap_or(l.window_ms);
                RuleKind::Tokens(l, strategy)
            }
            other => other,
        })
    }
}

/// How a token or spend rule charges an answer.
#[derive(Debug, Clone)]
pub enum Charge {
    /// Tokens by the rule's strategy (and the expression of `strategy: expression`).
    Tokens {
        strategy: TokenStrategy,
        expr: Option<Arc<CostExpr>>,
    },
    /// The answer's cost in micro-dollars.
    Spend,
}

/// How long and behind how many others a request over a queueing rule may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub max_wait: std::time::Duration,
    pub max_queue: usize,
}

/// Longest key value stored as it is; longer ones are stored as a digest.
pub const MAX_RAW_KEY: usize = 64;

/// A rule's algorithm (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Req,
    Conn,
    Count,
    Tokens,
    Spend,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Req,
        Kind::Conn,
        Kind::Count,
        Kind::Tokens,
        Kind::Spend,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Req => "req",
            Kind::Conn => "conn",
            Kind::Count => "count",
            Kind::Tokens => "tokens",
            Kind::Spend => "spend",
        }
    }
}

/// Where a rule is attached (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Consumer,
    Model,
    Deployment,
    Route,
    Other,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Consumer,
        Scope::Model,
        Scope::Deployment,
        Scope::Route,
        Scope::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Scope::Consumer => "consumer",
            Scope::Model => "model",
            Scope::Deployment => "deployment",
            Scope::Route => "route",
            Scope::Other => "other",
        }
    }

    /// The scope of a rule attached at `scope` (`consumer:team-a`, `model:gpt`, …).
    fn of(scope: &str) -> Scope {
        Scope::ALL
            .into_iter()
            .find(|s| {
                let l = s.label();
                scope.starts_with(l) && scope[l.len()..].starts_with(':')
            })
            .unwrap_or(Scope::Other)
    }
}

/// APISIX-compatible answer settings of a rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RejectAnswer {
    /// Rejection status; `None` = 429.
    pub code: Option<u16>,
    /// `{"error_msg": …}` body instead of the OpenAI error.
    pub msg: Option<Arc<str>>,
    /// APISIX's `X-RateLimit-*` quota headers, and how they are named.
    pub quota_header: Option<crate::quota::ApisixHeader>,
}

fn kind_of(kind: &RuleKind) -> Kind {
    match kind {
        RuleKind::Req(_) => Kind::Req,
        RuleKind::Conn(_) => Kind::Conn,
        RuleKind::Count(_) => Kind::Count,
        RuleKind::Tokens(..) => Kind::Tokens,
        RuleKind::Spend(_) => Kind::Spend,
    }
}

impl Rule {
    /// Compile a validated rule of `scope` (e.g. `consumer:jack`).
    pub fn compile(scope: &str, c: &LimitRuleConfig) -> Option<Rule> {
        let kind = if let Some(r) = &c.req {
            RuleKind::Req(ReqLimit {
                rate: r.rate,
                burst: r.burst,
                nodelay: r.nodelay,
            })
        } else if let Some(r) = &c.conn {
            RuleKind::Conn(ConnLimit {
                conn: r.conn,
                burst: r.burst,
                default_conn_delay_ms: r.default_conn_delay.as_millis() as u64,
            })
        } else if let Some(r) = &c.count {
            RuleKind::Count(CountLimit {
                count: r.count.fixed,
                window_ms: r.time_window.fixed.as_millis() as u64,
                sliding: r.window_type == crate::config::schema::WindowType::Sliding,
            })
        } else if let Some(s) = &c.spend {
            RuleKind::Spend(TokenLimit {
                limit: micro_usd(s.limit_usd),
                window_ms: s.time_window.as_millis() as u64,
                any_left: false,
            })
        } else {
            let t = c.tokens.as_ref()?;
            RuleKind::Tokens(
                TokenLimit {
                    limit: t.limit.fixed,
                    window_ms: t.time_window.fixed.as_millis() as u64,
                    any_left: t.admission == crate::config::schema::TokenAdmission::AnyLeft,
                },
                t.strategy,
            )
        };
        // A group's counters belong to the group, not to the rule's scope.
        let id = match (c.group(), c.count.is_some()) {
            (Some(group), true) => format!("group:{group}"),
            (Some(group), false) => format!("group:{}:{group}", kind_of(&kind).label()),
            (None, _) => format!("{scope}/{}", c.name),
        };
        let entity: Arc<str> = match c.group() {
            Some(_) => id.as_str().into(),
            None => scope.into(),
        };
        // Validation has parsed it.
        let cost_expr = c
            .tokens
            .as_ref()
            .and_then(|t| t.cost_expr.as_deref())
            .and_then(|e| CostExpr::parse(e).ok())
            .map(Arc::new);
        let parse = |t: Option<&String>| t.and_then(|t| KeyTemplate::parse(t).ok());
        let (amount, window) = match (&c.count, &c.tokens) {
            (Some(r), _) => (
                parse(r.count.template.as_ref()),
                parse(r.time_window.template.as_ref()),
            ),
            (_, Some(t)) => (
                parse(t.limit.template.as_ref()),
                parse(t.time_window.template.as_ref()),
            ),
            _ => (None, None),
        };
        let templates = (amount.is_some() || window.is_some())
            .then(|| Arc::new(NumberTemplates { amount, window }));
        Some(Rule {
            templates,
            id: id.into(),
            entity,
            kind,
            cost_expr,
            key: c.key.as_deref().and_then(|k| KeyTemplate::parse(k).ok()),
            key_unresolved: c.key_unresolved,
            hard: c
                .tokens
                .as_ref()
                .map(|t| t.admission)
                .or(c.spend.as_ref().map(|s| s.admission))
                == Some(crate::config::schema::TokenAdmission::Hard),
            scope: Scope::of(scope),
            queue: (c.on_limit == OnLimit::Queue).then_some(QueueSpec {
                max_wait: c.max_wait,
                max_queue: c.max_queue,
            }),
            answer: RejectAnswer {
                code: c.rejected_code,
                msg: c.rejected_msg.as_deref().map(Arc::from),
                quota_header: c.show_limit_quota_header.then(|| {
                    crate::quota::ApisixHeader::new(
                        c.quota_header_prefix.as_deref().map(Arc::from),
                        c.tokens.is_some(),
                        c.quota_header_suffix.as_deref().map(Arc::from),
                    )
                }),
            },
        })
    }

    /// Compile every rule of a scope.
    pub fn compile_all(scope: &str, rules: &[LimitRuleConfig]) -> Vec<Rule> {
        rules
            .iter()
            .filter_map(|r| Rule::compile(scope, r))
            .collect()
    }

    /// How the rule charges an answer (token and spend rules).
    pub fn charge(&self) -> Option<Charge> {
        match self.kind {
            RuleKind::Tokens(_, strategy) => Some(Charge::Tokens {
                strategy,
                expr: self.cost_expr.clone(),
            }),
            RuleKind::Spend(_) => Some(Charge::Spend),
            _ => None,
        }
    }

    /// The rule's algorithm.
    pub fn algorithm(&self) -> Kind {
        kind_of(&self.kind)
    }

    /// Whether the rule applies to a request: its key resolves a variable, or an
    /// unresolved key falls back to the client's address.
    pub fn applies(&self, cx: &KeyContext<'_>) -> bool {
        self.key_unresolved == crate::config::schema::KeyUnresolved::RemoteAddr
            || self.key.as_ref().is_none_or(|k| k.resolves(cx))
    }

    /// Whether the rule's key reads request headers.
    pub fn uses_headers(&self) -> bool {
        self.key.as_ref().is_some_and(KeyTemplate::uses_headers)
    }

    /// The counter this request uses. A resolved value longer than [`MAX_RAW_KEY`] bytes
    /// (a client can send a header of many KiB) is stored as its SHA-256 digest, so a
    /// counter's key has a fixed size in memory and in Redis whatever the client sends.
    pub fn counter_key(&self, cx: &KeyContext<'_>) -> Arc<str> {
        match &self.key {
            Some(k) => {
                let value = k.resolve(cx);
                if value.len() > MAX_RAW_KEY {
                    use sha2::Digest;
                    let digest = sha2::Sha256::digest(value.as_bytes());
                    format!("{}\u{1f}#{}", self.id, hex::encode(&digest[..16])).into()
                } else {
                    format!("{}\u{1f}{}", self.id, value).into()
                }
            }
            None => self.id.clone(),
        }
    }
}

/// An amount of USD in whole micro-dollars (rounded to the nearest; negative → 0).
pub fn micro_usd(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_key_values_are_stored_as_a_fixed_size_digest() {
        let c: LimitRuleConfig = serde_yaml_ng::from_str(
            "{name: u, key: $http_x_user, count: {count: 1, time_window: 60s}}",
        )
        .unwrap();
        let rule = Rule::compile("consumer/a", &c).unwrap();
        let key = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("x-user", v.parse().unwrap());
            let cx = KeyContext {
                consumer: None,
                remote_addr: Some("127.0.0.1"),
                model: "m",
                headers: &h,
            };
            rule.counter_key(&cx)
        };
        assert!(key("alice").ends_with("\u{1f}alice"));
        let long = "x".repeat(500 * 1024);
        let (a, b) = (key(&long), key(&format!("{long}y")));
        assert_ne!(a, b, "distinct values stay distinct");
        assert_eq!(a, key(&long), "and stable");
        assert!(a.len() < rule.id.len() + 40, "{}", a.len());
    }

    #[test]
    fn unresolved_keys_skip_or_refuse_as_configured() {
        use crate::limits::admission::checks;
        let rule = |yaml: &str| {
            let c: LimitRuleConfig = serde_yaml_ng::from_str(yaml).unwrap();
            Rule::compile("route/r", &c).unwrap()
        };
        let fallback = rule("{name: a, key: $http_user, count: {count: 1, time_window: 60s}}");
        let skip = rule(
            "{name: b, key: $http_user, key_unresolved: skip, count: {count: 1, time_window: 60s}}",
        );
        let r1 = rule(
            "{name: c, key: $http_user, key_unresolved: rules, count: {count: 1, time_window: 60s}}",
        );
        let r2 = rule(
            "{name: d, key: $http_org, key_unresolved: rules, count: {count: 1, time_window: 60s}}",
        );
        let mut h = http::HeaderMap::new();
        fn cx(h: &http::HeaderMap) -> KeyContext<'_> {
            KeyContext {
                consumer: None,
                remote_addr: Some("10.0.0.1"),
                model: "m",
                headers: h,
            }
        }
        fn names(v: Vec<crate::limits::admission::Check<'_>>) -> Vec<String> {
            v.iter().map(|c| c.key.to_string()).collect()
        }
        // No header: the default falls back to the address, `skip` is left out, and the
        // `rules` pair (none applying) is APISIX's 500.
        let got = checks([&fallback, &skip].into_iter(), &cx(&h)).unwrap();
        assert_eq!(names(got), ["route/r/a\u{1f}10.0.0.1"]);
        let e = checks([&r1, &r2].into_iter(), &cx(&h)).err().unwrap();
        assert!(e.contains("no rule applies"), "{e}");
        h.insert("org", "acme".parse().unwrap());
        let got = checks([&r1, &r2].into_iter(), &cx(&h)).unwrap();
        assert_eq!(names(got), ["route/r/d\u{1f}acme"]);
    }
}
