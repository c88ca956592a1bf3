//! Semantic checks that serde cannot express. Every problem is collected (not just the
//! first) and names the path of the field at fault.

use super::schema::{Config, LimitPolicy, OnLimit};
use super::{ConfigProblem, KindChecks};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

mod access;
mod ai_route;
mod limits;
mod price;
mod route;
use limits::{count_groups, limit_rules, limits_store};

struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// All problems of a deserialized config; empty means valid. `kind_checks`: each
/// provider kind's checks of its own settings (`crate::providers::check`).
pub fn validate(c: &Config, kind_checks: KindChecks) -> Vec<ConfigProblem> {
    let mut p = Problems(Vec::new());
    server(c, &mut p);
    consumers(c, &mut p);
    access::basic_auth(c, &mut p);
    providers(c, kind_checks, &mut p);
    models(c, &mut p);
    limits_store(c, &mut p);
    count_groups(c, &mut p);
    batch(c, &mut p);
    routes(c, &mut p);
    if c.routing.retries > 10 {
        p.add("routing.retries", "must be at most 10");
    }
    let u = &c.upstream;
    for (name, d) in [
        ("connect_timeout", u.connect_timeout),
        ("read_timeout", u.read_timeout),
        ("idle_timeout", u.idle_timeout),
    ] {
        if d.is_zero() {
            p.add(format!("upstream.{name}"), "must be greater than zero");
        }
    }
    if let Some(f) = &u.extra_ca_file {
        if !f.is_file() {
            p.add(
                "upstream.extra_ca_file",
                format!("file {} does not exist", f.display()),
            );
        }
    }
    if c.reload.poll_interval.as_millis() < 100 {
        p.add("reload.poll_interval", "must be at least 100ms");
    }
    if let Some(t) = &c.traces {
        traces(t, &mut p);
    }
    p.0
}

fn traces(t: &crate::config::schema::TracesConfig, p: &mut Problems) {
    match http::Uri::try_from(t.endpoint.as_str()) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => p.add(
            "traces.endpoint",
            "must be an http(s) URL such as http://otel-collector:4318/v1/traces",
        ),
    }
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        p.add("traces.sampling_ratio", "must be between 0 and 1");
    }
    if t.service_name.is_empty() {
        p.add("traces.service_name", "must not be empty");
    }
    if t.timeout.is_zero() {
        p.add("traces.timeout", "must be greater than zero");
    }
    if t.max_queue == 0 {
        p.add("traces.max_queue", "must be at least 1");
    }
    for (name, value) in &t.headers {
        let ok = http::HeaderName::try_from(name.as_str()).is_ok()
            && http::HeaderValue::try_from(value.expose()).is_ok();
        if !ok {
            p.add(
                format!("traces.headers.{name}"),
                "not a valid HTTP header name and value",
            );
        }
    }
}

fn routes(c: &Config, p: &mut Problems) {
    let mut names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(cr) = &r.consumer_restriction {
            access::restriction(cr, &path, p);
            if !r.auth {
                p.add(
                    format!("{path}.consumer_restriction"),
                    "needs auth: true (a consumer to restrict)",
                );
            }
        }
        if !names.insert(r.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate route name `{}`", r.name),
            );
        }
        ai_route::paths(&r.uris, &r.methods, &path, p);
        if let Some(rw) = &r.rewrite {
            route::rewrite(rw, &format!("{path}.rewrite"), p);
        }
        if let Some(c) = &r.cors {
            route::cors(c, &format!("{path}.cors"), p);
        }
        if r.upstream.nodes.is_empty() {
            p.add(
                format!("{path}.upstream.nodes"),
                "at least one node is needed",
            );
        }
        for (j, n) in r.upstream.nodes.iter().enumerate() {
            if let Err(e) = crate::url::BaseUrl::parse(&n.url) {
                p.add(format!("{path}.upstream.nodes[{j}].url"), e);
            }
        }
        if r.upstream.nodes.iter().all(|n| n.weight == 0) && !r.upstream.nodes.is_empty() {
            p.add(format!("{path}.upstream.nodes"), "every weight is 0");
        }
        limit_rules(&r.limits, &format!("{path}.limits"), p);
        for (j, l) in r.limits.iter().enumerate() {
            if l.spend.is_some() {
                p.add(
                    format!("{path}.limits[{j}].spend"),
                    "a pass-through route has no priced usage: put spend limits on consumers, models or deployments",
                );
            }
        }
    }
}

