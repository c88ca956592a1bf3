//! Lenient readers for fields of upstream JSON (`#[serde(deserialize_with = …)]`): a value
//! of the expected type is read, a value of any other type reads as absent (it is consumed
//! and dropped, never an error). Providers differ in what they send where, and one odd
//! field must not cost a whole answer or stream event. Reading goes straight from the
//! bytes: no `serde_json::Value` is built on the way.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// What a lenient field keeps of a JSON value.
trait Keep: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
}

impl Keep for String {
    fn from_str(s: &str) -> Option<String> {
        Some(s.to_owned())
    }
}

impl Keep for u64 {
    fn from_u64(n: u64) -> Option<u64> {
        Some(n)
    }
}

struct Lenient<T>(PhantomData<T>);

impl<'de, T: Keep> Visitor<'de> for Lenient<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<T>, E> {
        Ok(T::from_str(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<T>, E> {
        Ok(T::from_u64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Option<T>, E> {
        Ok(u64::try_from(v).ok().and_then(T::from_u64))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// A string, else absent.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Lenient::<String>(PhantomData))
}

/// A string, else empty.
pub fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(string(d)?.unwrap_or_default())
}

/// An unsigned integer (a token count, an index), else absent.
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(Lenient::<u64>(PhantomData))
}

/// An unsigned integer, else 0.
pub fn count_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(count(d)?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "super::count")]
        n: Option<u64>,
    }

    #[test]
    fn other_types_read_as_absent() {
        let read = |j: &str| {
            let t: T = serde_json::from_str(j).unwrap();
            (t.s, t.n)
        };
        assert_eq!(
            read(r#"{"s":"a\"b","n":7}"#),
            (Some("a\"b".into()), Some(7))
        );
        for odd in [
            r#"{"s":1,"n":-1}"#,
            r#"{"s":[1,{"x":[]}],"n":1.5}"#,
            r#"{"s":{"a":"b"},"n":"7"}"#,
            r#"{"s":null,"n":true}"#,
            "{}",
        ] {
            assert_eq!(read(odd), (None, None), "{odd}");
        }
    }
}
