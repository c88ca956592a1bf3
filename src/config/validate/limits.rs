//! Validation of limit rules and of the limits section (count groups agree over the whole
//! file, the store's settings hang together).

use super::*;

/// Every count rule of one `group` must be the same limit (APISIX checks this only per
/// process, against the first config it saw: reference bug 10).
pub(super) fn count_groups(c: &Config, p: &mut Problems) {
    let mut all: Vec<(String, &crate::config::schema::LimitRuleConfig)> = Vec::new();
    for (i, consumer) in c.consumers.iter().enumerate() {
        for (j, r) in consumer.limits.iter().enumerate() {
            all.push((format!("consumers[{i}].limits[{j}]"), r));
        }
    }
    for (i, m) in c.models.iter().enumerate() {
        for (j, r) in m.limits.iter().enumerate() {
            all.push((format!("models[{i}].limits[{j}]"), r));
        }
        for (k, d) in m.deployments.iter().enumerate() {
            for (j, r) in d.limits.iter().enumerate() {
                all.push((format!("models[{i}].deployments[{k}].limits[{j}]"), r));
            }
        }
    }
    for (i, route) in c.routes.iter().enumerate() {
        for (j, r) in route.limits.iter().enumerate() {
            all.push((format!("routes[{i}].limits[{j}]"), r));
        }
    }
    let mut first: HashMap<String, (&str, &crate::config::schema::LimitRuleConfig)> =
        HashMap::new();
    for (path, r) in &all {
        let Some(group) = r.group() else {
            continue;
        };
        let kind = if r.req.is_some() {
            "req"
        } else if r.conn.is_some() {
            "conn"
        } else {
            "count"
        };
        if group.is_empty() {
            p.add(format!("{path}.{kind}.group"), "must not be empty");
            continue;
        }
        let id = format!("{kind}:{group}");
        match first.get(&id) {
            None => {
                first.insert(id, (path, r));
            }
            Some((at, f)) => {
                if f.req != r.req || f.conn != r.conn || f.count != r.count || f.key != r.key {
                    let what = match kind {
                        "req" => "rate, burst, nodelay",
                        "conn" => "conn, burst, default_conn_delay",
                        _ => "count, time_window",
                    };
                    p.add(
                        format!("{path}.{kind}"),
                        format!("group {group:?} must have the same {what} and key as {at}"),
                    );
                }
            }
        }
    }
}

pub(super) fn limits_store(c: &Config, p: &mut Problems) {
    let names = &c.limits.quota_headers;
    for (field, name) in [
        ("limit", &names.limit),
        ("remaining", &names.remaining),
        ("reset", &names.reset),
    ] {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.add(
                format!("limits.quota_headers.{field}"),
                "must be a valid header name",
            );
        }
    }
    let l = &c.limits;
    let check_url = |path: String, url: &crate::config::schema::Secret, p: &mut Problems| {
        // The message never repeats the URL: it may hold a password.
        if let Err(e) = redis::Client::open(url.expose()) {
            p.add(path, format!("not a Redis URL ({})", e.category()));
        }
    };
    match l.policy {
        LimitPolicy::Local => {}
        LimitPolicy::Redis => match &l.redis.url {
            Some(u) => check_url("limits.redis.url".into(), u, p),
            None => p.add("limits.redis.url", "is required with policy redis"),
        },
        LimitPolicy::RedisCluster => {
            if l.redis.nodes.is_empty() {
                p.add(
                    "limits.redis.nodes",
                    "needs at least one node with policy redis-cluster",
                );
            }
            for (i, n) in l.redis.nodes.iter().enumerate() {
                check_url(format!("limits.redis.nodes[{i}]"), n, p);
            }
        }
    }
    if l.redis.timeout.as_millis() < 10 {
        p.add("limits.redis.timeout", "must be at least 10ms");
    }
    if l.local_max_keys == 0 {
        p.add("limits.local_max_keys", "must be at least 1");
    }
    if l.lease_ttl.as_millis() < 300 {
        p.add("limits.lease_ttl", "must be at least 300ms");
    } else if l.policy != LimitPolicy::Local && l.lease_ttl < l.redis.timeout * 3 {
        p.add(
            "limits.lease_ttl",
            format!(
                "must be at least 3 × limits.redis.timeout ({}): a lease is refreshed every \
                 third of lease_ttl, and must outlive one refresh that fails after the timeout",
                humantime::format_duration(l.redis.timeout * 3)
            ),
        );
    }
    if let Some(i) = l.sync_interval {
        if i.as_millis() < 100 {
            p.add("limits.sync_interval", "must be at least 100ms");
        }
        if l.policy == LimitPolicy::Local {
            p.add(
                "limits.sync_interval",
                "only applies to the redis and redis-cluster policies",
            );
        }
    }
}

