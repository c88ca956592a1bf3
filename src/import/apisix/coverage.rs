//! Nothing disappears silently: every field of the APISIX file is either one the import
//! reads (mapping it, or naming it as not imported where it reads it), or listed here as
//! not imported. The limit plugins and ai-proxy check their own fields (`limits`, `ai`);
//! this covers the resources and the other plugins.

use super::*;

/// Fields with nothing to carry: descriptions and bookkeeping.
const DESCRIPTIVE: [&str; 5] = ["desc", "labels", "create_time", "update_time", "_meta"];

/// The fields the import reads, per resource.
const ROUTE: &[&str] = &[
    "id",
    "name",
    "uri",
    "uris",
    "host",
    "hosts",
    "methods",
    "plugins",
    "upstream",
    "upstream_id",
    "service_id",
    "plugin_config_id",
    "status",
    "vars",
    "filter_func",
    "remote_addr",
    "remote_addrs",
];
const SERVICE: &[&str] = &["id", "name", "plugins", "upstream", "upstream_id"];
const UPSTREAM: &[&str] = &[
    "id",
    "name",
    "nodes",
    "scheme",
    "type",
    "timeout",
    "keepalive_pool",
    "retries",
    "pass_host",
];
const NODE: &[&str] = &["host", "port", "weight"];
const CONSUMER: &[&str] = &["username", "plugins"];
const PLUGIN_CONFIG: &[&str] = &["id", "plugins"];
const GLOBAL_RULE: &[&str] = &["id", "plugins"];
const METADATA: &[&str] = &["id", "limit_header", "remaining_header", "reset_header"];
/// The resource lists the import maps (the others are [`UNSUPPORTED`], listed whole).
const RESOURCES: &[&str] = &[
    "routes",
    "services",
    "upstreams",
    "consumers",
    "plugin_configs",
    "global_rules",
    "plugin_metadata",
];

/// The fields the import reads of the plugins that do not check their own, on routes,
/// services and plugin configs (`None`: a plugin the import does not check here).
fn plugin_fields(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        // key-auth's `header` and `query`: named below, with what the gateway reads.
        "key-auth" => &["hide_credentials", "header", "query"],
        "basic-auth" => &["hide_credentials"],
        "consumer-restriction" => &[
            "type",
            "whitelist",
            "blacklist",
            "allowed_by_methods",
            "rejected_code",
            "rejected_msg",
        ],
        "request-id" => &["header_name", "include_in_response"],
        "proxy-rewrite" => &[
            "uri",
            "regex_uri",
            "host",
            "method",
            "headers",
            "scheme",
            "use_real_request_uri_unsafe",
        ],
        "cors" => &[
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "max_age",
            "allow_credential",
            "allow_origins_by_regex",
            "allow_origins_by_metadata",
            "timing_allow_origins",
            "timing_allow_origins_by_regex",
        ],
        _ => return None,
    })
}

/// What a field the import does not know is reported as.
const WHAT: &str = "field not imported: the gateway has no equivalent";

fn fields(v: &Value) -> impl Iterator<Item = &str> {
    v.as_mapping()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(Value::as_str)
}

/// Report the fields of `v` at `at` that are neither in `known` nor descriptive.
fn check(v: &Value, at: &str, known: &[&str], out: &mut Vec<Unmapped>) {
    for k in fields(v) {
        if !known.contains(&k) && !DESCRIPTIVE.contains(&k) {
            out.push(Unmapped {
                at: format!("{at}.{k}"),
                what: WHAT.into(),
            });
        }
    }
}

fn upstream(up: &Value, at: &str, out: &mut Vec<Unmapped>) {
    check(up, at, UPSTREAM, out);
    if let Some(nodes) = get(up, "nodes").and_then(Value::as_sequence) {
        for (i, n) in nodes.iter().enumerate() {
            check(n, &format!("{at}.nodes[{i}]"), NODE, out);
        }
    }
}

fn plugins(item: &Value, at: &str, out: &mut Vec<Unmapped>) {
    let Some(m) = get(item, "plugins").and_then(Value::as_mapping) else {
        return;
    };
    for (name, conf) in m {
        let Some(name) = name.as_str() else { continue };
        if let Some(known) = plugin_fields(name) {
            check(conf, &format!("{at}.plugins.{name}"), known, out);
        }
        if matches!(name, "key-auth") {
            for k in ["header", "query"] {
                if get(conf, k).is_some() {
                    out.push(Unmapped {
                        at: format!("{at}.plugins.{name}.{k}"),
                        what: "the gateway reads keys from authorization, x-api-key, api-key and apikey only".into(),
                    });
                }
            }
        }
    }
}

/// Every field of the file `v` the import neither reads nor names, as not imported; an
/// entry already named (at the same place) is not repeated.
pub(super) fn unknown(v: &Value, named: &[Unmapped]) -> Vec<Unmapped> {
    let mut out = Vec::new();
    let known: Vec<&str> = RESOURCES.iter().chain(&UNSUPPORTED).copied().collect();
    check(v, "file", &known, &mut out);
    let each = |kind: &str| list(v, kind).iter().enumerate();
    for (i, r) in each("routes") {
        let at = format!("routes[id={}]", id_of(r, i));
        check(r, &at, ROUTE, &mut out);
        plugins(r, &at, &mut out);
        if let Some(up) = get(r, "upstream") {
            upstream(up, &format!("{at}.upstream"), &mut out);
        }
    }
    for (i, s) in each("services") {
        let at = format!("services[id={}]", id_of(s, i));
        check(s, &at, SERVICE, &mut out);
        plugins(s, &at, &mut out);
        if let Some(up) = get(s, "upstream") {
            upstream(up, &format!("{at}.upstream"), &mut out);
        }
    }
    for (i, u) in each("upstreams") {
        upstream(u, &format!("upstreams[id={}]", id_of(u, i)), &mut out);
    }
    for (i, c) in each("consumers") {
        check(
            c,
            &format!("consumers[{}]", id_of(c, i)),
            CONSUMER,
            &mut out,
        );
    }
    for (i, p) in each("plugin_configs") {
        let at = format!("plugin_configs[id={}]", id_of(p, i));
        check(p, &at, PLUGIN_CONFIG, &mut out);
        plugins(p, &at, &mut out);
    }
    for (i, g) in each("global_rules") {
        check(
            g,
            &format!("global_rules[id={}]", id_of(g, i)),
            GLOBAL_RULE,
            &mut out,
        );
    }
    for (i, m) in each("plugin_metadata") {
        let id = id_of(m, i);
        if id == "limit-count" {
            check(m, &format!("plugin_metadata[id={id}]"), METADATA, &mut out);
        }
    }
    out.retain(|u| !named.iter().any(|n| n.at == u.at));
    out
}
