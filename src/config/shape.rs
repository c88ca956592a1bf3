//! The file's shape, with every problem at once: deserializing stops at the first unknown
//! field or wrongly typed value, so after each one the offending entry is set aside (in a
//! copy of the tree) and deserializing is tried again — up to [`MAX_PROBLEMS`] times — and
//! one `check` names every such problem that does not hide another. A missing required
//! field ends the search (nothing can stand in for it). Messages are in an operator's
//! words: "a whole number", not "u32".

use super::{Config, ConfigProblem};
use serde_path_to_error::Segment;
use serde_yaml_ng::Value;

/// The most shape problems reported for one file.
pub const MAX_PROBLEMS: usize = 64;

/// Every shape problem found, and the config the file would be without the entries they
/// name (`None` when a required field is missing), which validation can still check.
pub struct Problems {
    pub problems: Vec<ConfigProblem>,
    pub rest: Option<Box<Config>>,
}

/// The config, or every shape problem found.
pub fn deserialize(value: Value) -> Result<Config, Problems> {
    let mut problems: Vec<ConfigProblem> = Vec::new();
    let mut tree = value;
    while problems.len() < MAX_PROBLEMS {
        let e = match serde_path_to_error::deserialize::<_, Config>(tree.clone()) {
            Ok(c) if problems.is_empty() => return Ok(c),
            Ok(c) => {
                return Err(Problems {
                    problems,
                    rest: Some(Box::new(c)),
                })
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let path = e.path().to_string();
        let message = plain(&e.into_inner().to_string());
        let missing = message.starts_with("missing field");
        let repeated = problems.last().is_some_and(|p| p.path == path);
        if !repeated {
            problems.push(ConfigProblem {
                path: if path == "." { String::new() } else { path },
                message,
            });
        }
        if missing || repeated || !set_aside(&mut tree, &segments) {
            break;
        }
    }
    Err(Problems {
        problems,
        rest: None,
    })
}

/// Remove the entry at `path` from its mapping or list: whether there was one.
fn set_aside(tree: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for s in parents {
        node = match (s, node) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(l)) => match l.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Enum { .. }, v) => v,
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Sequence(l)) if *index < l.len() => {
            l.remove(*index);
            true
        }
        _ => false,
    }
}

/// serde's words for types, in an operator's.
fn plain(message: &str) -> String {
    let mut out = message.to_string();
    for (from, to) in [
        ("expected u8", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        (
            "expected a duration",
            "expected a duration such as `5s` or `250ms`",
        ),
        ("expected a sequence", "expected a list"),
        ("invalid type: sequence", "invalid type: a list"),
        ("invalid type: map", "invalid type: a mapping"),
    ] {
        out = out.replace(from, to);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        match deserialize(v) {
            Ok(_) => Vec::new(),
            Err(p) => p.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_shape_problem_in_one_pass() {
        let p = problems(
            "server: {lisen: x, threads: two}\nupstream: {pool_size: -1}\nproviders: [{name: a, kind: mock, colour: red}]\n",
        );
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            p[0].starts_with("server.lisen: unknown field `lisen`"),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with(
                "server.threads: invalid type: string \"two\", expected a whole number"
            )),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("upstream.pool_size:")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("providers[0].colour: unknown field")),
            "{p:?}"
        );
        assert!(problems("providers: [{name: a, kind: mock}]\n").is_empty());
    }

    #[test]
    fn a_missing_required_field_ends_the_search() {
        let p = problems("providers: [{kind: mock}]\nserver: {lisen: x}\n");
        assert!(!p.is_empty());
        assert!(
            p.iter().filter(|m| m.contains("missing field")).count() <= 1,
            "{p:?}"
        );
    }
}
