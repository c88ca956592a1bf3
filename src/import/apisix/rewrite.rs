//! APISIX `proxy-rewrite` and `cors` on a pass-through route as its `rewrite` and `cors`.
//! What has no equivalent (Nginx variables in values, regex origins, the unsafe raw URI)
//! is named, never dropped silently.

use super::*;

/// Whether a value uses Nginx variables (`$arg_x`, `$remote_addr`), which the gateway
/// does not evaluate.
fn templated(v: &str) -> bool {
    v.contains('$')
}

/// `proxy-rewrite` as a `rewrite` (or nothing when nothing maps).
pub(super) fn proxy_rewrite(conf: &Value, at: &str, out: &mut Out) -> Value {
    let at = format!("{at}.plugins.proxy-rewrite");
    let mut uri = Value::Null;
    if let Some(u) = text(conf, "uri") {
        if templated(&u) {
            out.unmapped(
                format!("{at}.uri"),
                format!("`{u}` uses Nginx variables, which the gateway does not evaluate"),
            );
        } else {
            uri = s(u);
        }
    }
    let regex_uri = match get(conf, "regex_uri").and_then(Value::as_sequence) {
        Some(pairs) => Value::Sequence(pairs.clone()),
        None => Value::Null,
    };
    let mut host = Value::Null;
    if let Some(h) = text(conf, "host") {
        if templated(&h) {
            out.unmapped(format!("{at}.host"), "Nginx variables are not evaluated");
        } else {
            host = s(h);
        }
    }
    let method = text(conf, "method").map_or(Value::Null, s);
    for field in ["scheme", "use_real_request_uri_unsafe"] {
        if get(conf, field).is_some_and(|v| v.as_bool() != Some(false)) {
            out.unmapped(format!("{at}.{field}"), "not supported by the gateway");
        }
    }
    let headers = get(conf, "headers").map_or(Value::Null, |h| headers_of(h, &at, out));
    let rewrite = map(vec![
        ("uri", uri),
        ("regex_uri", regex_uri),
        ("host", host),
        ("method", method),
        ("headers", headers),
    ]);
    if rewrite.as_mapping().is_some_and(Mapping::is_empty) {
        Value::Null
    } else {
        rewrite
    }
}

/// proxy-rewrite's `headers`: `{add, set, remove}`, or the older flat form (a value sets
/// the header, an empty one removes it).
fn headers_of(h: &Value, at: &str, out: &mut Out) -> Value {
    let Some(m) = h.as_mapping() else {
        return Value::Null;
    };
    let structured = ["add", "set", "remove"].iter().any(|k| m.contains_key(*k));
    let (mut add, mut set, mut remove) = (Mapping::new(), Mapping::new(), Vec::new());
    let mut keep = |kind: &str, name: &Value, value: &Value, into: &mut Mapping| {
        let v = value
            .as_str()
            .map(str::to_string)
            .or_else(|| text(&map(vec![("v", value.clone())]), "v"))
            .unwrap_or_default();
        if templated(&v) {
            out.unmapped(
                format!("{at}.headers.{kind}.{}", name.as_str().unwrap_or_default()),
                "Nginx variables are not evaluated",
            );
        } else {
            into.insert(name.clone(), s(v));
        }
    };
    if structured {
        for (kind, into) in [("add", &mut add), ("set", &mut set)] {
            for (k, v) in get(h, kind)
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
            {
                keep(kind, k, v, into);
            }
        }
        remove.extend(
            get(h, "remove")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default(),
        );
    } else {
        for (k, v) in m {
            if v.as_str() == Some("") {
                remove.push(k.clone());
            } else {
                keep("set", k, v, &mut set);
            }
        }
    }
    let nonempty = |m: Mapping| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Mapping(m)
        }
    };
    map(vec![
        ("add", nonempty(add)),
        ("set", nonempty(set)),
        (
            "remove",
            if remove.is_empty() {
                Value::Null
            } else {
                Value::Sequence(remove)
            },
        ),
    ])
}

/// `cors` as the route's `cors` (APISIX's defaults are the gateway's).
pub(super) fn cors(conf: &Value, at: &str, out: &mut Out) -> Value {
    let at = format!("{at}.plugins.cors");
    for field in [
        "allow_origins_by_regex",
        "allow_origins_by_metadata",
        "timing_allow_origins",
        "timing_allow_origins_by_regex",
    ] {
        if get(conf, field).is_some() {
            out.unmapped(format!("{at}.{field}"), "not supported by the gateway");
        }
    }
    let field = |k: &str| text(conf, k).map_or(Value::Null, s);
    map(vec![
        ("allow_origins", field("allow_origins")),
        ("allow_methods", field("allow_methods")),
        ("allow_headers", field("allow_headers")),
        ("expose_headers", field("expose_headers")),
        (
            "max_age",
            get(conf, "max_age").cloned().unwrap_or(Value::Null),
        ),
        (
            "allow_credential",
            get(conf, "allow_credential")
                .cloned()
                .unwrap_or(Value::Null),
        ),
    ])
}
