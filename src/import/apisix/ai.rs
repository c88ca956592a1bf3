//! APISIX's AI routes (ai-proxy, ai-proxy-multi, ai-rate-limiting) as gateway providers
//! and models.

use super::*;
use crate::import::yaml::num;

/// An ai-proxy provider config as a gateway provider (`None`: not supported).
pub(super) fn provider(conf: &Value, at: &str, out: &mut Out) -> Option<Value> {
    let kind = text(conf, "provider").unwrap_or_default();
    let endpoint = get(conf, "override").and_then(|o| text(o, "endpoint"));
    for k in get(conf, "override")
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(Value::as_str)
        .filter(|k| *k != "endpoint")
    {
        out.unmapped(
            format!("{at}.override.{k}"),
            "not supported (set the fields with `options`, which replace the client's)",
        );
    }
    if let Some(path) = endpoint.as_deref().and_then(endpoint_path) {
        out.unmapped(
            format!("{at}.override.endpoint"),
            format!("APISIX sends every API to the endpoint's path `{path}`; the gateway appends the API's path to it (/chat/completions, /embeddings, …)"),
        );
    }
    let base = |default: &str| -> Value {
        match &endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/');
                let trimmed = [
                    "/chat/completions",
                    "/completions",
                    "/embeddings",
                    "/messages",
                ]
                .iter()
                .find_map(|p| e.strip_suffix(p))
                .unwrap_or(e);
                // scheme + host only: the provider path is appended, as APISIX does.
                let path_less = trimmed.splitn(4, '/').nth(3).is_none();
                s(if path_less {
                    format!("{trimmed}/v1")
                } else {
                    trimmed.to_string()
                })
            }
            None if default.is_empty() => Value::Null,
            None => s(default),
        }
    };
    let (gw_kind, base_url) = match kind.as_str() {
        "openai" => ("openai", base("")),
        "deepseek" => ("openai-compatible", base("https://api.deepseek.com/v1")),
        "openrouter" => ("openai-compatible", base("https://openrouter.ai/api/v1")),
        "aimlapi" => ("openai-compatible", base("https://api.aimlapi.com/v1")),
        "openai-compatible" => ("openai-compatible", base("")),
        "anthropic" => ("anthropic", base("")),
        "azure-openai" => ("azure", base("")),
        // APISIX speaks to Gemini through Google's OpenAI-compatible endpoint: so does the
        // import, so clients get the same answers (`kind: gemini` is the native API).
        "gemini" => (
            "openai-compatible",
            base("https://generativelanguage.googleapis.com/v1beta/openai"),
        ),
        "vertex-ai" | "bedrock" => return cloud_provider(&kind, conf, at, out),
        other => {
            out.unmapped(
                format!("{at}.provider"),
                format!("provider `{other}` is not supported (openai, deepseek, openrouter, aimlapi, openai-compatible, anthropic, azure-openai, gemini, vertex-ai, bedrock are)"),
            );
            return None;
        }
    };
    if gw_kind == "openai-compatible" && base_url.is_null()
        || gw_kind == "azure" && base_url.is_null()
    {
        out.unmapped(
            format!("{at}.override.endpoint"),
            "this provider needs override.endpoint (the server's URL)",
        );
        return None;
    }
    let mut api_key = Value::Null;
    let mut headers = Mapping::new();
    let auth = get(conf, "auth");
    if let Some(h) = auth
        .and_then(|a| get(a, "header"))
        .and_then(Value::as_mapping)
    {
        for (k, v) in h {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                continue;
            };
            match k.to_ascii_lowercase().as_str() {
                "authorization" => {
                    api_key = s(v.strip_prefix("Bearer ").unwrap_or(v).trim());
                }
                "api-key" | "x-api-key" => api_key = s(v),
                _ => {
                    headers.insert(s(k), s(v));
                }
            }
        }
    }
    if auth.and_then(|a| get(a, "query")).is_some() {
        out.unmapped(
            format!("{at}.auth.query"),
            "query-string auth is not supported",
        );
    }
    Some(map(vec![
        ("kind", s(gw_kind)),
        ("base_url", base_url),
        ("api_key", api_key),
        (
            "headers",
            if headers.is_empty() {
                Value::Null
            } else {
                Value::Mapping(headers)
            },
        ),
    ]))
}

