//! APISIX's AI routes (ai-proxy, ai-proxy-multi, ai-rate-limiting) as gateway providers
//! and models.

use super::*;

/// An ai-proxy provider config as a gateway provider (`None`: not supported).
pub(super) fn provider(conf: &Value, at: &str, out: &mut Out) -> Option<Value> {
    let kind = text(conf, "provider").unwrap_or_default();
    let endpoint = get(conf, "override").and_then(|o| text(o, "endpoint"));
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

/// An AI route: its ai-proxy(-multi) instances become a model's deployments.
pub(super) fn ai_route(
    at: &str,
    plugins: &[(String, Value, String, Option<String>)],
    route_name: Option<String>,
    out: &mut Out,
) {
    let find = |n: &str| plugins.iter().find(|(k, ..)| k == n).map(|(_, v, ..)| v);
    // (instance name, provider conf, priority)
    let mut instances: Vec<(String, &Value, i64)> = Vec::new();
    if let Some(p) = find("ai-proxy") {
        let kind = text(p, "provider").unwrap_or_default();
        instances.push((format!("ai-proxy-{kind}"), p, 0));
    } else if let Some(m) = find("ai-proxy-multi") {
        for (i, inst) in list(m, "instances").iter().enumerate() {
            let name = text(inst, "name").unwrap_or_else(|| format!("instance-{}", i + 1));
            let prio = get(inst, "priority").and_then(Value::as_i64).unwrap_or(0);
            instances.push((name, inst, prio));
        }
        // Higher priority first; the gateway tries deployments in order.
        instances.sort_by_key(|(_, _, p)| -p);
        if list(m, "instances")
            .iter()
            .any(|i| get(i, "weight").and_then(Value::as_i64).unwrap_or(1) != 1)
        {
            out.unmapped(
                format!("{at}.plugins.ai-proxy-multi.instances"),
                "instance weights are not kept: deployments are tried in priority order (routing.strategy sets how they share traffic)",
            );
        }
    }
    let tokens = find("ai-rate-limiting")
        .map(|c| limits::token_rules(c, at, &mut out.store, &mut out.unmapped))
        .unwrap_or_default();
    let mut deployments = Vec::new();
    let mut model_name = route_name;
    for (name, conf, _) in &instances {
        let iat = format!("{at}.plugins.ai-proxy(-multi)[{name}]");
        let Some(p) = provider(conf, &iat, out) else {
            continue;
        };
        // Vertex's OpenAI-compatible endpoint names models `google/<model>`; the native
        // API takes `<model>`.
        let upstream_model =
            get(conf, "options")
                .and_then(|o| text(o, "model"))
                .map(|m| match text(conf, "provider").as_deref() {
                    Some("vertex-ai") => m.strip_prefix("google/").unwrap_or(&m).to_string(),
                    _ => m,
                });
        let Some(upstream_model) = upstream_model else {
            out.unmapped(
                format!("{iat}.options.model"),
                "no model: the gateway routes by the request's model name, so each instance needs options.model",
            );
            continue;
        };
        let provider_name = out.provider(name.clone(), p);
        model_name.get_or_insert_with(|| upstream_model.clone());
        // An instance's own limit wins over the top-level one (APISIX's order).
        let pick = |want: Option<&str>| -> Vec<Value> {
            tokens
                .iter()
                .filter(|(i, _)| i.as_deref() == want)
                .map(|(_, r)| r.clone())
                .collect()
        };
        let mut limits = pick(Some(name));
        if limits.is_empty() {
            limits = pick(None);
        }
        deployments.push(map(vec![
            ("provider", s(provider_name)),
            ("model", s(upstream_model)),
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
    let Some(model_name) = model_name else {
        return;
    };
    if deployments.is_empty() {
        return;
    }
    let mut route_limits = route_limit_rules(at, plugins, out);
    route_limits.extend(out.global.iter().cloned());
    if out.models.iter().any(|(n, _)| *n == model_name) {
        out.unmapped(
            at,
            format!("another route already serves model `{model_name}`; this route's deployments are not added"),
        );
        return;
    }
    let restricted = super::restriction(plugins, at, out);
    out.models.push((
        model_name.clone(),
        map(vec![
            ("name", s(model_name)),
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
