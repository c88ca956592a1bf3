//! An APISIX upstream as the gateway's weighted nodes, naming what the gateway sets once
//! for every upstream instead (timeouts, keep-alive, retries).

use super::*;

/// An upstream's nodes as `[{url, weight}]`.
pub(super) fn nodes(up: &Value, at: &str, out: &mut Vec<Unmapped>) -> Vec<Value> {
    let scheme = text(up, "scheme").unwrap_or_else(|| "http".into());
    if scheme != "http" && scheme != "https" {
        out.push(Unmapped {
            at: format!("{at}.scheme"),
            what: format!("scheme `{scheme}` is not supported"),
        });
        return Vec::new();
    }
    // What the gateway sets once for every upstream: named, not dropped silently.
    for (field, what) in [
        ("timeout", "per-upstream timeouts are not carried: the gateway's upstream.connect_timeout and upstream.read_timeout apply"),
        ("keepalive_pool", "the keep-alive pool is not carried: the gateway's upstream.pool_size applies"),
        ("retries", "per-upstream retries are not carried: the gateway's routing.retries apply to AI routes only"),
    ] {
        if get(up, field).is_some() {
            out.push(Unmapped {
                at: format!("{at}.{field}"),
                what: what.into(),
            });
        }
    }
    if let Some(t) = text(up, "type").filter(|t| t != "roundrobin") {
        out.push(Unmapped {
            at: format!("{at}.type"),
            what: format!("balancer `{t}` is not supported; weighted round robin is used"),
        });
    }
    let node = |host: &str, weight: Value| {
        map(vec![
            ("url", s(format!("{scheme}://{host}"))),
            ("weight", weight),
        ])
    };
    match get(up, "nodes") {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, w)| Some(node(k.as_str()?, w.clone())))
            .collect(),
        Some(Value::Sequence(l)) => l
            .iter()
            .filter_map(|n| {
                let host = text(n, "host")?;
                let hp = match text(n, "port") {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                };
                Some(node(
                    &hp,
                    get(n, "weight").cloned().unwrap_or(Value::Number(1.into())),
                ))
            })
            .collect(),
        _ => Vec::new(),
    }
}
