//! The call core: one request through admission, deployment choice, the upstream call and
//! failover, over a plain context ([`CallCtx`]) that knows nothing of Pingora's session.
//! The proxy (`crate::proxy`) and the batch dispatcher (`crate::batch`) both call it.
//!
//! - the canonical request it works on is [`crate::canonical`];
//! - [`admit`]: admission of a request under every limit that applies (consumer, route,
//!   provider key), queueing and the batch priority class;
//! - [`state`]: what every call shares in a process (snapshot, pool, limiter, queues,
//!   cool-downs);
//! - [`upstream`]: deployment choice, cool-downs, the upstream attempt and the retry and
//!   failover classification;
//! - [`answer`]: what the upstream's answer becomes for the client (its API, its usage,
//!   the completion cap held).

pub mod admit;
pub mod answer;
pub mod cap;
mod failover;
pub mod fallback;
pub mod state;
mod traced;
pub mod upstream;
pub mod usage;

pub use failover::call;
pub use state::{CooldownReason, Cooldowns, GatewayState};

use crate::limits::admission::{Quota, Ticket};
use crate::runtime::Runtime;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::canonical::Usage;

/// What one call carries from phase to phase (no transport state: a batch request has the
/// same context as a client's).
pub struct CallCtx {
    pub request_id: String,
    pub started: Instant,
    pub runtime: Option<Arc<Runtime>>,
    pub consumer: Option<Arc<str>>,
    /// The public model name (only names from the config: a bounded label).
    pub model: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    /// The deployment of the last attempt (its id).
    pub deployment: Option<Arc<str>>,
    pub endpoint: &'static str,
    /// The API route's path template (`http.route`), when the request is on one.
    pub route: Option<&'static str>,
    pub stream: bool,
    /// Status sent to the client (499: client went away).
    pub status: u16,
    pub upstream_ttfb: Option<Duration>,
    pub usage: Option<Usage>,
    /// The answer's usage object's numeric fields (what a `cost_expr` may name), merged
    /// across a stream's events.
    pub usage_fields: Option<Arc<std::collections::BTreeMap<String, f64>>>,
    pub attempts: u32,
    /// The completion cap per choice a hard limit admitted the request with: sent
    /// upstream ([`cap`]).
    pub completion_cap: Option<u64>,
    /// The limit that refused the request and when it frees (ms), for the access log.
    pub limited: Option<(Arc<str>, u64)>,
    /// The prompt's estimate at admission (tokens).
    pub prompt_estimate: u64,
    /// Tokens of answer text a stream relayed (estimated from the text: see
    /// `proxy::relayed`), for an answer whose usage never came whole.
    pub relayed_tokens: u64,
    /// Relayed events that carried answer text.
    pub relayed_events: u64,
    /// `usage` was estimated from the relayed text: it is charged at least the
    /// reservation, as the upstream may have billed more than reached the client.
    pub usage_estimated: bool,
    pub error: Option<&'static str>,
    /// Limit tickets held until the request ends (slots, token reservations).
    pub tickets: Vec<Ticket>,
    /// Quotas seen at admission, for the rate-limit headers.
    pub quotas: Vec<Quota>,
    /// The provider's rate-limit headers, when its config passes them on.
    pub provider_headers: Vec<(String, String)>,
    /// The price of the deployment that answered (its last attempt), when configured.
    pub price: Option<crate::config::schema::EffectivePrice>,
    /// The answer's usage split by how it is billed.
    pub billed: Option<crate::cost::Billed>,
    /// A batch request (its price gets the batch discount).
    pub batch: bool,
    /// The model the provider says answered (traces' `gen_ai.response.model`), when the
    /// request is traced and the answer in the OpenAI dialect says it.
    pub response_model: Option<String>,
    /// How long it waited in a limit queue before it was admitted, if it did.
    pub queue_wait: Option<Duration>,
    /// Its trace, when `traces` is configured (boxed: most of it is unused otherwise).
    pub trace: Option<Box<crate::telemetry::spans::RequestTrace>>,
}

