//! What a request cost: its real usage, split by how providers bill it, times the
//! deployment's price (`config::schema::Price`). Pure; the callers decide where the figure
//! goes (response header, access log, batch output lines, metric).
//!
//! The usage comes in any shape the gateway answers with, every provider's translated
//! onto one of them:
//! - OpenAI chat (`prompt_tokens` counts cached and cache-written tokens,
//!   `completion_tokens` counts reasoning tokens; DeepSeek's `prompt_cache_hit_tokens`);
//! - the Responses API (`input_tokens` / `output_tokens` with their `_details`);
//! - Anthropic Messages (`input_tokens` counts neither cache reads nor cache writes).

use crate::config::schema::EffectivePrice;
use serde_json::Value;

/// A request's tokens by how they are billed; each token counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billed {
    /// Prompt tokens neither read from nor written to the provider's cache.
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    /// Completion tokens other than reasoning.
    pub output: u64,
    pub reasoning: u64,
}

impl Billed {
    /// Split a `usage` object; `None` when it is not one.
    pub fn from_usage(u: &Value) -> Option<Billed> {
        let o = u.as_object()?;
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let at = |path: &[&str]| {
            let mut v = Some(u);
            for k in path {
                v = v.and_then(|x| x.get(*k));
            }
            n(v)
        };
        let (prompt, cached, write, completion, reasoning) = if o.contains_key("prompt_tokens") {
            let cached = at(&["prompt_tokens_details", "cached_tokens"])
                .max(at(&["prompt_cache_hit_tokens"]));
            let write = at(&["prompt_tokens_details", "cache_write_tokens"])
                .max(at(&["cache_write_tokens"]))
                .max(at(&["cache_creation_input_tokens"]));
            (
                at(&["prompt_tokens"]),
                cached,
                write,
                at(&["completion_tokens"]),
                at(&["completion_tokens_details", "reasoning_tokens"]),
            )
        } else if o.contains_key("input_tokens")
            && (o.contains_key("cache_read_input_tokens")
                || o.contains_key("cache_creation_input_tokens")
                || !o.contains_key("total_tokens"))
        {
            // Anthropic: the prompt is its three parts.
            let cached = at(&["cache_read_input_tokens"]);
            let write = at(&["cache_creation_input_tokens"]);
            (
                at(&["input_tokens"]) + cached + write,
                cached,
                write,
                at(&["output_tokens"]),
                0,
            )
        } else if o.contains_key("input_tokens") {
            (
                at(&["input_tokens"]),
                at(&["input_tokens_details", "cached_tokens"]),
                at(&["input_tokens_details", "cache_write_tokens"]),
                at(&["output_tokens"]),
                at(&["output_tokens_details", "reasoning_tokens"]),
            )
        } else {
            return None;
        };
        let cached = cached.min(prompt);
        let write = write.min(prompt - cached);
        let reasoning = reasoning.min(completion);
        Some(Billed {
            input: prompt - cached - write,
            cached_input: cached,
            cache_write: write,
            output: completion - reasoning,
            reasoning,
        })
    }

    /// Its cost in USD at `price`; a batch request gets the price's batch discount.
    pub fn cost_usd(&self, price: &EffectivePrice, batch: bool) -> f64 {
        let per_million = self.input as f64 * price.input
            + self.cached_input as f64 * price.cached_input
            + self.cache_write as f64 * price.cache_write
            + self.output as f64 * price.output
            + self.reasoning as f64 * price.reasoning;
        let discount = if batch { price.batch_discount } else { 0.0 };
        per_million / 1e6 * (1.0 - discount)
    }
}

/// A USD amount as the header and logs show it: up to 10 decimals, no trailing zeros.
pub fn usd(v: f64) -> String {
    let s = format!("{v:.10}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn billed(u: Value) -> Billed {
        Billed::from_usage(&u).expect("a usage object")
    }

    #[test]
    fn every_usage_shape_is_split_once() {
        // OpenAI chat (openai-wire.md): cached and reasoning tokens are inside the totals.
        let chat = json!({"prompt_tokens": 1500, "completion_tokens": 500, "total_tokens": 2000,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 300}});
        let want = Billed {
            input: 476,
            cached_input: 1024,
            cache_write: 0,
            output: 200,
            reasoning: 300,
        };
        assert_eq!(billed(chat), want);
        // The same request in the Responses API's shape.
        let responses = json!({"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1024},
            "output_tokens": 500, "output_tokens_details": {"reasoning_tokens": 300}, "total_tokens": 2000});
        assert_eq!(billed(responses), want);
        // Anthropic: input_tokens excludes cache reads and writes (the APISIX T8 figures).
        let anthropic = json!({"input_tokens": 50, "cache_read_input_tokens": 200,
            "cache_creation_input_tokens": 100, "output_tokens": 30});
        assert_eq!(
            billed(anthropic),
            Billed {
                input: 50,
                cached_input: 200,
                cache_write: 100,
                output: 30,
                reasoning: 0
            }
        );
        // Bedrock and Gemini arrive translated to chat; Bedrock's cache writes at top level.
        let bedrock = json!({"prompt_tokens": 412, "completion_tokens": 38, "total_tokens": 450,
            "prompt_tokens_details": {"cached_tokens": 12}, "cache_creation_input_tokens": 100});
        assert_eq!(
            billed(bedrock),
            Billed {
                input: 300,
                cached_input: 12,
                cache_write: 100,
                output: 38,
                reasoning: 0
            }
        );
        // DeepSeek's own cache field.
        let deepseek =
            json!({"prompt_tokens": 100, "completion_tokens": 10, "prompt_cache_hit_tokens": 60});
        assert_eq!(billed(deepseek).cached_input, 60);
        // Embeddings: prompt only. Inconsistent details never make a count negative.
        assert_eq!(
            billed(json!({"prompt_tokens": 8, "total_tokens": 8})).input,
            8
        );
        let odd = json!({"prompt_tokens": 5, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 9}, "completion_tokens_details": {"reasoning_tokens": 4}});
        assert_eq!(
            billed(odd),
            Billed {
                input: 0,
                cached_input: 5,
                cache_write: 0,
                output: 0,
                reasoning: 1
            }
        );
        assert!(Billed::from_usage(&json!("x")).is_none());
        assert!(Billed::from_usage(&json!({"foo": 1})).is_none());
    }

    #[test]
    fn cost_prices_each_kind_and_discounts_batches() {
        let price = EffectivePrice {
            input: 2.5,
            output: 10.0,
            cached_input: 1.25,
            cache_write: 3.125,
            reasoning: 10.0,
            batch_discount: 0.5,
        };
        let b = Billed {
            input: 476,
            cached_input: 1024,
            cache_write: 100,
            output: 200,
            reasoning: 300,
        };
        // (476×2.5 + 1024×1.25 + 100×3.125 + 200×10 + 300×10) / 1e6
        let want = (1190.0 + 1280.0 + 312.5 + 2000.0 + 3000.0) / 1e6;
        assert!((b.cost_usd(&price, false) - want).abs() < 1e-12);
        assert!((b.cost_usd(&price, true) - want / 2.0).abs() < 1e-12);
        assert_eq!(Billed::default().cost_usd(&price, false), 0.0);
        assert_eq!(usd(0.0077825), "0.0077825");
        assert_eq!(usd(0.0), "0");
        assert_eq!(usd(1.5), "1.5");
    }
}
