//! A whole answer's `usage` object read straight from its bytes into [`Usage`], with no
//! `serde_json::Value` built on the way (every answer is read for its usage: this is on
//! the hot path). It reads as [`Usage::from_openai`] reads the same object as a tree, and
//! says whether the object holds nothing but chat's three counts: then its numeric fields
//! are those three, and whoever needs them (`cost_expr`) can derive them from the usage.

use super::Usage;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// What a `usage` object says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRead {
    pub usage: Usage,
    /// Its `completion_tokens` as sent (not derived from other counts).
    pub completion_tokens: Option<u64>,
    /// Exactly `prompt_tokens`, `completion_tokens` and `total_tokens`, each once and an
    /// unsigned integer: the object's numeric fields are the usage's own.
    pub plain: bool,
}

/// The usage of `raw`, a JSON object; `None` when it is none (the caller then reads it as
/// a tree, which takes what this reading does not: duplicate keys, say).
pub fn read(raw: &str) -> Option<UsageRead> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let counts = de.deserialize_map(CountsVisitor).ok()?;
    de.end().ok()?;
    let n = |i: usize| counts.values[i].flatten();
    let prompt = n(PROMPT).or(n(INPUT)).unwrap_or(0);
    let completion = n(COMPLETION)
        .or(n(OUTPUT))
        .unwrap_or_else(|| n(TOTAL).unwrap_or(prompt).saturating_sub(prompt));
    let chat_trio = [PROMPT, COMPLETION, TOTAL];
    let plain = !counts.other
        && (0..NAMES.len()).all(|i| {
            let is_trio = chat_trio.contains(&i);
            counts.seen[i] == u8::from(is_trio) && (!is_trio || n(i).is_some())
        });
    Some(UsageRead {
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: n(TOTAL),
        },
        completion_tokens: n(COMPLETION),
        plain,
    })
}

const PROMPT: usize = 0;
const COMPLETION: usize = 1;
const TOTAL: usize = 2;
const INPUT: usize = 3;
const OUTPUT: usize = 4;
const NAMES: [&str; 5] = [
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
];

struct Counts {
    /// Per name: `Some(value)` once seen (the last one counts, as in a tree); the value is
    /// `None` when it is no unsigned integer.
    values: [Option<Option<u64>>; NAMES.len()],
    /// Times each name was seen.
    seen: [u8; NAMES.len()],
    /// Other names were there.
    other: bool,
}

struct CountsVisitor;

impl<'de> Visitor<'de> for CountsVisitor {
    type Value = Counts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counts, A::Error> {
        let mut c = Counts {
            values: [None; NAMES.len()],
            seen: [0; NAMES.len()],
            other: false,
        };
        while let Some(Name(key)) = map.next_key::<Name>()? {
            match key {
                Some(i) => {
                    c.values[i] = Some(map.next_value::<Count>()?.0);
                    c.seen[i] = c.seen[i].saturating_add(1);
                }
                None => {
                    c.other = true;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(c)
    }
}

/// A key: the index of one of [`NAMES`], or none (compared where it lies: no copy).
struct Name(Option<usize>);

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Name, E> {
                Ok(Name(NAMES.iter().position(|n| *n == v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An unsigned integer, else absent (`Value::as_u64`'s reading).
struct Count(Option<u64>);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        Ok(Count(super::lenient::count(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree's reading of the same object.
    fn tree(raw: &str) -> Option<Usage> {
        Usage::from_openai(&serde_json::from_str(raw).ok()?)
    }

    #[test]
    fn reads_as_the_tree_does() {
        for raw in [
            r#"{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23}"#,
            r#"{"prompt_tokens":9,"total_tokens":23}"#,
            r#"{"input_tokens":5,"output_tokens":2,"total_tokens":7,"input_tokens_details":{"cached_tokens":1}}"#,
            r#"{"prompt_tokens":8,"total_tokens":8}"#,
            r#"{"prompt_tokens":-1,"completion_tokens":2.5,"total_tokens":"3"}"#,
            r#"{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"completion_tokens_details":{"reasoning_tokens":0}}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":1}"#,
            r#"{"prompt_tokens":18446744073709551616,"completion_tokens":1}"#,
            r#"{}"#,
            r#"{"prompt_tokens":null,"completion_tokens":[1],"total_tokens":{"a":1}}"#,
        ] {
            let r = read(raw).unwrap();
            assert_eq!(Some(r.usage), tree(raw), "{raw}");
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert_eq!(
                r.completion_tokens,
                v["completion_tokens"].as_u64(),
                "{raw}"
            );
        }
    }

    #[test]
    fn plain_only_for_the_chat_trio() {
        let plain = |raw: &str| read(raw).unwrap().plain;
        assert!(plain(
            r#"{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23}"#
        ));
        assert!(plain(
            r#"{ "total_tokens":23, "prompt_tokens":9, "completion_tokens":14 }"#
        ));
        for raw in [
            r#"{"prompt_tokens":9,"total_tokens":23}"#,
            r#"{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23,"cost":0.1}"#,
            r#"{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23,"x":{}}"#,
            r#"{"prompt_tokens":9,"completion_tokens":1.5,"total_tokens":23}"#,
            r#"{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23,"input_tokens":1}"#,
            r#"{"prompt_tokens":9,"prompt_tokens":9,"completion_tokens":14,"total_tokens":23}"#,
        ] {
            assert!(!plain(raw), "{raw}");
        }
    }

    #[test]
    fn what_is_no_object_is_left_to_the_tree() {
        // A number past f64 is no JSON serde_json takes: neither reading gives a usage
        // (the request is then charged its reservation).
        let huge = r#"{"prompt_tokens":1,"completion_tokens":1e400}"#;
        assert_eq!((read(huge), tree(huge)), (None, None));
        for raw in ["[]", "3", "{\"a\":", "{} x"] {
            assert_eq!(read(raw), None, "{raw}");
        }
    }
}
