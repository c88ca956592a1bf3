//! The APISIX limit plugins (limit-req, limit-conn, limit-count, ai-rate-limiting) as
//! gateway limit rules, and their store settings (policy, Redis, degradation, sync) as the
//! gateway's one `limits` section.

use super::yaml::{duration, flag, get, map, num, number, s, text};
use super::Unmapped;
use serde_yaml_ng::Value;

/// The gateway's `limits` section, gathered from every plugin.
#[derive(Default)]
pub struct Store {
    /// (policy, redis settings, where it came from)
    pub policy: Option<(String, Value, String)>,
    /// The first plugin with `policy: local` (its counters would be shared once another
    /// plugin brings Redis: the gateway has one store).
    pub local_at: Option<String>,
    pub allow_degradation: Option<bool>,
    pub sync_interval: Option<f64>,
    /// limit-count groups seen: name → (where, count, time_window, key).
    pub groups: std::collections::HashMap<String, (String, String, String, Option<String>)>,
    /// Problems that make the import impossible (a group whose members disagree).
    pub errors: Vec<String>,
    /// limit-count's `plugin_metadata` header names: (limit, remaining, reset).
    pub quota_headers: Option<(String, String, String)>,
}

impl Store {
    pub fn section(&self) -> Value {
        let (policy, redis) = match &self.policy {
            Some((p, r, _)) => (s(p.clone()), r.clone()),
            None => (Value::Null, Value::Null),
        };
        map(vec![
            ("policy", policy),
            ("redis", redis),
            (
                "allow_degradation",
                self.allow_degradation
                    .filter(|d| *d)
                    .map_or(Value::Null, Value::Bool),
            ),
            (
                "sync_interval",
                self.sync_interval.map_or(Value::Null, duration),
            ),
            (
                "quota_headers",
                self.quota_headers
                    .as_ref()
                    .map_or(Value::Null, |(l, r, t)| {
                        map(vec![
                            ("limit", s(l.clone())),
                            ("remaining", s(r.clone())),
                            ("reset", s(t.clone())),
                        ])
                    }),
            ),
        ])
    }

    /// Take a plugin's `policy` and Redis fields.
    pub(crate) fn policy(&mut self, conf: &Value, at: &str, out: &mut Vec<Unmapped>) {
        let policy = text(conf, "policy").unwrap_or_else(|| "local".into());
        let shared = |local: &str, first: &str| {
            Unmapped {
            at: local.to_string(),
            what: format!(
                "policy local, but {first} uses Redis: the gateway has one limits store, so these counters are shared through it too"
            ),
        }
        };
        let redis = match policy.as_str() {
            "local" => {
                match &self.policy {
                    Some((_, _, first)) => out.push(shared(at, first)),
                    None => {
                        self.local_at.get_or_insert_with(|| at.to_string());
                    }
                }
                return;
            }
            "redis" => {
                let host = text(conf, "redis_host").unwrap_or_else(|| "127.0.0.1".into());
                let port = text(conf, "redis_port").unwrap_or_else(|| "6379".into());
                let db = text(conf, "redis_database").unwrap_or_else(|| "0".into());
                let scheme = if flag(conf, "redis_ssl") == Some(true) {
                    "rediss"
                } else {
                    "redis"
                };
                let auth = match (text(conf, "redis_username"), text(conf, "redis_password")) {
                    (Some(u), Some(p)) => format!("{u}:{p}@"),
                    (None, Some(p)) => format!(":{p}@"),
                    _ => String::new(),
                };
                map(vec![
                    ("url", s(format!("{scheme}://{auth}{host}:{port}/{db}"))),
                    ("timeout", timeout(conf)),
                ])
            }
            "redis-cluster" => {
                let pass = text(conf, "redis_password")
                    .map(|p| format!(":{p}@"))
                    .unwrap_or_default();
                let nodes: Vec<Value> = get(conf, "redis_cluster_nodes")
                    .and_then(Value::as_sequence)
                    .map(|n| {
                        n.iter()
                            .filter_map(Value::as_str)
                            .map(|hp| s(format!("redis://{pass}{hp}")))
                            .collect()
                    })
                    .unwrap_or_default();
                map(vec![
                    ("nodes", Value::Sequence(nodes)),
                    ("timeout", timeout(conf)),
                ])
            }
            other => {
                out.push(Unmapped {
                    at: at.to_string(),
                    what: format!("policy `{other}` is not supported (local, redis, redis-cluster are); imported as local"),
                });
                return;
            }
        };
        match &self.policy {
            None => {
                if let Some(local) = self.local_at.take() {
                    out.push(shared(&local, at));
                }
                self.policy = Some((policy, redis, at.to_string()));
            }
            Some((p, r, first)) if *p != policy || *r != redis => out.push(Unmapped {
                at: at.to_string(),
                what: format!(
                    "a different Redis store than {first}: the gateway has one limits store for every rule (the first one is used)"
                ),
            }),
            Some(_) => {}
        }
    }

