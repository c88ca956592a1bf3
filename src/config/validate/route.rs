//! Validation of what a pass-through route changes on the way (`rewrite`, `cors`).

use super::Problems;
use crate::config::schema::{CorsConfig, RewriteConfig};

fn header_ok(name: &str, value: &str) -> bool {
    http::HeaderName::try_from(name).is_ok() && http::HeaderValue::try_from(value).is_ok()
}

/// Problems of a route's `rewrite`, under `path`.
pub fn rewrite(r: &RewriteConfig, path: &str, p: &mut Problems) {
    if let Some(uri) = &r.uri {
        if !uri.starts_with('/') || http::uri::PathAndQuery::try_from(uri.as_str()).is_err() {
            p.add(format!("{path}.uri"), "must be a path starting with /");
        }
    }
    if !r.regex_uri.len().is_multiple_of(2) {
        p.add(
            format!("{path}.regex_uri"),
            "must be pairs: [regex, replacement, regex, replacement, …]",
        );
    }
    for (i, pair) in r.regex_uri.chunks(2).enumerate() {
        if let Err(e) = regex::Regex::new(&pair[0]) {
            p.add(
                format!("{path}.regex_uri[{}]", 2 * i),
                format!("invalid regex: {e}"),
            );
        }
    }
    if let Some(host) = &r.host {
        if http::uri::Authority::try_from(host.as_str()).is_err() {
            p.add(
                format!("{path}.host"),
                "must be a host name, with an optional :port",
            );
        }
    }
    if let Some(m) = &r.method {
        if http::Method::from_bytes(m.as_bytes()).is_err() {
            p.add(format!("{path}.method"), "not an HTTP method");
        }
    }
    let h = &r.headers;
    for (kind, map) in [("add", &h.add), ("set", &h.set)] {
        for (name, value) in map {
            if !header_ok(name, value) {
                p.add(
                    format!("{path}.headers.{kind}.{name}"),
                    "not a valid HTTP header name and value",
                );
            }
        }
    }
    for (i, name) in h.remove.iter().enumerate() {
        if http::HeaderName::try_from(name.as_str()).is_err() {
            p.add(
                format!("{path}.headers.remove[{i}]"),
                "not a valid HTTP header name",
            );
        }
    }
}

/// Problems of a route's `cors`, under `path` (APISIX's own check: with credentials no
/// option may be `*`).
pub fn cors(c: &CorsConfig, path: &str, p: &mut Problems) {
    if c.allow_credential {
        for (name, value) in [
            ("allow_origins", &c.allow_origins),
            ("allow_methods", &c.allow_methods),
            ("allow_headers", &c.allow_headers),
            ("expose_headers", &c.expose_headers),
        ] {
            if value == "*" {
                p.add(
                    format!("{path}.{name}"),
                    "cannot be `*` with allow_credential: true (browsers refuse it)",
                );
            }
        }
    }
    for (name, value) in [
        ("allow_origins", &c.allow_origins),
        ("allow_methods", &c.allow_methods),
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        if http::HeaderValue::try_from(value.as_str()).is_err() {
            p.add(format!("{path}.{name}"), "not a valid header value");
        }
    }
}
