//! Prometheus metrics of the gateway. Every label value comes from a bounded set: model and
//! provider names from the config (or `none`/`unknown`), status classes, error kinds. No
//! consumer key or free-form text ever becomes a label.

use crate::limits::rules::{Kind, Scope};
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub ttfb: HistogramVec,
    pub tokens: IntCounterVec,
    /// `gateway_spend_usd_total{model,provider,consumer}`: priced usage (consumers come
    /// from the config: a bounded label).
    pub spend: CounterVec,
    pub in_flight: IntGauge,
    pub upstream_errors: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    /// `gateway_limit_decisions_total` for every (kind, scope, outcome), indexed by
    /// [`Metrics::limit_decision`] so the hot path does no label hashing.
    limit_decisions: Vec<prometheus::IntCounter>,
    pub limit_delay: prometheus::Histogram,
    /// Round trips, errors and degraded state of the shared (Redis) limit store.
    pub redis: crate::limits::redis::RedisMetrics,
    /// Size and evictions of the in-process limit counters.
    pub local: crate::limits::slots::SlotMetrics,
    /// `gateway_limit_queue_depth{scope}`: requests waiting for headroom.
    pub queue_depth: IntGaugeVec,
    /// `gateway_limit_queue_wait_seconds{scope,outcome}`: how long queued requests waited.
    pub queue_wait: HistogramVec,
    /// `gateway_provider_ratelimit_remaining{provider,model,budget}`: the headroom the
    /// provider last reported for the key behind a model.
    pub provider_remaining: prometheus::GaugeVec,
    /// `gateway_batch_requests_total{outcome}`: batch request attempts by outcome
    /// (completed, failed, retried, waited).
    pub batch_requests: IntCounterVec,
    /// `gateway_batch_queue_depth`: batch requests not yet ended.
    pub batch_queue: IntGauge,
    /// `gateway_batch_running{model}`: batch requests being dispatched now, per model.
    pub batch_running: IntGaugeVec,
    /// `gateway_batch_webhooks_total{result}`: webhook deliveries (delivered, failed).
    pub batch_webhooks: IntCounterVec,
    /// `gateway_trace_spans_total{outcome}`: what became of trace spans.
    pub traces: crate::telemetry::TraceMetrics,
    /// `gateway_auth_throttled_total`: authentication attempts refused (429) by the brake
    /// on failed attempts.
    pub auth_throttled: prometheus::IntCounter,
}

/// The outcome of a limit decision (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    Delayed,
    Rejected,
    Queued,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Admitted,
        Outcome::Delayed,
        Outcome::Rejected,
        Outcome::Queued,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Admitted => "admitted",
            Outcome::Delayed => "delayed",
            Outcome::Rejected => "rejected",
            Outcome::Queued => "queued",
        }
    }
}

const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

