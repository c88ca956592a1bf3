//! Validation of where a route is served (`routes[].uris`, `models[].route`) and of a
//! model's APISIX fallback policy and deployment options.

use super::*;
use crate::config::schema::ModelConfig;

/// Paths (exact, or a prefix ending in `*`) and methods a route matches.
pub(super) fn paths(uris: &[String], methods: &[String], path: &str, p: &mut Problems) {
    if uris.is_empty() {
        p.add(format!("{path}.uris"), "at least one path is needed");
    }
    for (j, u) in uris.iter().enumerate() {
        if !u.starts_with('/') {
            p.add(format!("{path}.uris[{j}]"), "must start with /");
        } else if u.trim_end_matches('*').contains('*') {
            p.add(
                format!("{path}.uris[{j}]"),
                "`*` only at the end (a prefix)",
            );
        }
    }
    for (j, m) in methods.iter().enumerate() {
        if m.parse::<http::Method>().is_err() || m.chars().any(|c| c.is_ascii_lowercase()) {
            p.add(
                format!("{path}.methods[{j}]"),
                format!("`{m}` is not an HTTP method"),
            );
        }
    }
}

/// A model's `route`, `fallback` and its deployments' `options`.
pub(super) fn model(m: &ModelConfig, path: &str, p: &mut Problems) {
    if let Some(r) = &m.route {
        paths(&r.uris, &r.methods, &format!("{path}.route"), p);
    }
    if let Some(f) = &m.fallback {
        for (j, s) in f.statuses.iter().enumerate() {
            if !(400..=599).contains(s) {
                p.add(
                    format!("{path}.fallback.statuses[{j}]"),
                    "must be 400..=599",
                );
            }
        }
        if m.deployments.iter().all(|d| d.weight == 0) && !m.deployments.is_empty() {
            p.add(
                format!("{path}.deployments"),
                "with fallback, at least one deployment needs a weight above 0",
            );
        }
    }
    for (j, d) in m.deployments.iter().enumerate() {
        if d.options.contains_key("model") {
            p.add(
                format!("{path}.deployments[{j}].options.model"),
                "set the deployment's `model` instead",
            );
        }
    }
}