fn batch(c: &Config, p: &mut Problems) {
    let b = &c.batch;
    if b.concurrency == 0 {
        p.add("batch.concurrency", "must be at least 1");
    }
    if b.max_attempts == 0 {
        p.add("batch.max_attempts", "must be at least 1");
    }
    if c.batch.consumer_quota_bytes == 0 {
        p.add("batch.consumer_quota_bytes", "must be greater than zero");
    }
    if c.batch.retention.as_secs() < 1 {
        p.add("batch.retention", "must be at least 1s");
    }
    if b.store == super::schema::BatchStoreKind::Redis && c.limits.policy == LimitPolicy::Local {
        p.add(
            "batch.store",
            "`redis` uses the limits' Redis: set limits.policy to redis or redis-cluster",
        );
    }
    let r = &c.responses;
    if r.consumer_quota_bytes == 0 {
        p.add(
            "responses.consumer_quota_bytes",
            "must be greater than zero",
        );
    }
    if r.retention.as_secs() < 1 {
        p.add("responses.retention", "must be at least 1s");
    }
    if r.store == super::schema::ResponseStoreKind::Redis && c.limits.policy == LimitPolicy::Local {
        p.add(
            "responses.store",
            "`redis` uses the limits' Redis: set limits.policy to redis or redis-cluster",
        );
    }
    for (model, n) in &b.model_concurrency {
        let path = format!("batch.model_concurrency.{model}");
        if *n == 0 {
            p.add(&path, "must be at least 1");
        }
        if !c.models.iter().any(|m| &m.name == model) {
            p.add(&path, format!("no model named `{model}`"));
        }
    }
}

fn server(c: &Config, p: &mut Problems) {
    let s = &c.server;
    let listen = s.listen.parse::<SocketAddr>();
    if listen.is_err() {
        p.add(
            "server.listen",
            format!("{:?} is not an address such as 127.0.0.1:9080", s.listen),
        );
    }
    let metrics = s.metrics_listen.parse::<SocketAddr>();
    if metrics.is_err() {
        p.add(
            "server.metrics_listen",
            format!(
                "{:?} is not an address such as 127.0.0.1:9091",
                s.metrics_listen
            ),
        );
    }
    if let (Ok(a), Ok(b)) = (listen, metrics) {
        if a == b {
            p.add("server.metrics_listen", "must differ from server.listen");
        }
    }
    if !(1024..=super::schema::MAX_HEAD_LIMIT).contains(&s.max_header_bytes) {
        p.add(
            "server.max_header_bytes",
            format!(
                "must be between 1024 and {} (Pingora's own limit)",
                super::schema::MAX_HEAD_LIMIT
            ),
        );
    }
    if s.header_read_timeout.is_zero() {
        p.add("server.header_read_timeout", "must be greater than zero");
    }
    if s.max_body_bytes == 0 {
        p.add("server.max_body_bytes", "must be greater than zero");
    }
    if let Some(tls) = &s.tls {
        for (name, f) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if !f.is_file() {
                p.add(
                    format!("server.tls.{name}"),
                    format!("file {} does not exist", f.display()),
                );
            }
        }
    }
}

fn consumers(c: &Config, p: &mut Problems) {
    let mut names = HashSet::new();
    let mut keys: HashMap<[u8; 32], usize> = HashMap::new();
    let mut any_key = false;
    for (i, consumer) in c.consumers.iter().enumerate() {
        let path = format!("consumers[{i}]");
        if consumer.name.is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(consumer.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate consumer name {:?}", consumer.name),
            );
        }
        limit_rules(&consumer.limits, &format!("{path}.limits"), p);
        for (j, key) in consumer.keys.iter().enumerate() {
            if key.is_empty() {
                p.add(format!("{path}.keys[{j}]"), "must not be empty");
                continue;
            }
            any_key = true;
            let digest = match super::digest::of_entry(key.expose()) {
                Ok(d) => d,
                Err(why) => {
                    p.add(format!("{path}.keys[{j}]"), why);
                    continue;
                }
            };
            if let Some(other) = keys.insert(digest, i) {
                p.add(
                    format!("{path}.keys[{j}]"),
                    format!("the same key is already used by consumers[{other}]"),
                );
            }
        }
    }
    // A Basic credential is a key too.
    any_key |= c.consumers.iter().any(|c| !c.basic_auth.is_empty());
    // With admin keys, consumers can come from the Admin API instead.
    if c.auth.enabled && !any_key && c.admin.keys.is_empty() {
        p.add(
            "consumers",
            "auth is enabled but no consumer has a key (add one, give admin.keys to create \
             them through the Admin API, or set auth.enabled: false explicitly)",
        );
    }
}

fn providers(c: &Config, kind_checks: KindChecks, p: &mut Problems) {
    let mut names = HashSet::new();
    for (i, pr) in c.providers.iter().enumerate() {
        let path = format!("providers[{i}]");
        if pr.name.is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(pr.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate provider name {:?}", pr.name),
            );
        }
        if let Some(url) = &pr.base_url {
            if let Err(e) = crate::url::BaseUrl::parse(url) {
                p.add(format!("{path}.base_url"), e);
            }
        }
        // The kind's settings sorted (each misplaced or missing one named), then its
        // provider module's checks of their values.
        match super::provider::ProviderConfig::from_spec(pr, &path) {
            Ok(typed) => p.0.extend(kind_checks(&typed, &path)),
            Err(found) => p.0.extend(found),
        }
        for name in pr.headers.keys() {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.add(
                    format!("{path}.headers.{name}"),
                    "is not a valid header name",
                );
            } else if [
                "authorization",
                "api-key",
                "x-api-key",
                "host",
                "content-length",
            ]
            .contains(&lower.as_str())
            {
                p.add(
                    format!("{path}.headers.{name}"),
                    "is set by the gateway (put provider keys in api_key)",
                );
            }
        }
        for (name, value) in &pr.headers {
            if http::HeaderValue::from_str(value).is_err() {
                p.add(
                    format!("{path}.headers.{name}"),
                    "is not a valid header value",
                );
            }
        }
    }
}