    pub(crate) fn degradation(&mut self, conf: &Value, at: &str, out: &mut Vec<Unmapped>) {
        let d = flag(conf, "allow_degradation").unwrap_or(false);
        match self.allow_degradation {
            None => self.allow_degradation = Some(d),
            Some(prev) if prev != d => out.push(Unmapped {
                at: at.to_string(),
                what: "allow_degradation differs between plugins: the gateway has one setting (limits.allow_degradation); the first one is used".into(),
            }),
            Some(_) => {}
        }
    }
}

fn timeout(conf: &Value) -> Value {
    number(conf, "redis_timeout").map_or(Value::Null, |ms| duration(ms / 1000.0))
}

/// Variables a gateway key can read.
fn var(name: &str) -> Option<String> {
    match name {
        "remote_addr" | "consumer_name" => Some(format!("${name}")),
        n if n.starts_with("http_") && n.len() > 5 => Some(format!("${n}")),
        _ => None,
    }
}

/// An APISIX `key`/`key_type` as a gateway key template; `None`: one counter for the
/// scope (`constant`).
pub fn key(conf: &Value, at: &str, out: &mut Vec<Unmapped>) -> Option<String> {
    let key = text(conf, "key").unwrap_or_else(|| "remote_addr".into());
    let unsupported = |out: &mut Vec<Unmapped>, what: String| {
        out.push(Unmapped {
            at: format!("{at}.key"),
            what: format!(
                "{what}; the client address is used instead (APISIX's fallback for an empty key)"
            ),
        });
        Some("$remote_addr".to_string())
    };
    match text(conf, "key_type").as_deref().unwrap_or("var") {
        "constant" => None,
        "var" => match var(&key) {
            Some(k) => Some(k),
            None => unsupported(out, format!("variable `{key}` is not supported")),
        },
        "var_combination" => {
            if key.contains("$ENV://") {
                return unsupported(out, format!("key template `{key}` uses $ENV"));
            }
            let mut result = String::new();
            let mut chars = key.chars().peekable();
            while let Some(c) = chars.next() {
                if c != '$' {
                    result.push(c);
                    continue;
                }
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' || n == '.' || (braced && n == ' ') {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                // `${name ?? default}`: the default is kept (it counts as resolved).
                let mut default = None;
                if braced && chars.peek() == Some(&'?') {
                    let d: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    default = d.strip_prefix("??").map(|d| d.trim().to_string());
                } else if braced && chars.peek() == Some(&'}') {
                    chars.next();
                }
                // `$name`, or `$${name}` when a name character follows (`$$` is the
                // config's literal dollar, so the key keeps its braces after env
                // substitution).
                let glued = chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_');
                match var(name.trim()) {
                    Some(v) if default.is_some() => result.push_str(&format!(
                        "$${{{} ?? {}}}",
                        &v[1..],
                        default.unwrap_or_default()
                    )),
                    Some(v) if glued => result.push_str(&format!("$${{{}}}", &v[1..])),
                    Some(v) => result.push_str(&v),
                    None => {
                        return unsupported(
                            out,
                            format!("variable `{}` is not supported", name.trim()),
                        )
                    }
                }
            }
            Some(result)
        }
        other => unsupported(out, format!("key_type `{other}` is not supported")),
    }
}

/// Answer settings shared by every limit plugin: `rejected_code` defaults to APISIX's 503.
/// `count` (or `limit`) and `time_window` of an APISIX limit as gateway values: numbers, or
/// 3.18 templates (`${http_count ?? 2}`, the window in seconds) kept to be resolved per
/// request. `Err`: why they cannot be mapped.
pub(crate) fn amounts(conf: &Value, amount: &str) -> Result<(Value, Value), String> {
    let one = |k: &str| -> Result<Result<f64, String>, String> {
        match get(conf, k) {
            Some(Value::String(t)) if t.contains('$') => crate::config::key::KeyTemplate::parse(t)
                .map(|_| Err(t.clone()))
                .map_err(|e| format!("{k}: {e}")),
            _ => number(conf, k)
                .map(Ok)
                .ok_or_else(|| format!("{k} must be a number or a ${{…}} template")),
        }
    };
    // `${` starts an environment variable in gateway.yaml: `$${` is the template's.
    let template = |t: String| s(t.replace("${", "$${"));
    let a = match one(amount)? {
        Ok(n) => num(n),
        Err(t) => template(t),
    };
    let w = match one("time_window")? {
        Ok(n) => duration(n),
        Err(t) => template(t),
    };
    Ok((a, w))
}

