//! The OpenTelemetry GenAI semantic conventions' request and response attributes
//! (`gen_ai.request.*`, `gen_ai.response.*`, `gen_ai.usage.*`), as an inference span and
//! the request's own span carry them. We follow the GenAI conventions of semantic
//! conventions 1.40 (status "development"; they have since moved to their own
//! repository): `gen_ai.provider.name` (not the older `gen_ai.system`), the `cache_read` /
//! `cache_creation` input token names, `gen_ai.usage.reasoning.output_tokens`,
//! `gen_ai.request.stream` and `gen_ai.response.time_to_first_chunk`.
//!
//! Every value here is a number, a flag, a finish reason or an id the provider gave the
//! answer: never content, never a key. Strings a client or an upstream chose are bounded
//! ([`MAX_STOPS`], [`MAX_REASONS`], and the span builder's attribute cap).

use opentelemetry::{Array, KeyValue, StringValue, Value};

/// Most stop sequences recorded (each cut to 64 bytes).
pub const MAX_STOPS: usize = 4;
/// Most distinct finish reasons recorded.
pub const MAX_REASONS: usize = 8;
/// Longest stop sequence, finish reason or response id recorded.
const MAX_SHORT: usize = 64;

/// The request's sampling parameters, read from its body when its trace is sampled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestParams {
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// Completions asked for (`n`), when not 1.
    pub choice_count: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop_sequences: Vec<String>,
}

/// What the answer said about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseInfo {
    pub id: Option<String>,
    pub finish_reasons: Vec<String>,
    pub reasoning_tokens: Option<u64>,
    /// Seconds from the attempt's start to the first chunk of answer text (streams).
    pub time_to_first_chunk: Option<f64>,
}

/// `s` cut to `max` bytes at a character boundary.
fn short(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl RequestParams {
    /// A stop sequence (at most [`MAX_STOPS`]).
    pub fn add_stop(&mut self, s: &str) {
        if self.stop_sequences.len() < MAX_STOPS {
            self.stop_sequences.push(short(s, MAX_SHORT));
        }
    }

    /// Their attributes.
    pub fn attributes(&self, out: &mut Vec<KeyValue>) {
        out.push(KeyValue::new("gen_ai.request.stream", self.stream));
        let int = |out: &mut Vec<KeyValue>, k: &'static str, v: Option<u64>| {
            if let Some(v) = v {
                out.push(KeyValue::new(k, i64::try_from(v).unwrap_or(i64::MAX)));
            }
        };
        int(out, "gen_ai.request.max_tokens", self.max_tokens);
        int(out, "gen_ai.request.choice.count", self.choice_count);
        for (k, v) in [
            ("gen_ai.request.temperature", self.temperature),
            ("gen_ai.request.top_p", self.top_p),
            ("gen_ai.request.top_k", self.top_k),
            ("gen_ai.request.frequency_penalty", self.frequency_penalty),
            ("gen_ai.request.presence_penalty", self.presence_penalty),
        ] {
            if let Some(v) = v {
                out.push(KeyValue::new(k, v));
            }
        }
        if let Some(s) = self.seed {
            out.push(KeyValue::new("gen_ai.request.seed", s));
        }
        if !self.stop_sequences.is_empty() {
            out.push(KeyValue::new(
                "gen_ai.request.stop_sequences",
                strings(&self.stop_sequences),
            ));
        }
    }
}

fn strings(list: &[String]) -> Value {
    Value::Array(Array::String(
        list.iter().map(|s| StringValue::from(s.clone())).collect(),
    ))
}

impl ResponseInfo {
    /// The answer's id (the first one seen).
    pub fn note_id(&mut self, id: &str) {
        if self.id.is_none() && !id.is_empty() {
            self.id = Some(short(id, MAX_SHORT));
        }
    }

    /// A finish reason (each distinct one once, at most [`MAX_REASONS`]).
    pub fn note_finish(&mut self, reason: &str) {
        if reason.is_empty()
            || self.finish_reasons.len() >= MAX_REASONS
            || self.finish_reasons.iter().any(|r| r == reason)
        {
            return;
        }
        self.finish_reasons.push(short(reason, MAX_SHORT));
    }

    /// Their attributes.
    pub fn attributes(&self, out: &mut Vec<KeyValue>) {
        if let Some(id) = &self.id {
            out.push(KeyValue::new("gen_ai.response.id", id.clone()));
        }
        if !self.finish_reasons.is_empty() {
            out.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                strings(&self.finish_reasons),
            ));
        }
        if let Some(t) = self.time_to_first_chunk {
            out.push(KeyValue::new("gen_ai.response.time_to_first_chunk", t));
        }
        if let Some(r) = self.reasoning_tokens {
            let r = i64::try_from(r).unwrap_or(i64::MAX);
            out.push(KeyValue::new("gen_ai.usage.reasoning.output_tokens", r));
        }
    }
}

/// Token usage attributes: input and output, and the cache's reads and writes when billed.
pub fn usage_attributes(
    usage: Option<(u64, u64)>,
    cache: Option<(u64, u64)>,
    out: &mut Vec<KeyValue>,
) {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if let Some((input, output)) = usage {
        out.push(KeyValue::new("gen_ai.usage.input_tokens", n(input)));
        out.push(KeyValue::new("gen_ai.usage.output_tokens", n(output)));
    }
    if let Some((read, write)) = cache {
        out.push(KeyValue::new(
            "gen_ai.usage.cache_read.input_tokens",
            n(read),
        ));
        out.push(KeyValue::new(
            "gen_ai.usage.cache_creation.input_tokens",
            n(write),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_deduplicated() {
        let mut p = RequestParams::default();
        for _ in 0..10 {
            p.add_stop(&"x".repeat(500));
        }
        assert_eq!(p.stop_sequences.len(), MAX_STOPS);
        assert_eq!(p.stop_sequences[0].len(), MAX_SHORT);
        let mut r = ResponseInfo::default();
        for reason in ["stop", "stop", "length", ""] {
            r.note_finish(reason);
        }
        assert_eq!(r.finish_reasons, ["stop", "length"]);
        r.note_id("chatcmpl-1");
        r.note_id("chatcmpl-2");
        assert_eq!(r.id.as_deref(), Some("chatcmpl-1"));
        let mut attrs = Vec::new();
        r.attributes(&mut attrs);
        p.attributes(&mut attrs);
        let keys: Vec<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"gen_ai.response.finish_reasons"));
        assert!(keys.contains(&"gen_ai.request.stop_sequences"));
        assert!(
            !keys.contains(&"gen_ai.request.max_tokens"),
            "unset: absent"
        );
    }
}