pub(super) fn limit_rules(
    rules: &[crate::config::schema::LimitRuleConfig],
    path: &str,
    p: &mut Problems,
) {
    let mut names = HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("{path}[{i}]");
        if r.name.is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(r.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate rule name {:?}", r.name),
            );
        }
        let kinds = [
            r.req.is_some(),
            r.conn.is_some(),
            r.count.is_some(),
            r.tokens.is_some(),
            r.spend.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            p.add(
                path.clone(),
                "needs exactly one of req, conn, count, tokens, spend",
            );
        }
        if let Some(q) = &r.req {
            if !(q.rate > 0.0 && q.rate.is_finite()) {
                p.add(format!("{path}.req.rate"), "must be greater than 0");
            }
            if !(q.burst >= 0.0 && q.burst.is_finite()) {
                p.add(format!("{path}.req.burst"), "must be 0 or more");
            }
        }
        let mut positive = |field: &str, ok: bool| {
            if !ok {
                p.add(format!("{path}.{field}"), "must be greater than 0");
            }
        };
        if let Some(c) = &r.conn {
            positive("conn.conn", c.conn > 0);
            positive("conn.default_conn_delay", !c.default_conn_delay.is_zero());
        }
        if let Some(c) = &r.count {
            positive(
                "count.count",
                c.count.template.is_some() || c.count.fixed > 0,
            );
            positive(
                "count.time_window",
                c.time_window.template.is_some() || c.time_window.fixed.as_millis() > 0,
            );
        }
        if let Some(t) = &r.tokens {
            positive(
                "tokens.limit",
                t.limit.template.is_some() || t.limit.fixed > 0,
            );
            positive(
                "tokens.time_window",
                t.time_window.template.is_some() || t.time_window.fixed.as_millis() > 0,
            );
            let expression = t.strategy == crate::config::schema::TokenStrategy::Expression;
            match (&t.cost_expr, expression) {
                (None, true) => p.add(
                    format!("{path}.tokens.cost_expr"),
                    "required when strategy is expression",
                ),
                (Some(_), false) => p.add(
                    format!("{path}.tokens.cost_expr"),
                    "only with strategy: expression",
                ),
                (Some(e), true) => {
                    if let Err(why) = crate::config::cost_expr::CostExpr::parse(e) {
                        p.add(
                            format!("{path}.tokens.cost_expr"),
                            format!("invalid cost_expr: {why}"),
                        );
                    }
                }
                (None, false) => {}
            }
        }
        if let Some(s) = &r.spend {
            // At least a micro-dollar, at most a billion dollars: the counters are whole
            // micro-dollars.
            if !(s.limit_usd >= 1e-6 && s.limit_usd <= 1e9) {
                p.add(
                    format!("{path}.spend.limit_usd"),
                    "must be a number of USD between 0.000001 and 1000000000",
                );
            }
            if s.time_window.is_zero() {
                p.add(
                    format!("{path}.spend.time_window"),
                    "must be greater than 0",
                );
            }
            if r.show_limit_quota_header {
                p.add(
                    format!("{path}.show_limit_quota_header"),
                    "APISIX's quota headers count requests or tokens, not spend",
                );
            }
            if s.admission == crate::config::schema::TokenAdmission::AnyLeft {
                p.add(
                    format!("{path}.spend.admission"),
                    "must be hard or reserve (any_left is APISIX's, for token limits)",
                );
            }
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if let Some(prefix) = &r.quota_header_prefix {
            if !token(prefix) {
                p.add(
                    format!("{path}.quota_header_prefix"),
                    "letters, digits, - and _ only (it goes in a header name)",
                );
            }
        }
        if let Some(suffix) = &r.quota_header_suffix {
            if !token(suffix) {
                p.add(
                    format!("{path}.quota_header_suffix"),
                    "letters, digits, - and _ only (it goes in a header name)",
                );
            }
            if r.tokens.is_none() {
                p.add(
                    format!("{path}.quota_header_suffix"),
                    "only on token rules (APISIX ai-rate-limiting's headers)",
                );
            }
        }
        if r.rejected_code.is_some_and(|c| !(200..=599).contains(&c)) {
            p.add(format!("{path}.rejected_code"), "must be 200..=599");
        }
        if r.on_limit == OnLimit::Queue {
            if r.max_wait.is_zero() || r.max_wait > std::time::Duration::from_secs(600) {
                p.add(format!("{path}.max_wait"), "must be between 1ms and 10m");
            }
            if r.max_queue == 0 {
                p.add(format!("{path}.max_queue"), "must be at least 1");
            }
        }
        if r.rejected_msg.as_deref() == Some("") {
            p.add(format!("{path}.rejected_msg"), "must not be empty");
        }
        let templates = [
            (
                "count.count",
                r.count.as_ref().and_then(|c| c.count.template.as_ref()),
            ),
            (
                "count.time_window",
                r.count
                    .as_ref()
                    .and_then(|c| c.time_window.template.as_ref()),
            ),
            (
                "tokens.limit",
                r.tokens.as_ref().and_then(|t| t.limit.template.as_ref()),
            ),
            (
                "tokens.time_window",
                r.tokens
                    .as_ref()
                    .and_then(|t| t.time_window.template.as_ref()),
            ),
        ];
        for (field, t) in templates {
            if let Some(Err(e)) = t.map(|t| crate::config::key::KeyTemplate::parse(t)) {
                p.add(format!("{path}.{field}"), e);
            }
        }
        if let Some(k) = &r.key {
            if let Err(e) = crate::config::key::KeyTemplate::parse(k) {
                p.add(format!("{path}.key"), e);
            }
        }
    }
}
