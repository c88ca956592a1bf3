//! `${VAR}` and `${VAR:-default}` substitution in config values.
//!
//! Substitution runs on parsed YAML strings, not on the file text, so a value can never
//! inject YAML syntax. A string that is exactly one `${…}` is re-read as a YAML scalar after
//! substitution, so `port: ${PORT:-9080}` is a number. `$$` writes a literal `$`. An unset
//! variable without a default is a problem reported with its path.

use super::ConfigProblem;
use serde_yaml_ng::Value;

/// Substitute every string in `value`; returns the problems found.
pub fn substitute(value: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    walk(value, String::new(), env, &mut problems);
    problems
}

fn walk(
    value: &mut Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => {
                let whole = is_single_reference(s);
                *value = if whole {
                    // Re-read as a scalar so numbers and booleans keep their type, but
                    // never let a variable turn into a mapping or a sequence.
                    match serde_yaml_ng::from_str::<Value>(&expanded) {
                        Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
                        _ => Value::String(expanded),
                    }
                } else {
                    Value::String(expanded)
                };
            }
            Err(message) => problems.push(ConfigProblem { path, message }),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{k:?}"));
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(v, child, env, problems);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, env, problems),
        _ => {}
    }
}

fn is_single_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

/// Expand one string.
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated '${{' in {s:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in ${{{expr}}}"));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-}} to allow it to be empty)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "PORT" => Some("9090".into()),
            "EMPTY" => Some(String::new()),
            "YAMLY" => Some("{a: 1}".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_forms() {
        assert_eq!(expand("${KEY}", &env).unwrap(), "sk-123");
        assert_eq!(expand("a-${KEY}-b", &env).unwrap(), "a-sk-123-b");
        assert_eq!(expand("${NOPE:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5", &env).unwrap(), "cost $5");
        assert!(expand("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand("${KEY", &env).is_err());
    }

    #[test]
    fn typed_scalars_and_paths() {
        let mut v: Value =
            serde_yaml_ng::from_str("a:\n  port: ${PORT}\n  s: ${YAMLY}\n  l: [ok, '${NOPE}']\n")
                .unwrap();
        let problems = substitute(&mut v, &env);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "a.l[1]");
        assert_eq!(v["a"]["port"].as_u64(), Some(9090));
        assert_eq!(v["a"]["s"].as_str(), Some("{a: 1}"));
    }
}
