//! The top-level fields of a JSON object body, found in one pass: the object's frame
//! (braces, colons, commas) is read here, each key and value by `serde_json`, which
//! checks every value's objects for duplicate keys as it goes ([`crate::json_keys`]).
//! A field is its name and the byte range of its raw value in the body, so no value is
//! copied or built as a tree. Names are kept in one string and the fields sorted by
//! name: three allocations per body, whatever its size, and lookups by binary search
//! (a hostile body's many fields cost log n each).
//!
//! The common pieces (plain strings, integers, `true`, `false`, `null`) are read here
//! directly; anything else (escapes, fractions, arrays, objects) by `serde_json`. A test
//! checks both readings agree on every body of a large generated set.
//!
//! A body this pass refuses is read again the slow way (the duplicate check, then
//! `serde_json`'s own reading) only to word the error as before.

use crate::json_keys;
use std::ops::Range;

/// The fields of one body, sorted by name (names are unique).
#[derive(Debug, Default)]
pub struct Fields {
    /// Every name, decoded (escapes resolved), back to back.
    names: String,
    /// (name's range in `names`, raw value's range in the body).
    entries: Vec<(Range<usize>, Range<usize>)>,
}

/// Why a body has no fields: an error `serde_json` worded, or a duplicate key.
pub struct Refused(pub String);

impl Fields {
    /// The fields of `body`, a JSON object whose objects, at every depth, have unique
    /// keys.
    pub fn scan(body: &[u8]) -> Result<Fields, Refused> {
        scan_object(body).ok_or_else(|| Refused(slow_error(body)))
    }

