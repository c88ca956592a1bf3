//! APISIX resources as gateway config: consumers (key-auth) → `consumers`; routes with
//! ai-proxy / ai-proxy-multi → `providers` + `models` (their limit plugins on the model,
//! ai-rate-limiting on the deployments); other routes → pass-through `routes` with their
//! upstream's weighted nodes; services, plugin_configs and upstreams merged into the routes
//! that use them (a service's or global rule's limits keep one shared counter through a
//! `group`); the plugins' policy and Redis fields → the one `limits` section.

use super::limits::{self, Place, Store};
use super::yaml::{flag, get, map, s, text, true_or_none};
use super::Unmapped;
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

mod ai;
mod coverage;
mod rewrite;
mod tokens;
mod upstream;
use ai::ai_route;
use upstream::nodes;

/// Resource lists the gateway has nothing for (listed whole when present).
const UNSUPPORTED: [&str; 6] = [
    "consumer_groups",
    "ssls",
    "protos",
    "secrets",
    "stream_routes",
    "plugins",
];

/// Plugins that need nothing in the gateway config (it always exports metrics).
const SILENT: [&str; 1] = ["prometheus"];

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k)
        .and_then(Value::as_sequence)
        .map_or(&[][..], Vec::as_slice)
}

/// A resource's id as APISIX derives it: `id`, a consumer's `username`, else its position.
fn id_of(item: &Value, i: usize) -> String {
    text(item, "id")
        .or_else(|| text(item, "username"))
        .unwrap_or_else(|| format!("arr_{}", i + 1))
}

fn by_id<'a>(v: &'a Value, kind: &str) -> BTreeMap<String, &'a Value> {
    list(v, kind)
        .iter()
        .enumerate()
        .map(|(i, item)| (id_of(item, i), item))
        .collect()
}

/// Plugins of a route after APISIX's merge (the route overrides its plugin_config, which
/// overrides its service), each with the resource it came from and, for a service, the
/// group name that keeps its counters shared.
fn merged_plugins(
    route: &Value,
    at: &str,
    services: &BTreeMap<String, &Value>,
    configs: &BTreeMap<String, &Value>,
) -> Vec<(String, Value, String, Option<String>)> {
    let mut out: BTreeMap<String, (Value, String, Option<String>)> = BTreeMap::new();
    let mut add = |plugins: Option<&Value>, origin: &str, shared: Option<String>| {
        if let Some(m) = plugins.and_then(Value::as_mapping) {
            for (k, v) in m {
                if let Some(name) = k.as_str() {
                    out.insert(
                        name.to_string(),
                        (v.clone(), origin.to_string(), shared.clone()),
                    );
                }
            }
        }
    };
    if let Some(sid) = text(route, "service_id") {
        if let Some(svc) = services.get(&sid) {
            add(
                get(svc, "plugins"),
                &format!("services[id={sid}]"),
                Some(format!("service-{sid}")),
            );
        }
    }
    if let Some(cid) = text(route, "plugin_config_id") {
        if let Some(pc) = configs.get(&cid) {
            add(
                get(pc, "plugins"),
                &format!("plugin_configs[id={cid}]"),
                None,
            );
        }
    }
    add(get(route, "plugins"), at, None);
    out.into_iter()
        .map(|(k, (v, origin, shared))| (k, v, origin, shared))
        .collect()
}

/// The gateway being built.
#[derive(Default)]
struct Out {
    consumers: Vec<Value>,
    providers: Vec<(String, Value)>,
    models: Vec<(String, Value)>,
    routes: Vec<Value>,
    store: Store,
    unmapped: Vec<Unmapped>,
    /// Rules every route and model gets (global rules).
    global: Vec<Value>,
}

impl Out {
    fn unmapped(&mut self, at: impl Into<String>, what: impl Into<String>) {
        self.unmapped.push(Unmapped {
            at: at.into(),
            what: what.into(),
        });
    }

    /// Add a provider, or reuse an identical one of that name.
    fn provider(&mut self, name: String, p: Value) -> String {
        let named = |n: &str| {
            let mut m = Mapping::new();
            m.insert(s("name"), s(n));
            if let Some(rest) = p.as_mapping() {
                m.extend(rest.clone());
            }
            Value::Mapping(m)
        };
        let mut n = name.clone();
        let mut i = 1;
        loop {
            let q = named(&n);
            match self.providers.iter().find(|(k, _)| *k == n) {
                None => {
                    self.providers.push((n.clone(), q));
                    return n;
                }
                Some((_, existing)) if *existing == q => return n,
                Some(_) => {
                    i += 1;
                    n = format!("{name}-{i}");
                }
            }
        }
    }
}