impl CallCtx {
    /// Take in a usage object's numeric fields (a stream's later events add to or replace
    /// earlier values; zeros never replace a value).
    pub fn note_usage_fields(&mut self, usage: &serde_json::Value) {
        let Some(o) = usage.as_object() else { return };
        if let Some(t) = self.trace.as_deref_mut().filter(|t| t.sampled) {
            let details = o
                .get("completion_tokens_details")
                .or(o.get("output_tokens_details"));
            if let Some(r) = details.and_then(|d| d["reasoning_tokens"].as_u64()) {
                t.response.reasoning_tokens = Some(r);
            }
        }
        let mut fields = self.usage_fields.as_deref().cloned().unwrap_or_default();
        for (k, v) in o {
            match v.as_f64() {
                Some(x) if x > 0.0 || !fields.contains_key(k) => {
                    fields.insert(k.clone(), x);
                }
                _ => {}
            }
        }
        // Billed (only when the deployment has a price: nothing else reads it) from every
        // field seen so far (an Anthropic stream gives its input and cache counts first
        // and its output last) and this object's details.
        if self.price.is_none() {
            self.usage_fields = Some(Arc::new(fields));
            return;
        }
        let mut merged: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(*v as u64)))
            .collect();
        for (k, v) in o.iter().filter(|(_, v)| v.is_object()) {
            merged.insert(k.clone(), v.clone());
        }
        if let Some(b) = crate::cost::Billed::from_usage(&serde_json::Value::Object(merged)) {
            self.billed = Some(b);
        }
        self.usage_fields = Some(Arc::new(fields));
    }

    pub fn new(request_id: String) -> CallCtx {
        CallCtx {
            request_id,
            started: Instant::now(),
            runtime: None,
            consumer: None,
            model: None,
            provider: None,
            deployment: None,
            endpoint: "none",
            route: None,
            stream: false,
            status: 0,
            upstream_ttfb: None,
            usage: None,
            usage_fields: None,
            attempts: 0,
            completion_cap: None,
            limited: None,
            prompt_estimate: 0,
            relayed_tokens: 0,
            relayed_events: 0,
            usage_estimated: false,
            error: None,
            tickets: Vec::new(),
            quotas: Vec::new(),
            provider_headers: Vec::new(),
            price: None,
            billed: None,
            batch: false,
            trace: None,
            queue_wait: None,
            response_model: None,
        }
    }

    /// What the request cost in USD, when its deployment has a price and its answer a
    /// usage.
    pub fn cost_usd(&self) -> Option<f64> {
        Some(self.billed?.cost_usd(self.price.as_ref()?, self.batch))
    }

    /// Keep the answer's `model` for the trace (upstream bytes, already scrubbed of keys:
    /// at most 256 bytes are kept, and only for a sampled trace).
    pub fn note_response_model(&mut self, model: Option<&str>) {
        if let (Some(m), Some(true)) = (model, self.trace.as_deref().map(|t| t.sampled)) {
            let mut end = m.len().min(256);
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            self.response_model = Some(m[..end].to_string());
        }
    }

    /// What the request came to, for the status page's history.
    pub fn history_sample(&self) -> crate::history::Sample<'_> {
        crate::history::Sample {
            model: self.model.as_ref(),
            consumer: self.consumer.as_ref(),
            status: self.status,
            latency: self.started.elapsed(),
            tokens: self.usage.map_or(0, |u| u.total()),
            spend_usd: self.cost_usd().unwrap_or(0.0),
            queue_wait: self.queue_wait,
            batch: self.batch,
        }
    }

    /// What the request came to, for its trace (`method`: the client's HTTP method;
    /// `path`, `scheme`: its URL's, for an HTTP request).
    pub fn trace_summary<'a>(
        &'a self,
        method: &'a str,
        path: Option<&'a str>,
        scheme: &'static str,
    ) -> crate::telemetry::spans::Summary<'a> {
        crate::telemetry::spans::Summary {
            path,
            route: self.route,
            scheme,
            operation: crate::telemetry::operation(self.endpoint),
            endpoint: self.endpoint,
            method,
            request_model: self.model.as_deref(),
            response_model: self.response_model.as_deref(),
            consumer: self.consumer.as_deref(),
            request_id: &self.request_id,
            status: self.status,
            stream: self.stream,
            batch: self.batch,
            usage: self.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            cache: self.billed.map(|b| (b.cached_input, b.cache_write)),
            cost_usd: self.cost_usd(),
            error: self.error,
        }
    }

    /// A stream that did not end whole (the client left, the upstream broke off) and
    /// relayed more answer text than its usage reports (or reported none): the relayed text
    /// stands in for its completion.
    pub fn settle_relayed(&mut self) {
        if self.relayed_tokens == 0 || (self.status != 499 && self.error.is_none()) {
            return;
        }
        let u = self.usage.get_or_insert(Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: 0,
            total_tokens: None,
        });
        if u.completion_tokens < self.relayed_tokens {
            u.completion_tokens = self.relayed_tokens;
            u.total_tokens = None;
            self.usage_estimated = true;
            // Priced as output, beside whatever the prompt's counts were.
            let prompt = u.prompt_tokens;
            let b = self.billed.get_or_insert(crate::cost::Billed {
                input: prompt,
                cached_input: 0,
                cache_write: 0,
                output: 0,
                reasoning: 0,
            });
            b.output = self.relayed_tokens.saturating_sub(b.reasoning);
        }
    }

    /// The usage token and spend limits charge in place of their reservations, when the
    /// answer reported one.
    pub fn charged_usage(&self) -> Option<crate::limits::admission::TokenUsage> {
        let u = self.usage?;
        Some(crate::limits::admission::TokenUsage {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            total: u.total_tokens,
            at_least_reserved: self.usage_estimated,
            fields: self.usage_fields.clone(),
            spend_micro_usd: self.cost_usd().map(crate::limits::rules::micro_usd),
        })
    }
}
