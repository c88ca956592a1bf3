//! The mock's reading of the prompt (chat messages' text, `prompt`, `input`) and its
//! deterministic embeddings.

use crate::canonical::{AiRequest, Endpoint};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a prompt looks like to the mock.
pub(super) struct Prompt {
    pub text: String,
    pub digest: [u8; 32],
}

impl Prompt {
    pub fn tokens(&self) -> u64 {
        estimate_tokens(&self.text)
    }
}

/// The gateway's rough token estimate: one token per four bytes, at least one.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

/// The prompt text: message contents (text parts) for chat, `prompt` for completions,
/// `input` for embeddings, joined by newlines.
pub(super) fn prompt_of(req: &AiRequest) -> Prompt {
    let text = match req.endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => {
            // One message's tree at a time: a large prompt is never held as one tree.
            let mut text = String::new();
            for (i, raw) in req.items("messages").unwrap_or_default().iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                let m: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                match &m["content"] {
                    Value::String(s) => text.push_str(s),
                    Value::Array(parts) => {
                        let texts = parts.iter().filter_map(|p| p["text"].as_str());
                        for (j, t) in texts.enumerate() {
                            if j > 0 {
                                text.push('\n');
                            }
                            text.push_str(t);
                        }
                    }
                    _ => {}
                }
            }
            text
        }
        Endpoint::Completions => inputs_of(req.field("prompt")).join("\n"),
        Endpoint::Embeddings => inputs_of(req.field("input")).join("\n"),
    };
    let digest = Sha256::digest(text.as_bytes()).into();
    Prompt { text, digest }
}

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
