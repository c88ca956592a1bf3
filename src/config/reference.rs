//! The configuration reference, generated from the schema types: a JSON Schema for
//! editors (`ai-rate-limiter schema`) and the Markdown reference
//! (`docs/config-reference.md`, `ai-rate-limiter schema --markdown`), each field with its
//! type, default, whether a reload applies it, and its doc comment. A test keeps the file
//! in step with the types and fails on a field without documentation.

use super::schema::Config;
use serde_json::{Map, Value};
use std::fmt::Write;

/// The settings a reload does not apply (they take effect at the next start), by path; a
/// path covers what is under it. `state::reload` warns with these names, and its test
/// keeps the two in step.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.metrics_listen",
    "server.threads",
    "server.work_stealing",
    "server.max_body_bytes",
    "server.max_header_bytes",
    "server.header_read_timeout",
    "server.shutdown_grace_period",
    "server.upgrade_sock",
    "logging",
    "upstream.pool_size",
    "upstream.extra_ca_file",
    "batch.enabled",
    "batch.store",
    "batch.data_dir",
    "responses.store",
    "responses.data_dir",
    "admin.data_dir",
    "admin.store",
    "limits.policy",
    "limits.redis",
    "limits.local_max_keys",
];

/// Whether a reload applies the setting at `path` (`providers[].name` style).
fn reloaded(path: &str) -> bool {
    !RESTART_ONLY.iter().any(|r| {
        path == *r
            || path
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    })
}

/// The JSON Schema (draft 2020-12) of `gateway.yaml`.
pub fn json_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "ai-rate-limiter gateway.yaml".into());
    }
    schema
}

/// Definitions used in several places, documented once in a section of their own: the
/// name in the schema and the section's title.
const SHARED: &[(&str, &str)] = &[
    ("LimitRuleConfig", "limit rule"),
    ("ConsumerRestriction", "consumer restriction"),
    ("Price", "price"),
];

fn shared(name: &str) -> Option<&'static str> {
    SHARED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, title)| *title)
}

/// One documented setting.
struct Row {
    path: String,
    kind: String,
    default: String,
    description: String,
}

/// The schema's definitions, and the rows found so far.
struct Walk<'a> {
    defs: &'a Map<String, Value>,
    rows: Vec<Row>,
}

impl Walk<'_> {
    /// The definition a `$ref` names, or the schema itself.
    fn resolve<'s>(&'s self, s: &'s Value) -> &'s Value {
        s["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .and_then(|name| self.defs.get(name))
            .unwrap_or(s)
    }

    /// The schema with `null` removed from an optional's `anyOf`, and whether it was there.
    fn unnull<'s>(&'s self, s: &'s Value) -> (&'s Value, bool) {
        if let Some(any) = s["anyOf"].as_array() {
            let rest: Vec<&Value> = any.iter().filter(|a| a["type"] != "null").collect();
            if rest.len() == 1 && any.len() == 2 {
                return (rest[0], true);
            }
        }
        (s, false)
    }

    /// A type in an operator's words.
    fn kind(&self, s: &Value) -> String {
        let (s, optional) = self.unnull(s);
        let name = s["$ref"].as_str().and_then(|r| r.strip_prefix("#/$defs/"));
        let d = self.resolve(s);
        let mut k = match name {
            Some(n) if shared(n).is_some() => format!("{} (below)", shared(n).unwrap_or(n)),
            Some("Secret") => "secret".to_string(),
            Some("Amount") => "whole number or template".to_string(),
            Some("Window") => "duration or template".to_string(),
            Some("Duration") => "duration".to_string(),
            _ => self.plain_kind(d),
        };
        if optional {
            k.push_str(", optional");
        }
        k
    }

    fn plain_kind(&self, d: &Value) -> String {
        // `Option<String>` and the like: `"type": ["string", "null"]`.
        if let Some(types) = d["type"].as_array() {
            let mut one = d.clone();
            if let Some(t) = types.iter().find(|t| *t != "null") {
                one["type"] = t.clone();
            }
            let optional = types.iter().any(|t| t == "null");
            let k = self.plain_kind(&one);
            return if optional {
                format!("{k}, optional")
            } else {
                k
            };
        }
        if let Some(values) = d["enum"].as_array() {
            return one_of(values.iter());
        }
        // Unit variants: `enum`, or `oneOf` of documented `const`s and `enum`s.
        if let Some(variants) = d["oneOf"].as_array() {
            let values: Vec<&Value> = variants
                .iter()
                .flat_map(|v| match (v.get("const"), v["enum"].as_array()) {
                    (Some(c), _) => vec![c],
                    (None, Some(e)) => e.iter().collect(),
                    (None, None) => Vec::new(),
                })
                .collect();
            if !values.is_empty() {
                return one_of(values.into_iter());
            }
        }
        match d["type"].as_str() {
            Some("integer") => "whole number".into(),
            Some("number") => "number".into(),
            Some("boolean") => "true or false".into(),
            Some("string") => "text".into(),
            Some("array") => format!("list of {}", self.kind(&d["items"])),
            Some("object") if d.get("properties").is_some() => "object".into(),
            Some("object") => match d.get("additionalProperties") {
                Some(v) if v.is_object() => format!("map of {}", self.kind(v)),
                _ => "map".into(),
            },
            _ => "see description".into(),
        }
    }

    /// The rows of an object's fields, under `prefix`.
    fn object(&mut self, prefix: &str, d: &Value) {
        let Some(props) = d["properties"].as_object() else {
            return;
        };
        for (name, field) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let required = d["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == name.as_str()));
            let object = self
                .resolve(self.unnull(field).0)
                .get("properties")
                .is_some();
            let default = match field.get("default") {
                _ if required => "required".to_string(),
                Some(_) if object => "see its fields".to_string(),
                Some(Value::Null) | None => "unset".to_string(),
                Some(Value::String(t)) if t.is_empty() => "empty".to_string(),
                Some(v) => format!("`{}`", v.to_string().trim_matches('"')),
            };
            let description = field["description"]
                .as_str()
                .or_else(|| self.resolve(self.unnull(field).0)["description"].as_str())
                .unwrap_or_default()
                .to_string();
            self.rows.push(Row {
                path: path.clone(),
                kind: self.kind(field),
                default,
                description,
            });
            self.nested(&path, field);
        }
    }

    /// Fields inside a field: an object's, a list's items', a map's values'.
    fn nested(&mut self, path: &str, field: &Value) {
        let (field, _) = self.unnull(field);
        let name = field["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"));
        if name.and_then(shared).is_some() {
            return; // documented in its own section
        }
        let d = self.resolve(field).clone();
        if d.get("properties").is_some() {
            self.object(path, &d);
        } else if d["type"] == "array" {
            self.nested(&format!("{path}[]"), &d["items"]);
        } else if let Some(v) = d.get("additionalProperties").filter(|v| v.is_object()) {
            self.nested(&format!("{path}.<name>"), v);
        }
    }
}