/// A mapped number as the import reports it.
fn shown(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

pub(crate) fn answer(conf: &Value, rule: &mut Vec<(&'static str, Value)>) {
    let code = number(conf, "rejected_code").unwrap_or(503.0);
    rule.push(("rejected_code", num(code)));
    rule.push((
        "rejected_msg",
        text(conf, "rejected_msg").map_or(Value::Null, s),
    ));
}

/// Where a plugin's rules are attached, and the group that shares their counters when the
/// plugin belongs to a resource several routes use (a service, a global rule).
pub struct Place<'a> {
    pub at: &'a str,
    pub shared: Option<&'a str>,
}

/// Fields every limit plugin may have that need no mapping of their own (they are read
/// by [`Store::policy`] or have no effect on behaviour).
const COMMON: [&str; 17] = [
    "key",
    "key_type",
    "policy",
    "rejected_code",
    "rejected_msg",
    "allow_degradation",
    "redis_host",
    "redis_port",
    "redis_username",
    "redis_password",
    "redis_database",
    "redis_timeout",
    "redis_ssl",
    "redis_ssl_verify",
    "redis_keepalive_timeout",
    "redis_keepalive_pool",
    "_meta",
];

/// List the fields of `conf` that the import does not map.
pub(crate) fn unknown_fields(plugin: &str, conf: &Value, at: &str, out: &mut Vec<Unmapped>) {
    let own: &[&str] = match plugin {
        "limit-req" => &["rate", "burst", "nodelay"],
        "limit-conn" => &[
            "conn",
            "burst",
            "default_conn_delay",
            "only_use_default_delay",
            "key_ttl",
            "rules",
        ],
        "limit-count" => &[
            "count",
            "time_window",
            "window_type",
            "rules",
            "group",
            "show_limit_quota_header",
            "sync_interval",
            "redis_cluster_nodes",
            "redis_cluster_name",
            "redis_cluster_ssl",
            "redis_cluster_ssl_verify",
        ],
        _ => &[
            "limit",
            "time_window",
            "limit_strategy",
            "cost_expr",
            "instances",
            "rules",
            "show_limit_quota_header",
            "redis_cluster_nodes",
            "redis_cluster_name",
        ],
    };
    let cluster = [
        "redis_cluster_nodes",
        "redis_cluster_name",
        "redis_cluster_ssl",
        "redis_cluster_ssl_verify",
    ];
    for k in conf.as_mapping().into_iter().flat_map(|m| m.keys()) {
        let Some(k) = k.as_str() else { continue };
        if !COMMON.contains(&k) && !own.contains(&k) && !cluster.contains(&k) {
            out.push(Unmapped {
                at: format!("{at}.{k}"),
                what: "field not supported by the gateway".into(),
            });
        }
    }
}

/// The gateway rules of a limit plugin (none for other plugins: `None`).
pub fn rules(
    plugin: &str,
    conf: &Value,
    place: &Place<'_>,
    store: &mut Store,
    out: &mut Vec<Unmapped>,
) -> Option<Vec<Value>> {
    let at = format!("{}.plugins.{plugin}", place.at);
    if ["limit-req", "limit-conn", "limit-count"].contains(&plugin) {
        unknown_fields(plugin, conf, &at, out);
    }
    let group = place.shared.map(|g| s(format!("{g}-{plugin}")));
    let mut rules = Vec::new();
    match plugin {
        "limit-req" => {
            let mut r = vec![
                ("name", s(plugin)),
                ("key", key(conf, &at, out).map_or(Value::Null, s)),
                (
                    "req",
                    map(vec![
                        ("rate", num(number(conf, "rate").unwrap_or(1.0))),
                        ("burst", num(number(conf, "burst").unwrap_or(0.0))),
                        (
                            "nodelay",
                            Value::Bool(flag(conf, "nodelay").unwrap_or(false)),
                        ),
                        ("group", group.clone().unwrap_or(Value::Null)),
                    ]),
                ),
            ];
            answer(conf, &mut r);
            rules.push(map(r));
        }
        "limit-conn" => {
            if get(conf, "rules").is_some() {
                out.push(Unmapped {
                    at: format!("{at}.rules"),
                    what: "limit-conn `rules` are not supported".into(),
                });
                return Some(rules);
            }
            let mut r = vec![
                ("name", s(plugin)),
                ("key", key(conf, &at, out).map_or(Value::Null, s)),
                (
                    "conn",
                    map(vec![
                        ("conn", num(number(conf, "conn").unwrap_or(1.0))),
                        ("burst", num(number(conf, "burst").unwrap_or(0.0))),
                        (
                            "default_conn_delay",
                            duration(number(conf, "default_conn_delay").unwrap_or(1.0)),
                        ),
                        ("group", group.clone().unwrap_or(Value::Null)),
                    ]),
                ),
            ];
            answer(conf, &mut r);
            rules.push(map(r));
        }
        "limit-count" => {
            let sliding = text(conf, "window_type").as_deref() == Some("sliding");
            let show = flag(conf, "show_limit_quota_header").unwrap_or(true);
            let one = |name: String,
                       count: Value,
                       window: Value,
                       key: Option<String>,
                       group: Option<Value>| {
                let mut r = vec![
                    ("name", s(name)),
                    ("key", key.map_or(Value::Null, s)),
                    (
                        "count",
                        map(vec![
                            ("count", count),
                            ("time_window", window),
                            ("group", group.unwrap_or(Value::Null)),
                            (
                                "window_type",
                                if sliding { s("sliding") } else { Value::Null },
                            ),
                        ]),
                    ),
                    ("show_limit_quota_header", Value::Bool(show)),
                ];
                answer(conf, &mut r);
                map(r)
            };
            match get(conf, "rules").and_then(Value::as_sequence) {
                Some(list) => {
                    for (i, rule) in list.iter().enumerate() {
                        let rat = format!("{at}.rules[{i}]");
                        let (count, window) = match amounts(rule, "count") {
                            Ok(a) => a,
                            Err(what) => {
                                out.push(Unmapped { at: rat, what });
                                continue;
                            }
                        };
                        // Each rule names its quota headers `X-<prefix or index>-RateLimit-*`.
                        let prefix =
                            text(rule, "header_prefix").unwrap_or_else(|| (i + 1).to_string());
                        let mut rc = map(vec![(
                            "key",
                            get(rule, "key").cloned().unwrap_or(Value::Null),
                        )]);
                        if let Some(m) = rc.as_mapping_mut() {
                            m.insert(s("key_type"), s("var_combination"));
                        }
                        let k = key(&rc, &rat, out);
                        let mut r = one(format!("{plugin}-{}", i + 1), count, window, k, None);
                        if let Some(m) = r.as_mapping_mut() {
                            m.insert(s("quota_header_prefix"), s(prefix));
                            // A rule whose key resolves nothing is skipped; none → 500.
                            m.insert(s("key_unresolved"), s("rules"));
                        }
                        rules.push(r);
                    }
                }
                None => {
                    let (count, window) = match amounts(conf, "count") {
                        Ok(a) => a,
                        Err(what) => {
                            out.push(Unmapped { at, what });
                            return Some(rules);
                        }
                    };
                    let own = text(conf, "group");
                    let k = key(conf, &at, out);
                    if let Some(g) = &own {
                        let (cs, ws) = (shown(&count), shown(&window));
                        let this = (at.clone(), cs.clone(), ws.clone(), k.clone());
                        match store.groups.get(g) {
                            None => {
                                store.groups.insert(g.clone(), this);
                            }
                            Some((first, c, w, fk)) if (c, w, fk) != (&cs, &ws, &k) => {
                                store.errors.push(format!(
                                    "limit-count group {g:?} is configured differently at {at} (count {cs}, time_window {ws}, key {}) and at {first} (count {c}, time_window {w}, key {}): APISIX refuses this (group conf mismatched)",
                                    k.as_deref().unwrap_or("remote_addr"),
                                    fk.as_deref().unwrap_or("remote_addr"),
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                    let group = own.map(s).or(group);
                    rules.push(one(plugin.to_string(), count, window, k, group));
                }
            }
            if let Some(si) = number(conf, "sync_interval").filter(|x| *x > 0.0) {
                store.sync_interval = Some(store.sync_interval.map_or(si, |p| p.min(si)));
            }
        }
        _ => return None,
    }
    store.policy(conf, &at, out);
    store.degradation(conf, &at, out);
    Some(rules)
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
