//! Duplicate object keys in client JSON are refused. `serde_json` keeps the last of two
//! equal keys, but other parsers keep the first: `{"model":"dear","model":"cheap"}` would
//! be limited and priced as one model by the gateway and served as the other upstream.
//! One pass over the body, at every depth, allocating only for an object's keys (borrowed
//! from the body unless escaped). A leaf module.

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The first duplicate key found, if any, or the parser's error.
pub fn check(body: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<NoDuplicates>(body) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The length of the one JSON value at the start of `bytes` (leading whitespace
/// included), its objects checked for duplicate keys at every depth. `None`: no such
/// value ([`check`] of the whole body says why).
pub fn value_len(bytes: &[u8]) -> Option<usize> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<NoDuplicates>();
    match values.next() {
        Some(Ok(_)) => Some(values.byte_offset()),
        _ => None,
    }
}

/// The JSON string at the start of `bytes` (leading whitespace included): its text,
/// borrowed unless it holds escapes, and its length.
pub fn string_at(bytes: &[u8]) -> Option<(Cow<'_, str>, usize)> {
    let mut strings = serde_json::Deserializer::from_slice(bytes).into_iter::<Key<'_>>();
    match strings.next() {
        Some(Ok(k)) => Some((k.0, strings.byte_offset())),
        _ => None,
    }
}

/// A JSON value of any shape whose objects have unique keys.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checker)
    }
}

struct Checker;

impl<'de> Visitor<'de> for Checker {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E: Error>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E: Error>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E: Error>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E: Error>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E: Error>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_none<E: Error>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        // An object's first keys are compared in place (no allocation for the objects
        // requests are made of); past `INLINE` keys, a set.
        const INLINE: usize = 8;
        let mut inline: [Cow<'de, str>; INLINE] = Default::default();
        let mut count = 0;
        let mut set: Option<std::collections::HashSet<Cow<'de, str>>> = None;
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let k = k.0;
            let dup = match &mut set {
                Some(s) => !s.insert(k.clone()),
                None if count < INLINE => {
                    let d = inline[..count].contains(&k);
                    inline[count] = k.clone();
                    count += 1;
                    d
                }
                None => {
                    let mut s: std::collections::HashSet<_> = inline.iter().cloned().collect();
                    let d = !s.insert(k.clone());
                    set = Some(s);
                    d
                }
            };
            if dup {
                return Err(A::Error::custom(format_args!(
                    "duplicate key `{}`",
                    Short(&k)
                )));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// A key, borrowed from the body unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A key as an error message shows it (at most 64 characters).
struct Short<'a>(&'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(64) {
            Some((at, _)) => write!(f, "{}…", &self.0[..at]),
            None => f.write_str(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn finds_duplicates_at_any_depth() {
        assert!(check(br#"{"model":"a","messages":[{"role":"user"}]}"#).is_ok());
        let e = check(br#"{"model":"dear","model":"cheap"}"#).unwrap_err();
        assert!(e.contains("duplicate key `model`"), "{e}");
        assert!(check(br#"{"m":[{"role":"user","role":"system"}]}"#).is_err());
        // Escaped spellings of one key are the same key.
        assert!(check(br#"{"model":"a","mod\u0065l":"b"}"#).is_err());
        // Many keys (the set path).
        let many: String = (0..40).map(|i| format!("\"k{i}\":1,")).collect();
        assert!(check(format!("{{{many}\"z\":1}}").as_bytes()).is_ok());
        assert!(check(format!("{{{many}\"k7\":1}}").as_bytes()).is_err());
        assert!(check(b"[1, 2.5, null, true, \"x\"]").is_ok());
    }
}