/// The limit plugins of a route (its own, its plugin_config's, its service's) as rules.
fn route_limit_rules(
    at: &str,
    plugins: &[(String, Value, String, Option<String>)],
    out: &mut Out,
) -> Vec<Value> {
    let mut rules = Vec::new();
    for (name, conf, origin, shared) in plugins {
        let place = Place {
            at: if origin == at { at } else { origin },
            shared: shared.as_deref(),
        };
        if let Some(r) = limits::rules(name, conf, &place, &mut out.store, &mut out.unmapped) {
            rules.extend(r);
        }
    }
    rules
}

fn other_plugins(at: &str, plugins: &[(String, Value, String, Option<String>)], out: &mut Out) {
    const HANDLED: [&str; 11] = [
        "proxy-rewrite",
        "cors",
        "limit-req",
        "limit-conn",
        "limit-count",
        "ai-rate-limiting",
        "ai-proxy",
        "ai-proxy-multi",
        "key-auth",
        "basic-auth",
        "consumer-restriction",
    ];
    for (name, conf, origin, _) in plugins {
        let where_ = if origin == at { at } else { origin };
        if name == "request-id" {
            // Built in: every answer carries x-request-id (a client's own is kept).
            let header = text(conf, "header_name").unwrap_or_else(|| "X-Request-Id".into());
            if !header.eq_ignore_ascii_case("x-request-id") {
                out.unmapped(
                    format!("{where_}.plugins.request-id.header_name"),
                    format!(
                        "`{header}` is not supported: the gateway's request id is x-request-id"
                    ),
                );
            }
        } else if !HANDLED.contains(&name.as_str()) && !SILENT.contains(&name.as_str()) {
            out.unmapped(
                format!("{where_}.plugins.{name}"),
                "plugin not supported by the gateway",
            );
        }
    }
}

/// APISIX consumer-restriction (by consumer name) as a `consumer_restriction`, answering
/// APISIX's `{"message": …}` as APISIX does.
fn restriction(
    plugins: &[(String, Value, String, Option<String>)],
    at: &str,
    out: &mut Out,
) -> Value {
    let Some((_, conf, ..)) = plugins.iter().find(|(k, ..)| k == "consumer-restriction") else {
        return Value::Null;
    };
    let at = format!("{at}.plugins.consumer-restriction");
    if text(conf, "type").is_some_and(|t| t != "consumer_name") {
        out.unmapped(
            format!("{at}.type"),
            "only restrictions by consumer_name are supported",
        );
        return Value::Null;
    }
    if get(conf, "allowed_by_methods").is_some() {
        out.unmapped(
            format!("{at}.allowed_by_methods"),
            "per-method allowances are not supported",
        );
    }
    let names = |k: &str| {
        let l = list(conf, k).to_vec();
        if l.is_empty() {
            Value::Null
        } else {
            Value::Sequence(l)
        }
    };
    map(vec![
        ("allow", names("whitelist")),
        ("deny", names("blacklist")),
        (
            "rejected_code",
            get(conf, "rejected_code").cloned().unwrap_or(Value::Null),
        ),
        (
            "rejected_msg",
            text(conf, "rejected_msg").map_or(Value::Null, s),
        ),
        ("apisix_body", Value::Bool(true)),
    ])
}

