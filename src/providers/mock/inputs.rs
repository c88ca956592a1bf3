//! The mock's reading of `prompt` / `input` values and its deterministic embeddings.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A `prompt`/`input` value as a list of strings (token arrays are rendered as text).
pub(super) fn inputs_of(raw: Option<&serde_json::value::RawValue>) -> Vec<String> {
    let v: Value = raw
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null);
    match v {
        Value::String(s) => vec![s],
        Value::Array(items) if items.iter().all(|i| i.is_number()) => {
            vec![Value::Array(items).to_string()]
        }
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        Value::Null => vec![String::new()],
        other => vec![other.to_string()],
    }
}

/// A deterministic unit vector for `input`.
pub(super) fn embed(input: &str, dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    let mut block = 0u32;
    while out.len() < dims {
        let mut h = Sha256::new();
        h.update(block.to_le_bytes());
        h.update(input.as_bytes());
        for pair in h.finalize().chunks(2) {
            if out.len() == dims {
                break;
            }
            let x = u16::from_le_bytes([pair[0], pair[1]]);
            out.push(x as f32 / 32767.5 - 1.0);
        }
        block += 1;
    }
    let norm = out
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    out.iter_mut().for_each(|x| *x /= norm);
    out
}
