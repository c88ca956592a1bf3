//! Small helpers to read APISIX's config and write the gateway's, both as YAML values.

use serde_yaml_ng::{Mapping, Value};

/// Build a mapping from pairs, skipping `Null` values.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(Value::String(k.to_string()), v);
        }
    }
    Value::Mapping(m)
}

/// `true`, or nothing (a field [`map`] leaves out).
pub fn true_or_none(on: bool) -> Value {
    if on {
        Value::Bool(true)
    } else {
        Value::Null
    }
}

pub fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

pub fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(k))
}

pub fn text(v: &Value, k: &str) -> Option<String> {
    match get(v, k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn number(v: &Value, k: &str) -> Option<f64> {
    match get(v, k)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub fn flag(v: &Value, k: &str) -> Option<bool> {
    get(v, k).and_then(Value::as_bool)
}

/// Seconds as a gateway duration (`60s`, `500ms`).
pub fn duration(secs: f64) -> Value {
    if secs.fract() == 0.0 {
        s(format!("{}s", secs as u64))
    } else {
        s(format!("{}ms", (secs * 1000.0).round() as u64))
    }
}

/// Numbers as YAML numbers (integers stay integers).
pub fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        Value::Number((x as i64).into())
    } else {
        Value::Number(x.into())
    }
}