fn route(
    item: &Value,
    i: usize,
    v: &Value,
    services: &BTreeMap<String, &Value>,
    configs: &BTreeMap<String, &Value>,
    out: &mut Out,
) {
    let id = id_of(item, i);
    let at = format!("routes[id={id}]");
    if get(item, "status").and_then(Value::as_i64) == Some(0) {
        return; // disabled in APISIX
    }
    let plugins = merged_plugins(item, &at, services, configs);
    other_plugins(&at, &plugins, out);
    for field in ["vars", "filter_func", "remote_addrs", "remote_addr"] {
        if get(item, field).is_some() {
            out.unmapped(
                format!("{at}.{field}"),
                "route matching on this field is not supported",
            );
        }
    }
    let has = |n: &str| plugins.iter().any(|(k, ..)| k == n);
    let auth = has("key-auth") || has("basic-auth");
    // key-auth / basic-auth `hide_credentials: true`: the backend does not see the key.
    let hide = plugins.iter().any(|(k, conf, ..)| {
        (k == "key-auth" || k == "basic-auth") && flag(conf, "hide_credentials") == Some(true)
    });
    if has("ai-proxy") || has("ai-proxy-multi") {
        for u in list(item, "uris")
            .iter()
            .chain(get(item, "uri"))
            .filter_map(Value::as_str)
        {
            if u.contains(':') || u.contains('{') || (u.contains('*') && !u.ends_with('*')) {
                out.unmapped(
                    format!("{at}.uri"),
                    format!("path pattern `{u}` is not supported (exact paths and prefixes ending in * are)"),
                );
            }
        }
        for name in ["proxy-rewrite", "cors"] {
            if let Some((_, _, origin, _)) = plugins.iter().find(|(k, ..)| k == name) {
                out.unmapped(
                    format!("{origin}.plugins.{name}"),
                    "not supported on AI routes (pass-through routes only)",
                );
            }
        }
        ai_route(&at, item, &id, &plugins, auth, out);
        return;
    }
    // A pass-through route.
    let mut uris: Vec<Value> = list(item, "uris").to_vec();
    if let Some(u) = get(item, "uri") {
        uris.push(u.clone());
    }
    for u in uris.iter().filter_map(Value::as_str) {
        if u.contains(':') || u.contains('{') || (u.contains('*') && !u.ends_with('*')) {
            out.unmapped(
                format!("{at}.uri"),
                format!("path pattern `{u}` is not supported (exact paths and prefixes ending in * are)"),
            );
        }
    }
    let mut hosts: Vec<Value> = list(item, "hosts").to_vec();
    if let Some(h) = get(item, "host") {
        hosts.push(h.clone());
    }
    let service = text(item, "service_id").and_then(|sid| services.get(&sid).copied());
    let upstreams = by_id(v, "upstreams");
    let upstream = get(item, "upstream")
        .or_else(|| text(item, "upstream_id").and_then(|u| upstreams.get(&u).copied()))
        .or_else(|| service.and_then(|s| get(s, "upstream")))
        .or_else(|| {
            service
                .and_then(|s| text(s, "upstream_id"))
                .and_then(|u| upstreams.get(&u).copied())
        });
    let Some(up) = upstream else {
        out.unmapped(&at, "no upstream: the route cannot be proxied");
        return;
    };
    let nodes = nodes(up, &format!("{at}.upstream"), &mut out.unmapped);
    if nodes.is_empty() {
        out.unmapped(
            format!("{at}.upstream.nodes"),
            "no node the gateway can reach",
        );
        return;
    }
    let pass_host = match text(up, "pass_host").as_deref() {
        None | Some("pass") => Value::Null,
        Some("node") => s("node"),
        Some(other) => {
            out.unmapped(
                format!("{at}.upstream.pass_host"),
                format!("pass_host `{other}` is not supported; the client's Host is passed"),
            );
            Value::Null
        }
    };
    let mut rules = route_limit_rules(&at, &plugins, out);
    rules.extend(out.global.iter().cloned());
    let name = text(item, "name").unwrap_or_else(|| format!("route-{id}"));
    let restricted = restriction(&plugins, &at, out);
    let plugin = |name: &str| plugins.iter().find(|(k, ..)| k == name);
    let rewrite = plugin("proxy-rewrite").map_or(Value::Null, |(_, conf, origin, _)| {
        rewrite::proxy_rewrite(conf, origin, out)
    });
    let cors = plugin("cors").map_or(Value::Null, |(_, conf, origin, _)| {
        rewrite::cors(conf, origin, out)
    });
    out.routes.push(map(vec![
        ("name", s(name)),
        ("uris", Value::Sequence(uris)),
        (
            "methods",
            if list(item, "methods").is_empty() {
                Value::Null
            } else {
                Value::Sequence(list(item, "methods").to_vec())
            },
        ),
        (
            "hosts",
            if hosts.is_empty() {
                Value::Null
            } else {
                Value::Sequence(hosts)
            },
        ),
        ("auth", true_or_none(auth)),
        ("hide_credentials", true_or_none(hide)),
        ("consumer_restriction", restricted),
        ("rewrite", rewrite),
        ("cors", cors),
        (
            "upstream",
            map(vec![
                ("nodes", Value::Sequence(nodes)),
                ("pass_host", pass_host),
            ]),
        ),
        (
            "limits",
            if rules.is_empty() {
                Value::Null
            } else {
                Value::Sequence(rules)
            },
        ),
    ]));
}