impl Metrics {
    /// Requests answered so far, over every label (for the status page).
    pub fn requests_count(&self) -> u64 {
        use prometheus::core::Collector;
        self.requests
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests answered, by model, provider, endpoint and status class.",
            ),
            &["model", "provider", "endpoint", "status_class"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request start to the end of the response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "provider", "endpoint"],
        )
        .expect("valid metric");
        let ttfb = HistogramVec::new(
            HistogramOpts::new(
                "gateway_upstream_ttfb_seconds",
                "Time from sending a request upstream to its response header.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "provider"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "gateway_tokens_total",
                "Tokens reported by upstream usage, by kind (prompt, completion).",
            ),
            &["model", "provider", "kind"],
        )
        .expect("valid metric");
        let spend = CounterVec::new(
            Opts::new(
                "gateway_spend_usd_total",
                "What answered requests cost in USD: their usage at the deployment's price (deployments with a price only).",
            ),
            &["model", "provider", "consumer"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("gateway_requests_in_flight", "Requests being served now.")
            .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_errors_total",
                "Failed upstream attempts, by provider and kind.",
            ),
            &["provider", "kind"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Config reload attempts, by result (success, failure).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_generation = IntGauge::new(
            "gateway_config_generation",
            "Generation of the config snapshot in use (1 at start).",
        )
        .expect("valid metric");
        let limit_decisions = IntCounterVec::new(
            Opts::new(
                "gateway_limit_decisions_total",
                "Limit decisions, by limit kind (req, conn, count, tokens), scope (consumer, model, deployment) and outcome (admitted, delayed, rejected, queued).",
            ),
            &["kind", "scope", "outcome"],
        )
        .expect("valid metric");
        let limit_delay = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "gateway_limit_delay_seconds",
                "Delays imposed by limit-req and limit-conn.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let redis = crate::limits::redis::RedisMetrics {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "gateway_redis_duration_seconds",
                    "Round trips to the shared limit store, by operation (admit, release, refresh, ping).",
                )
                .buckets(REDIS_BUCKETS.to_vec()),
                &["op"],
            )
            .expect("valid metric"),
            errors: IntCounterVec::new(
                Opts::new(
                    "gateway_redis_errors_total",
                    "Failed calls to the shared limit store, by operation.",
                ),
                &["op"],
            )
            .expect("valid metric"),
            degraded: IntGauge::new(
                "gateway_limiter_degraded",
                "1 while the shared limit store (Redis) cannot be reached.",
            )
            .expect("valid metric"),
            lease_units: IntGauge::new(
                "gateway_limiter_lease_units",
                "Quota lease units this instance holds and has not spent: the most other instances can be refused under a limit.",
            )
            .expect("valid metric"),
            leased: prometheus::IntCounter::new(
                "gateway_limiter_leased_total",
                "Admissions decided from quota leases, without a Redis call.",
            )
            .expect("valid metric"),
            lease_misses: IntCounterVec::new(
                Opts::new(
                    "gateway_limiter_lease_misses_total",
                    "Checks whose quota lease had no room, by limit kind: each sent its request to Redis.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            blocks_returned: IntCounterVec::new(
                Opts::new(
                    "gateway_limiter_blocks_returned_total",
                    "Token blocks given back to Redis, by the call they rode: an admission call or a release call.",
                ),
                &["via"],
            )
            .expect("valid metric"),
            lease_waits: IntCounterVec::new(
                Opts::new(
                    "gateway_limiter_lease_waits_total",
                    "Requests that waited for their key's lease ask to be answered, by outcome: admitted from the lease or sent to Redis.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        };
        let local = crate::limits::slots::SlotMetrics::new();
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "gateway_limit_queue_depth",
                "Requests waiting for limit headroom (on_limit: queue), by scope.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "gateway_limit_queue_wait_seconds",
                "Time queued requests waited, by scope and outcome (admitted, timeout).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["scope", "outcome"],
        )
        .expect("valid metric");
        let provider_remaining = prometheus::GaugeVec::new(
            Opts::new(
                "gateway_provider_ratelimit_remaining",
                "Requests or tokens the provider last reported left for the key behind a model (x-ratelimit-remaining-*, anthropic-ratelimit-*-remaining).",
            ),
            &["provider", "model", "budget"],
        )
        .expect("valid metric");
        let batch_requests = IntCounterVec::new(
            Opts::new(
                "gateway_batch_requests_total",
                "Batch request attempts, by outcome (completed, failed, retried after a provider error, waited for a limit).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let batch_queue = IntGauge::new(
            "gateway_batch_queue_depth",
            "Batch requests waiting or running.",
        )
        .expect("valid metric");
        let batch_running = IntGaugeVec::new(
            Opts::new(
                "gateway_batch_running",
                "Batch requests being dispatched now (admission, upstream call), per model.",
            ),
            &["model"],
        )
        .expect("valid metric");
        let batch_webhooks = IntCounterVec::new(
            Opts::new(
                "gateway_batch_webhooks_total",
                "Batch webhook deliveries, by result (delivered, failed after every retry).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let traces = crate::telemetry::TraceMetrics::new();
        let auth_throttled = prometheus::IntCounter::new(
            "gateway_auth_throttled_total",
            "Authentication attempts refused (429) after too many failures from the address or for the user.",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new("gateway_build_info", "Version of the running gateway."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(ttfb.clone()),
            Box::new(tokens.clone()),
            Box::new(spend.clone()),
            Box::new(in_flight.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_generation.clone()),
            Box::new(limit_decisions.clone()),
            Box::new(limit_delay.clone()),
            Box::new(redis.duration.clone()),
            Box::new(redis.errors.clone()),
            Box::new(redis.degraded.clone()),
            Box::new(redis.lease_units.clone()),
            Box::new(redis.leased.clone()),
            Box::new(redis.lease_misses.clone()),
            Box::new(redis.blocks_returned.clone()),
            Box::new(redis.lease_waits.clone()),
            Box::new(local.keys.clone()),
            Box::new(local.evictions.clone()),
            Box::new(queue_depth.clone()),
            Box::new(queue_wait.clone()),
            Box::new(provider_remaining.clone()),
            Box::new(batch_requests.clone()),
            Box::new(batch_queue.clone()),
            Box::new(batch_running.clone()),
            Box::new(batch_webhooks.clone()),
            Box::new(traces.spans.clone()),
            Box::new(auth_throttled.clone()),
            Box::new(build_info),
        ] {
            registry.register(c).expect("metric registered once");
        }
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        for scope in Scope::ALL.map(Scope::label) {
            queue_depth.with_label_values(&[scope]);
            for outcome in ["admitted", "timeout"] {
                queue_wait.with_label_values(&[scope, outcome]);
            }
        }
        for outcome in ["completed", "failed", "retried", "waited"] {
            batch_requests.with_label_values(&[outcome]);
        }
        for result in ["delivered", "failed"] {
            batch_webhooks.with_label_values(&[result]);
        }
        Metrics {
            registry,
            requests,
            duration,
            ttfb,
            tokens,
            spend,
            in_flight,
            upstream_errors,
            config_reloads,
            config_generation,
            limit_decisions: {
                let mut all =
                    Vec::with_capacity(Kind::ALL.len() * Scope::ALL.len() * Outcome::ALL.len());
                for kind in Kind::ALL {
                    for scope in Scope::ALL {
                        for outcome in Outcome::ALL {
                            all.push(limit_decisions.with_label_values(&[
                                kind.label(),
                                scope.label(),
                                outcome.label(),
                            ]));
                        }
                    }
                }
                all
            },
            limit_delay,
            redis,
            local,
            queue_depth,
            queue_wait,
            provider_remaining,
            batch_requests,
            batch_queue,
            batch_running,
            batch_webhooks,
            traces,
            auth_throttled,
        }
    }

    /// Count one limit decision.
    pub fn limit_decision(&self, kind: Kind, scope: Scope, outcome: Outcome) {
        let i = (kind as usize * Scope::ALL.len() + scope as usize) * Outcome::ALL.len()
            + outcome as usize;
        if let Some(c) = self.limit_decisions.get(i) {
            c.inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