    /// The raw value's range of field `name`.
    pub fn get(&self, name: &str) -> Option<Range<usize>> {
        let name_of = |n: &Range<usize>| &self.names[n.clone()];
        // A request's few fields: compared in turn (lengths first), cheaper than halving.
        if self.entries.len() <= 8 {
            return self
                .entries
                .iter()
                .find(|(n, _)| name_of(n) == name)
                .map(|(_, v)| v.clone());
        }
        let at = self
            .entries
            .binary_search_by(|(n, _)| name_of(n).cmp(name))
            .ok()?;
        Some(self.entries[at].1.clone())
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| &self.names[n.clone()])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// JSON's whitespace.
fn skip_ws(body: &[u8], mut at: usize) -> usize {
    while matches!(body.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The one-pass reading; `None` for any body it does not take.
fn scan_object(body: &[u8]) -> Option<Fields> {
    let mut fields = Fields::default();
    let mut at = skip_ws(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(body, at + 1);
    if body.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            if body.get(at) != Some(&b'"') {
                return None;
            }
            let start = fields.names.len();
            match plain_string(body, at) {
                Some((name, end)) => {
                    fields.names.push_str(name);
                    at = end;
                }
                None => {
                    let (name, len) = json_keys::string_at(&body[at..])?;
                    fields.names.push_str(&name);
                    at += len;
                }
            }
            at = skip_ws(body, at);
            if body.get(at) != Some(&b':') {
                return None;
            }
            at = skip_ws(body, at + 1);
            let value = at..match scalar_end(body, at) {
                Some(end) => end,
                None => at + json_keys::value_len(&body[at..])?,
            };
            at = skip_ws(body, value.end);
            fields
                .entries
                .push((start..fields.names.len(), value.clone()));
            match body.get(at) {
                Some(b',') => at = skip_ws(body, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_ws(body, at) != body.len() {
        return None;
    }
    let names = &fields.names;
    fields
        .entries
        .sort_unstable_by(|(a, _), (b, _)| names[a.clone()].cmp(&names[b.clone()]));
    // Equal names sort next to each other: a duplicate at the top level.
    if fields
        .entries
        .windows(2)
        .any(|w| names[w[0].0.clone()] == names[w[1].0.clone()])
    {
        return None;
    }
    Some(fields)
}

/// A string at `body[at]` without escapes: its text and the offset past its closing
/// quote. `None`: not one (escapes, control characters, bad UTF-8: `serde_json` decides).
fn plain_string(body: &[u8], at: usize) -> Option<(&str, usize)> {
    if body.get(at) != Some(&b'"') {
        return None;
    }
    let rest = &body[at + 1..];
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    let text = &rest[..end];
    if rest[end] != b'"' || text.iter().any(|&b| b < 0x20) {
        return None;
    }
    Some((std::str::from_utf8(text).ok()?, at + end + 2))
}

/// The end of a plain string, an integer of at most 18 digits, `true`, `false` or `null`
/// at `body[at]` (what follows is checked by the caller, as after any value). `None`:
/// another value, or none.
fn scalar_end(body: &[u8], at: usize) -> Option<usize> {
    let rest = &body[at..];
    match rest.first()? {
        b'"' => plain_string(body, at).map(|(_, end)| end),
        b't' if rest.starts_with(b"true") => Some(at + 4),
        b'f' if rest.starts_with(b"false") => Some(at + 5),
        b'n' if rest.starts_with(b"null") => Some(at + 4),
        b'-' | b'0'..=b'9' => {
            let sign = usize::from(rest[0] == b'-');
            let digits = rest[sign..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let next = rest.get(sign + digits);
            // No leading zero, no fraction or exponent (serde_json reads those).
            let plain = (1..=18).contains(&digits)
                && !(digits > 1 && rest[sign] == b'0')
                && !matches!(next, Some(b'.' | b'e' | b'E'));
            plain.then_some(at + sign + digits)
        }
        _ => None,
    }
}

/// How the slow reading words what is wrong with `body`: the duplicate key, or
/// `serde_json`'s error for a body that is no JSON object.
fn slow_error(body: &[u8]) -> String {
    if let Err(e) = json_keys::check(body) {
        return e;
    }
    match serde_json::from_slice::<std::collections::BTreeMap<&str, serde::de::IgnoredAny>>(body) {
        Err(e) => e.to_string(),
        // Refused by one reading, taken by the other: never a body to guess at.
        Ok(_) => "the body is not one JSON object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(body: &'a str, f: &Fields, name: &str) -> Option<&'a str> {
        f.get(name).map(|r| &body[r])
    }

    #[test]
    fn reads_each_field_as_its_raw_bytes() {
        let body = " {\"model\" : \"m\",\n\"n\":2 ,\"stream\":true,\"messages\":[{\"a\":1}], \"x\":null,\"f\":-1.5e3 } \r\n";
        let f = Fields::scan(body.as_bytes()).ok().unwrap();
        assert_eq!(raw(body, &f, "model"), Some("\"m\""));
        assert_eq!(raw(body, &f, "n"), Some("2"));
        assert_eq!(raw(body, &f, "stream"), Some("true"));
        assert_eq!(raw(body, &f, "messages"), Some("[{\"a\":1}]"));
        assert_eq!(raw(body, &f, "x"), Some("null"));
        assert_eq!(raw(body, &f, "f"), Some("-1.5e3"));
        assert_eq!(raw(body, &f, "nope"), None);
        assert_eq!(
            f.keys().collect::<Vec<_>>(),
            ["f", "messages", "model", "n", "stream", "x"]
        );
        let empty = Fields::scan(b" { } ").ok().unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn escaped_names_are_decoded() {
        let body = r#"{"we\u0069rd":1,"a\"b":2}"#;
        let f = Fields::scan(body.as_bytes()).ok().unwrap();
        assert_eq!(raw(body, &f, "weird"), Some("1"));
        assert_eq!(raw(body, &f, "a\"b"), Some("2"));
    }

    #[test]
    fn refuses_what_serde_json_refuses_with_its_words() {
        let refused = |b: &str| match Fields::scan(b.as_bytes()) {
            Ok(_) => panic!("took {b}"),
            Err(Refused(e)) => e,
        };
        assert!(refused(r#"{"model":"a","model":"b"}"#).contains("duplicate key `model`"));
        assert!(refused(r#"{"model":"a","mod\u0065l":"b"}"#).contains("duplicate key"));
        assert!(refused(r#"{"m":[{"role":"u","role":"s"}]}"#).contains("duplicate key `role`"));
        for bad in [
            "",
            "[1]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{\"a\":1x}",
            "{\"a\":tru}",
            "{a:1}",
            "{\"a\":1e400}",
            "{\"a\":\"\\q\"}",
            "{\"a\":[1,]}",
        ] {
            let e = refused(bad);
            assert!(!e.is_empty(), "{bad}");
        }
        // The words are serde_json's own for the whole body.
        assert!(
            refused("[1]").contains("invalid type: sequence"),
            "{}",
            refused("[1]")
        );
    }

    #[test]
    fn agrees_with_serde_json_on_many_bodies() {
        // Every body serde_json reads as an object of unique keys is taken, with the
        // same values; the others are refused.
        let frames = [
            "{",
            "}",
            "\"a\"",
            "\"b\"",
            ":",
            ",",
            "1",
            "[",
            "]",
            " ",
            "null",
            "{\"a\":1}",
            "\"",
        ];
        let values = [
            "0",
            "-0",
            "01",
            "-",
            "-01",
            "7",
            "-12",
            "1.5",
            "1e3",
            "1E+2",
            "2.",
            "123456789012345678",
            "1234567890123456789012",
            "1e400",
            "true",
            "tru",
            "truex",
            "false",
            "nul",
            "null",
            "\"\"",
            "\"x\"",
            "\"\\u0041\"",
            "\"\\q\"",
            "\"\u{1}\"",
            "\"é\"",
            "[]",
            "{}",
            "[1,]",
            "{\"a\":1,\"a\":2}",
            "-x",
            "1-",
            "0x1",
        ];
        let mut bodies = Vec::new();
        for a in frames {
            for b in frames {
                for c in frames {
                    for d in frames {
                        bodies.push(format!("{{{a}{b}{c}{d}}}"));
                    }
                }
            }
        }
        for v in values {
            for w in values {
                bodies.push(format!("{{\"k\":{v},\"\\u006b2\":{w}}}"));
                bodies.push(format!("{{\"k\":{v}{w}}}"));
            }
            bodies.push(format!("{{\"k\":{v}}}"));
            bodies.push(format!("{{\"k\" : {v} , \"j\":[{v}]}}"));
        }
        let mut n = 0u64;
        for body in &bodies {
            let slow = json_keys::check(body.as_bytes()).is_ok()
                && serde_json::from_slice::<
                    std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>,
                >(body.as_bytes())
                .is_ok();
            let fast = scan_object(body.as_bytes());
            assert_eq!(fast.is_some(), slow, "{body}");
            if let Some(f) = fast {
                let want: std::collections::BTreeMap<String, serde_json::Value> =
                    serde_json::from_str(body).unwrap();
                assert_eq!(f.len(), want.len(), "{body}");
                for (k, v) in want {
                    let got: serde_json::Value =
                        serde_json::from_str(raw(body, &f, &k).unwrap()).unwrap();
                    assert_eq!(got, v, "{body}");
                }
                n += 1;
            }
        }
        assert!(n >= 400, "{n}");
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // serde_json's recursion limit holds inside each value.
        let deep = format!("{{\"m\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let Err(Refused(e)) = Fields::scan(deep.as_bytes()) else {
            panic!("took 100,000 levels");
        };
        assert!(e.contains("recursion limit"), "{e}");
        let ok = format!("{{\"m\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(Fields::scan(ok.as_bytes()).is_ok());
    }

    #[test]
    fn many_fields_are_found_by_halving() {
        let body: String = format!(
            "{{{}}}",
            (0..40)
                .rev()
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let f = Fields::scan(body.as_bytes()).ok().unwrap();
        for i in 0..40 {
            assert_eq!(
                raw(&body, &f, &format!("k{i}")),
                Some(i.to_string().as_str())
            );
        }
        assert_eq!(raw(&body, &f, "k40"), None);
    }
}