fn one_of<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    let names: Vec<String> = values
        .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
        .collect();
    format!("one of {}", names.join(", "))
}

/// Every setting of the file, in schema order, with its type, default and documentation:
/// the file's own (section `""`), then each shared definition's.
fn sections() -> Vec<(&'static str, Vec<Row>)> {
    let schema = json_schema();
    let empty = Map::new();
    let defs = schema["$defs"].as_object().unwrap_or(&empty);
    let mut walk = Walk {
        defs,
        rows: Vec::new(),
    };
    walk.object("", &schema);
    let mut out = vec![("", std::mem::take(&mut walk.rows))];
    for (name, title) in SHARED {
        if let Some(d) = defs.get(*name) {
            walk.object("", d);
            out.push((*title, std::mem::take(&mut walk.rows)));
        }
    }
    out
}

fn rows() -> Vec<Row> {
    sections().into_iter().flat_map(|(_, rows)| rows).collect()
}

/// Settings whose documentation is missing (a test keeps this empty).
pub fn undocumented() -> Vec<String> {
    rows()
        .into_iter()
        .filter(|r| r.description.trim().is_empty())
        .map(|r| r.path)
        .collect()
}

/// One line of table text: doc comments joined, pipes escaped, Rust-only links unwrapped.
fn cell(text: &str) -> String {
    let joined = text
        .split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .replace("[`", "`")
        .replace("`]", "`")
        .replace('|', "\\|")
}

/// The Markdown reference (`docs/config-reference.md`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the schema types by `ai-rate-limiter schema --markdown` (a test fails\n\
         when this file and the types differ, or a setting has no documentation); \
         `ai-rate-limiter schema`\nprints the same as a JSON Schema for editors. The guide \
         to these settings is\n[configuration.md](configuration.md).\n\n\
         - **Default**: what an absent setting means (`required`: it must be given; `unset`:\n  \
         the feature it names is off, or the description says what stands in).\n\
         - **Reload**: `yes` when a reload (file change or SIGHUP) applies it, `restart` when it\n  \
         takes effect at the next start (a reload that changes it logs a warning naming it).\n\
         - `a[]` is each item of the list `a`; `a.<name>` each entry of the map `a`.\n\
         - Durations are written with a unit (`500ms`, `30s`, `5m`, `24h`, `30days`).\n",
    );
    let header = "| setting | type | default | reload | what it does |\n|---|---|---|---|---|\n";
    for (title, rows) in sections() {
        let mut section = String::new();
        if !title.is_empty() {
            let _ = write!(
                out,
                "\n## A {title}\n\nThe fields of each {title} (the \
                 settings above marked “{title} (below)”).\n\n{header}"
            );
        }
        for r in rows {
            let top = r
                .path
                .split(['.', '['])
                .next()
                .unwrap_or_default()
                .to_string();
            if title.is_empty() && top != section {
                let _ = write!(out, "\n## `{top}`\n\n{header}");
                section = top;
            }
            let reload = if !title.is_empty() || reloaded(&r.path) {
                "yes"
            } else {
                "restart"
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {reload} | {} |",
                r.path,
                cell(&r.kind),
                cell(&r.default),
                cell(&r.description)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented() {
        assert_eq!(undocumented(), Vec::<String>::new());
    }

    /// The file in `docs/` is what the types give; to write it anew:
    /// `cargo run -- schema --markdown > docs/config-reference.md`.
    #[test]
    fn the_reference_in_docs_is_generated_from_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config-reference.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == markdown(),
            "docs/config-reference.md differs from the schema types: \
             run `cargo run -- schema --markdown > docs/config-reference.md`"
        );
    }

    #[test]
    fn reload_column_follows_the_restart_list() {
        assert!(!reloaded("server.listen"));
        assert!(!reloaded("logging.format"));
        assert!(!reloaded("limits.redis.url"));
        assert!(reloaded("limits.redis_timeout_ms_nope"));
        assert!(reloaded("server.tls"));
        assert!(reloaded("models[].name"));
    }

    #[test]
    fn the_json_schema_describes_the_file() {
        let s = json_schema();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert!(s["properties"]["providers"].is_object());
    }
}
