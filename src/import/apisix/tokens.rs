//! APISIX ai-rate-limiting as gateway token rules. Its admission is kept (`admission:
//! any_left`: admitted while one token is left, as APISIX's dry run decides) and so are its
//! headers (`X-AI-RateLimit-*-<instance>`, or `X-AI-<prefix>-RateLimit-*` for `rules`).

use super::super::limits::{amounts, answer, key, unknown_fields, Store};
use super::super::yaml::{get, map, s, text};
use super::super::Unmapped;
use serde_yaml_ng::Value;

/// The token rules of one ai-rate-limiting plugin.
#[derive(Default)]
pub struct TokenRules {
    /// `instances[]`: (instance name, rule).
    pub per_instance: Vec<(String, Value)>,
    /// Top-level `limit`: a rule for every instance without its own (one counter each).
    pub every_instance: Option<Value>,
    /// `rules[]`: one budget for the route, whichever instance serves.
    pub route: Vec<Value>,
}

impl TokenRules {
    /// The rules of deployment `instance` of route `route`: its own, else the top-level
    /// one, each naming its headers after the instance. Named after the route, so two
    /// routes on one provider key keep their own counters, as APISIX's do.
    pub fn for_instance(&self, instance: &str, route: &str) -> Vec<Value> {
        let own: Vec<Value> = self
            .per_instance
            .iter()
            .filter(|(i, _)| i == instance)
            .map(|(_, r)| r.clone())
            .collect();
        let mut rules = if own.is_empty() {
            self.every_instance.iter().cloned().collect()
        } else {
            own
        };
        for r in &mut rules {
            if let Some(m) = r.as_mapping_mut() {
                m.insert(s("name"), s(format!("ai-rate-limiting@{route}")));
                if m.get("show_limit_quota_header") == Some(&Value::Bool(true)) {
                    m.insert(s("quota_header_suffix"), s(instance));
                }
            }
        }
        rules
    }
}

pub fn token_rules(
    conf: &Value,
    at: &str,
    store: &mut Store,
    out: &mut Vec<Unmapped>,
) -> TokenRules {
    let at = format!("{at}.plugins.ai-rate-limiting");
    unknown_fields("ai-rate-limiting", conf, &at, out);
    let mut cost_expr = Value::Null;
    let strategy = match text(conf, "limit_strategy")
        .as_deref()
        .unwrap_or("total_tokens")
    {
        s @ ("total_tokens" | "prompt_tokens" | "completion_tokens") => s.to_string(),
        "expression" => match text(conf, "cost_expr") {
            Some(e) => {
                cost_expr = s(e);
                "expression".into()
            }
            None => {
                out.push(Unmapped {
                    at: format!("{at}.cost_expr"),
                    what: "limit_strategy expression without cost_expr; total_tokens is used"
                        .into(),
                });
                "total_tokens".into()
            }
        },
        other => {
            out.push(Unmapped {
                at: format!("{at}.limit_strategy"),
                what: format!("`{other}` is not supported; total_tokens is used"),
            });
            "total_tokens".into()
        }
    };
    let show = get(conf, "show_limit_quota_header")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let rule = |name: String, (limit, window): (Value, Value), k: Option<String>| {
        let mut r = vec![
            ("name", s(name)),
            ("key", k.map_or(Value::Null, s)),
            (
                "tokens",
                map(vec![
                    ("limit", limit),
                    ("time_window", window),
                    ("strategy", s(strategy.clone())),
                    ("cost_expr", cost_expr.clone()),
                    ("admission", s("any_left")),
                ]),
            ),
            ("show_limit_quota_header", Value::Bool(show)),
        ];
        answer(conf, &mut r);
        map(r)
    };
    let mut rules = TokenRules::default();
    for i in get(conf, "instances")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        match (text(i, "name"), amounts(i, "limit")) {
            (Some(name), Ok(a)) => {
                let r = rule("ai-rate-limiting".into(), a, None);
                rules.per_instance.push((name, r));
            }
            (_, Err(what)) => out.push(Unmapped {
                at: format!("{at}.instances"),
                what,
            }),
            (None, _) => out.push(Unmapped {
                at: format!("{at}.instances"),
                what: "an instance needs a name".into(),
            }),
        }
    }
    if get(conf, "limit").is_some() {
        match amounts(conf, "limit") {
            Ok(a) => rules.every_instance = Some(rule("ai-rate-limiting".into(), a, None)),
            Err(what) => out.push(Unmapped {
                at: at.clone(),
                what,
            }),
        }
    }
    for (i, r) in get(conf, "rules")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let rat = format!("{at}.rules[{i}]");
        let a = match amounts(r, "count") {
            Ok(a) => a,
            Err(what) => {
                out.push(Unmapped { at: rat, what });
                continue;
            }
        };
        let mut rc = map(vec![("key", get(r, "key").cloned().unwrap_or(Value::Null))]);
        if let Some(m) = rc.as_mapping_mut() {
            m.insert(s("key_type"), s("var_combination"));
        }
        let k = key(&rc, &rat, out);
        let mut tr = rule(format!("ai-rate-limiting-{}", i + 1), a, k);
        let prefix = text(r, "header_prefix").unwrap_or_else(|| (i + 1).to_string());
        if let Some(m) = tr.as_mapping_mut() {
            m.insert(s("quota_header_prefix"), s(prefix));
        }
        rules.route.push(tr);
    }
    store.policy(conf, &at, out);
    store.degradation(conf, &at, out);
    rules
}