fn models(c: &Config, p: &mut Problems) {
    let providers: HashSet<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
    let mut names = HashSet::new();
    for (i, m) in c.models.iter().enumerate() {
        let path = format!("models[{i}]");
        if let Some(cr) = &m.consumer_restriction {
            access::restriction(cr, &path, p);
        }
        if m.name.is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(m.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate model name {:?}", m.name),
            );
        }
        if m.name.matches('*').count() > 1 || (m.name.contains('*') && m.route.is_some()) {
            p.add(
                format!("{path}.name"),
                "a pattern has one `*` and is not an AI route (`route`)",
            );
        }
        for (j, a) in m.aliases.iter().enumerate() {
            if a.is_empty() || a.contains('*') || !names.insert(a.as_str()) {
                p.add(
                    format!("{path}.aliases[{j}]"),
                    format!("{a:?} must be a name of its own (not empty, no `*`, not another model's or alias)"),
                );
            }
        }
        if m.deployments.is_empty() {
            p.add(
                format!("{path}.deployments"),
                "needs at least one deployment",
            );
        }
        limit_rules(&m.limits, &format!("{path}.limits"), p);
        if let Some(pr) = &m.price {
            price::price(pr, &format!("{path}.price"), p);
        }
        ai_route::model(m, &path, p);
        for (j, d) in m.deployments.iter().enumerate() {
            if !providers.contains(d.provider.as_str()) {
                p.add(
                    format!("{path}.deployments[{j}].provider"),
                    format!("unknown provider {:?}", d.provider),
                );
            }
            limit_rules(&d.limits, &format!("{path}.deployments[{j}].limits"), p);
            if let Some(pr) = &d.price {
                price::price(pr, &format!("{path}.deployments[{j}].price"), p);
            }
            if d.model.as_deref() == Some("") {
                p.add(
                    format!("{path}.deployments[{j}].model"),
                    "must not be empty",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str_with_env;

    fn problems(yaml: &str) -> Vec<String> {
        match parse_str_with_env(yaml, "t.yaml", &|_| None, crate::providers::check) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn reports_every_problem_with_path() {
        let got = problems(
            r#"
server: {listen: "nope", metrics_listen: "127.0.0.1:1"}
consumers:
  - {name: a, keys: [k1]}
  - {name: a, keys: [k1]}
providers:
  - {name: p, kind: openai-compatible}
  - {name: m, kind: mock, mock: {failure: {status: 200}}}
models:
  - name: x
    deployments: [{provider: nope}]
  - {name: y, deployments: []}
"#,
        );
        let expect = [
            "server.listen:",
            "consumers[1].name: duplicate",
            "consumers[1].keys[0]: the same key",
            "providers[0].base_url: required",
            "providers[1].mock.failure.status",
            "models[0].deployments[0].provider: unknown provider",
            "models[1].deployments: needs",
        ];
        for e in expect {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }

    #[test]
    fn unknown_field_named_with_path() {
        let got = problems(
            "auth: {enabled: false}\nproviders:\n  - {name: p, kind: mock, mock: {latncy_ms: 3}}\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("providers[0].mock"), "{got:?}");
        assert!(got[0].contains("latncy_ms"), "{got:?}");
    }

    #[test]
    fn auth_needs_a_key_unless_switched_off() {
        assert!(problems("{}")
            .iter()
            .any(|p| p.starts_with("consumers: auth is enabled")));
        assert!(problems("auth: {enabled: false}").is_empty());
    }

    #[test]
    fn limits_store_queue_and_groups_are_checked() {
        let got = problems(
            r#"
auth: {enabled: false}
limits: {policy: redis, lease_ttl: 10ms}
providers: [{name: p, kind: mock}]
models:
  - name: a
    deployments: [{provider: p}]
    limits:
      - {name: n, count: {count: 2, time_window: 60s, group: g}}
      - {name: q, req: {rate: 1}, on_limit: queue, max_queue: 0}
  - name: b
    deployments: [{provider: p}]
    limits: [{name: n, count: {count: 3, time_window: 60s, group: g}}]
"#,
        );
        let want = [
            "limits.redis.url: is required with policy redis",
            "limits.lease_ttl: must be at least 300ms",
            "models[0].limits[1].max_queue: must be at least 1",
            "models[1].limits[0].count: group \"g\" must have the same count, time_window and key as models[0].limits[0]",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:?}");
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
        let cluster = problems(
            "auth: {enabled: false}\nlimits: {policy: redis-cluster, redis: {nodes: [\"nope://x\"]}}\n",
        );
        assert_eq!(cluster.len(), 1, "{cluster:?}");
        assert!(cluster[0].starts_with("limits.redis.nodes[0]: not a Redis URL"));
        assert!(!cluster[0].contains("nope://x"), "URLs may hold passwords");
    }
}