/// The path of an `override.endpoint` that APISIX would call for every API instead of the
/// provider's, when it is not one the gateway's base URL reproduces (none, `/v1`, or an
/// API path such as `/v1/chat/completions`).
fn endpoint_path(e: &str) -> Option<String> {
    let rest = e.split_once("://").map_or(e, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split('?').next().unwrap_or("").trim_end_matches('/');
    let api = [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/messages",
    ];
    let known = path.is_empty() || path.ends_with("/v1") || api.iter().any(|p| path.ends_with(p));
    (!known).then(|| path.to_string())
}

/// APISIX's `vertex-ai` and `bedrock` providers as `kind: vertex` / `kind: bedrock`.
fn cloud_provider(kind: &str, conf: &Value, at: &str, out: &mut Out) -> Option<Value> {
    let pc = get(conf, "provider_conf");
    let field = |k: &str| pc.and_then(|p| text(p, k));
    let auth = get(conf, "auth");
    if kind == "bedrock" {
        let aws = auth.and_then(|a| get(a, "aws"));
        let key = |k: &str| aws.and_then(|a| text(a, k)).map(s).unwrap_or(Value::Null);
        let (Some(region), Some(_)) = (field("region"), aws) else {
            out.unmapped(
                format!("{at}.provider_conf.region"),
                "bedrock needs provider_conf.region and auth.aws",
            );
            return None;
        };
        out.unmapped(
            format!("{at}.provider"),
            "clients send OpenAI chat bodies here (the gateway translates them to Converse), not Converse bodies",
        );
        return Some(map(vec![
            ("kind", s("bedrock")),
            ("region", s(region)),
            ("access_key_id", key("access_key_id")),
            ("secret_access_key", key("secret_access_key")),
            ("session_token", key("session_token")),
        ]));
    }
    let (Some(project), Some(location)) = (field("project_id"), field("region")) else {
        out.unmapped(
            format!("{at}.provider_conf"),
            "vertex-ai needs provider_conf.project_id and region here (override.endpoint alone is not enough)",
        );
        return None;
    };
    out.unmapped(
        format!("{at}.auth.gcp.service_account_json"),
        "save the service account JSON (or GCP_SERVICE_ACCOUNT) to the file credentials_file names (GCP_CREDENTIALS_FILE)",
    );
    Some(map(vec![
        ("kind", s("vertex")),
        ("project", s(project)),
        ("location", s(location)),
        (
            "credentials_file",
            s("${GCP_CREDENTIALS_FILE:-gcp-service-account.json}"),
        ),
    ]))
}

/// An AI route: a model served at the route's paths (`route`), its ai-proxy(-multi)
/// instances the deployments, in APISIX's choice and fallback (`fallback`).
pub(super) fn ai_route(
    at: &str,
    item: &Value,
    id: &str,
    plugins: &[(String, Value, String, Option<String>)],
    auth: bool,
    out: &mut Out,
) {
    let find = |n: &str| plugins.iter().find(|(k, ..)| k == n).map(|(_, v, ..)| v);
    // (instance name, provider conf, priority, weight)
    let mut instances: Vec<(String, &Value, i64, i64)> = Vec::new();
    let mut fallback = Mapping::new();
    for plugin in ["ai-proxy", "ai-proxy-multi"] {
        if let Some(conf) = find(plugin) {
            unmapped_fields(conf, &format!("{at}.plugins.{plugin}"), out);
        }
    }
    if let Some(p) = find("ai-proxy") {
        let kind = text(p, "provider").unwrap_or_default();
        instances.push((format!("ai-proxy-{kind}"), p, 0, 1));
    } else if let Some(m) = find("ai-proxy-multi") {
        for (i, inst) in list(m, "instances").iter().enumerate() {
            let name = text(inst, "name").unwrap_or_else(|| format!("instance-{}", i + 1));
            unmapped_fields(inst, &format!("{at}.plugins.ai-proxy-multi[{name}]"), out);
            let prio = get(inst, "priority").and_then(Value::as_i64).unwrap_or(0);
            let weight = get(inst, "weight").and_then(Value::as_i64).unwrap_or(1);
            instances.push((name, inst, prio, weight));
        }
        fallback = fallback_of(m, at, out);
    }
    let tokens = find("ai-rate-limiting")
        .map(|c| tokens::token_rules(c, at, &mut out.store, &mut out.unmapped))
        .unwrap_or_default();
    let model_name = text(item, "name").unwrap_or_else(|| format!("route-{id}"));
    let mut deployments = Vec::new();
    for (name, conf, priority, weight) in &instances {
        let iat = format!("{at}.plugins.ai-proxy(-multi)[{name}]");
        let Some(p) = provider(conf, &iat, out) else {
            continue;
        };
        let mut options = get(conf, "options")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        // Vertex's OpenAI-compatible endpoint names models `google/<model>`; the native
        // API takes `<model>`. Without options.model the client's model goes upstream.
        let upstream_model = options
            .remove("model")
            .and_then(|m| m.as_str().map(str::to_string))
            .map(|m| match text(conf, "provider").as_deref() {
                Some("vertex-ai") => m.strip_prefix("google/").unwrap_or(&m).to_string(),
                _ => m,
            });
        let provider_name = out.provider(name.clone(), p);
        let limits = tokens.for_instance(name, &model_name);
        let multi = find("ai-proxy-multi").is_some();
        deployments.push(map(vec![
            ("provider", s(provider_name)),
            ("model", upstream_model.map_or(Value::Null, s)),
            (
                "options",
                if options.is_empty() {
                    Value::Null
                } else {
                    Value::Mapping(options)
                },
            ),
            (
                "priority",
                if *priority != 0 {
                    num(*priority as f64)
                } else {
                    Value::Null
                },
            ),
            (
                "weight",
                if multi && *weight != 1 {
                    num(*weight as f64)
                } else {
                    Value::Null
                },
            ),
            (
                "limits",
                if limits.is_empty() {
                    Value::Null
                } else {
                    Value::Sequence(limits)
                },
            ),
        ]));
    }
    if deployments.is_empty() {
        return;
    }
    let mut route_limits = route_limit_rules(at, plugins, out);
    route_limits.extend(tokens.route.iter().cloned());
    route_limits.extend(out.global.iter().cloned());
    if out.models.iter().any(|(n, _)| *n == model_name) {
        out.unmapped(
            at,
            format!("another route is already named `{model_name}`; this one is not added"),
        );
        return;
    }
    let restricted = restriction(plugins, at, out);
    let seq = |k: &str| -> Value {
        let mut v: Vec<Value> = list(item, &format!("{k}s")).to_vec();
        v.extend(get(item, k).cloned());
        if v.is_empty() {
            Value::Null
        } else {
            Value::Sequence(v)
        }
    };
    out.models.push((
        model_name.clone(),
        map(vec![
            ("name", s(model_name)),
            (
                "route",
                map(vec![
                    ("uris", seq("uri")),
                    (
                        "methods",
                        get(item, "methods").cloned().unwrap_or(Value::Null),
                    ),
                    ("hosts", seq("host")),
                    // Without key-auth / basic-auth APISIX lets anyone call it.
                    (
                        "auth",
                        if auth {
                            Value::Null
                        } else {
                            Value::Bool(false)
                        },
                    ),
                ]),
            ),
            ("fallback", Value::Mapping(fallback)),
            ("deployments", Value::Sequence(deployments)),
            ("consumer_restriction", restricted),
            (
                "limits",
                if route_limits.is_empty() {
                    Value::Null
                } else {
                    Value::Sequence(route_limits)
                },
            ),
        ]),
    ));
}

/// List the ai-proxy / ai-proxy-multi (or instance) fields that change what a client sees
/// and are not mapped: the gateway's own `upstream` and `server` settings apply instead.
fn unmapped_fields(conf: &Value, at: &str, out: &mut Out) {
    const NOT_MAPPED: [(&str, &str); 6] = [
        ("timeout", "upstream.read_timeout applies"),
        ("max_req_body_size", "server.max_body_bytes applies"),
        ("max_stream_duration_ms", "streams are not cut by duration"),
        ("max_response_bytes", "answers are not cut by size"),
        (
            "checks",
            "active health checks are not run (failed attempts fail over instead)",
        ),
        ("examples", "the semantic balancer is not supported"),
    ];
    for (k, why) in NOT_MAPPED {
        if get(conf, k).is_some() {
            out.unmapped(format!("{at}.{k}"), why);
        }
    }
    if get(conf, "ssl_verify").and_then(Value::as_bool) == Some(false) {
        out.unmapped(
            format!("{at}.ssl_verify"),
            "upstream certificates are always verified (add the CA with upstream.extra_ca_file)",
        );
    }
}

/// ai-proxy-multi's `fallback_strategy`, `fallback_http_statuses`, `max_retries` and
/// `retry_on_failure_within_ms` as a model's `fallback` (ai-proxy: an empty one, so the
/// upstream's answers are relayed as APISIX relays them).
fn fallback_of(m: &Value, at: &str, out: &mut Out) -> Mapping {
    let mut on: Vec<Value> = Vec::new();
    let mut add = |k: &str| {
        if !on.contains(&s(k)) {
            on.push(s(k));
        }
    };
    match get(m, "fallback_strategy") {
        Some(Value::String(v)) => match v.as_str() {
            "instance_health_and_rate_limiting" => add("rate_limiting"),
            "http_429" => add("http_429"),
            "http_5xx" => add("http_5xx"),
            other => out.unmapped(
                format!("{at}.plugins.ai-proxy-multi.fallback_strategy"),
                format!("`{other}` is not a fallback strategy"),
            ),
        },
        Some(Value::Sequence(v)) => {
            for x in v.iter().filter_map(Value::as_str) {
                match x {
                    "rate_limiting" | "http_429" | "http_5xx" => add(x),
                    other => out.unmapped(
                        format!("{at}.plugins.ai-proxy-multi.fallback_strategy"),
                        format!("`{other}` is not a fallback strategy"),
                    ),
                }
            }
        }
        _ => {}
    }
    let mut f = Mapping::new();
    if !on.is_empty() {
        f.insert(s("on"), Value::Sequence(on));
    }
    if let Some(v) = get(m, "fallback_http_statuses").filter(|v| v.is_sequence()) {
        f.insert(s("statuses"), v.clone());
    }
    if let Some(n) = get(m, "max_retries").and_then(Value::as_i64) {
        f.insert(s("max_retries"), num(n as f64));
    }
    if let Some(ms) = get(m, "retry_on_failure_within_ms").and_then(Value::as_i64) {
        f.insert(s("retry_within"), s(format!("{ms}ms")));
    }
    if let Some(b) = get(m, "balancer").and_then(|b| text(b, "algorithm")) {
        if b != "roundrobin" {
            out.unmapped(
                format!("{at}.plugins.ai-proxy-multi.balancer"),
                format!(
                    "balancer `{b}` is not supported: priorities and weighted round robin are used"
                ),
            );
        }
    }
    f
}