fn consumer(item: &Value, i: usize, out: &mut Out) {
    let name = id_of(item, i);
    let at = format!("consumers[{name}]");
    let mut keys = Vec::new();
    let mut basic = Vec::new();
    let mut rules = Vec::new();
    for (k, conf) in get(item, "plugins")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let Some(plugin) = k.as_str() else { continue };
        if plugin == "key-auth" {
            if let Some(key) = text(conf, "key") {
                keys.push(s(key));
            }
            continue;
        }
        if plugin == "basic-auth" {
            if let (Some(u), Some(p)) = (text(conf, "username"), text(conf, "password")) {
                basic.push(map(vec![("username", s(u)), ("password", s(p))]));
            }
            continue;
        }
        let place = Place {
            at: &at,
            shared: None,
        };
        match limits::rules(plugin, conf, &place, &mut out.store, &mut out.unmapped) {
            Some(r) => rules.extend(r),
            None if SILENT.contains(&plugin) => {}
            None => out.unmapped(
                format!("{at}.plugins.{plugin}"),
                "plugin not supported by the gateway",
            ),
        }
    }
    if keys.is_empty() && basic.is_empty() {
        out.unmapped(
            &at,
            "no key-auth key or basic-auth credential: this consumer cannot authenticate to the gateway",
        );
    }
    out.consumers.push(map(vec![
        ("name", s(name)),
        ("keys", Value::Sequence(keys)),
        (
            "basic_auth",
            if basic.is_empty() {
                Value::Null
            } else {
                Value::Sequence(basic)
            },
        ),
        (
            "limits",
            if rules.is_empty() {
                Value::Null
            } else {
                Value::Sequence(rules)
            },
        ),
    ]));
}

/// Map a parsed APISIX standalone config.
pub fn map_config(v: &Value) -> Result<(Value, Vec<Unmapped>), String> {
    if !v.is_mapping() {
        return Err("the file must be a mapping of resource lists (routes, upstreams, …)".into());
    }
    let mut out = Out::default();
    for key in UNSUPPORTED {
        if !list(v, key).is_empty() {
            out.unmapped(key, "not supported by the gateway");
        }
    }
    for (i, item) in list(v, "plugin_metadata").iter().enumerate() {
        let id = id_of(item, i);
        if id != "limit-count" {
            out.unmapped(
                format!("plugin_metadata[id={id}]"),
                "not supported by the gateway",
            );
            continue;
        }
        // limit-count's header names (the same for every limit-count of the file).
        let name = |f: &str, default: &str| text(item, f).unwrap_or_else(|| default.into());
        let names = (
            name("limit_header", "X-RateLimit-Limit"),
            name("remaining_header", "X-RateLimit-Remaining"),
            name("reset_header", "X-RateLimit-Reset"),
        );
        let default = (
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        );
        if (names.0.as_str(), names.1.as_str(), names.2.as_str()) != default {
            out.store.quota_headers = Some(names);
        }
    }
    // Global rules first: their limits go on every route and model.
    for (i, item) in list(v, "global_rules").iter().enumerate() {
        let id = id_of(item, i);
        let at = format!("global_rules[id={id}]");
        for (k, conf) in get(item, "plugins")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            let Some(plugin) = k.as_str() else { continue };
            let shared = format!("global-{id}");
            let place = Place {
                at: &at,
                shared: Some(&shared),
            };
            match limits::rules(plugin, conf, &place, &mut out.store, &mut out.unmapped) {
                Some(rules) => out.global.extend(rules.into_iter().map(|mut r| {
                    if let Some(m) = r.as_mapping_mut() {
                        m.insert(s("name"), s(format!("global-{id}-{plugin}")));
                    }
                    r
                })),
                None if SILENT.contains(&plugin) => {}
                None => out.unmapped(
                    format!("{at}.plugins.{plugin}"),
                    "plugin not supported by the gateway",
                ),
            }
        }
    }
    for (i, item) in list(v, "consumers").iter().enumerate() {
        consumer(item, i, &mut out);
    }
    let services = by_id(v, "services");
    let configs = by_id(v, "plugin_configs");
    for (i, item) in list(v, "routes").iter().enumerate() {
        route(item, i, v, &services, &configs, &mut out);
    }
    let unknown = coverage::unknown(v, &out.unmapped);
    out.unmapped.extend(unknown);
    let seq = |items: Vec<Value>| {
        if items.is_empty() {
            Value::Null
        } else {
            Value::Sequence(items)
        }
    };
    let limits = out.store.section();
    let config = map(vec![
        (
            "auth",
            if out.consumers.is_empty() {
                map(vec![("enabled", Value::Bool(false))])
            } else {
                Value::Null
            },
        ),
        ("consumers", seq(out.consumers)),
        (
            "providers",
            seq(out.providers.into_iter().map(|(_, p)| p).collect()),
        ),
        (
            "models",
            seq(out.models.into_iter().map(|(_, m)| m).collect()),
        ),
        ("routes", seq(out.routes)),
        (
            "limits",
            if limits.as_mapping().is_some_and(Mapping::is_empty) {
                Value::Null
            } else {
                limits
            },
        ),
    ]);
    if !out.store.errors.is_empty() {
        return Err(out.store.errors.join("\n"));
    }
    Ok((config, out.unmapped))
}
