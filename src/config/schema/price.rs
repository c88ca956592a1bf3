//! Prices: what a deployment's tokens cost, in USD per million tokens, as the operator
//! states them (no bundled price list that would silently go stale). A model's `price` is
//! the default of its deployments; a deployment's `price` overrides it field by field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// USD per million tokens of each kind, and the batch discount.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    #[serde(default)]
    pub input: Option<f64>,
    /// Completion tokens.
    #[serde(default)]
    pub output: Option<f64>,
    /// Prompt tokens read from the provider's cache (default: `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's cache (default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Reasoning tokens (default: `output`, as providers bill them).
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// The share taken off batch requests: 0.5 = half price (default: none).
    #[serde(default)]
    pub batch_discount: Option<f64>,
}

/// A deployment's effective price: every kind resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectivePrice {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
    pub cache_write: f64,
    pub reasoning: f64,
    pub batch_discount: f64,
}

impl Price {
    /// `over` field by field on top of `self`.
    pub fn overridden_by(&self, over: &Price) -> Price {
        Price {
            input: over.input.or(self.input),
            output: over.output.or(self.output),
            cached_input: over.cached_input.or(self.cached_input),
            cache_write: over.cache_write.or(self.cache_write),
            reasoning: over.reasoning.or(self.reasoning),
            batch_discount: over.batch_discount.or(self.batch_discount),
        }
    }

    /// The price of a deployment of a model: the deployment's fields over the model's.
    pub fn of(model: Option<&Price>, deployment: Option<&Price>) -> Option<Price> {
        match (model, deployment) {
            (None, None) => None,
            (Some(m), None) => Some(m.clone()),
            (None, Some(d)) => Some(d.clone()),
            (Some(m), Some(d)) => Some(m.overridden_by(d)),
        }
    }

    /// Every kind resolved, or `None` without both `input` and `output` (a spend limit
    /// cannot be computed without them).
    pub fn effective(&self) -> Option<EffectivePrice> {
        let (input, output) = (self.input?, self.output?);
        Some(EffectivePrice {
            input,
            output,
            cached_input: self.cached_input.unwrap_or(input),
            cache_write: self.cache_write.unwrap_or(input),
            reasoning: self.reasoning.unwrap_or(output),
            batch_discount: self.batch_discount.unwrap_or(0.0),
        })
    }

    /// The fields and their values, in display order.
    pub fn fields(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("reasoning", self.reasoning),
            ("batch_discount", self.batch_discount),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_overrides_its_model_field_by_field_and_defaults_follow() {
        let model = Price {
            input: Some(2.5),
            output: Some(10.0),
            batch_discount: Some(0.5),
            ..Price::default()
        };
        let dep = Price {
            output: Some(8.0),
            cached_input: Some(1.25),
            ..Price::default()
        };
        let p = Price::of(Some(&model), Some(&dep)).unwrap();
        let e = p.effective().unwrap();
        assert_eq!(
            e,
            EffectivePrice {
                input: 2.5,
                output: 8.0,
                cached_input: 1.25,
                cache_write: 2.5,
                reasoning: 8.0,
                batch_discount: 0.5,
            }
        );
        assert_eq!(Price::of(None, None), None);
        // Without input or output there is no effective price.
        assert!(dep.effective().is_none());
    }
}
