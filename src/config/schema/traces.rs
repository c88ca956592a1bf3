//! The `traces` section of `gateway.yaml`: OpenTelemetry traces sent to a collector over
//! OTLP/HTTP (protobuf). Unset: no traces (and no cost).

use super::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: String,
    /// Headers sent with every export (an API key of a hosted backend). Kept as secrets:
    /// never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Share of requests traced, 0..=1, decided by trace id (a client's `traceparent`
    /// that says sampled, or not, is followed instead).
    #[serde(default = "one")]
    pub sampling_ratio: f64,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` overrides it).
    #[serde(default = "service_name")]
    pub service_name: String,
    /// How long one export may take before it is given up (and its spans counted lost).
    #[serde(default = "five_seconds", with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub timeout: Duration,
    /// Spans waiting for export at most; more are dropped and counted
    /// (`gateway_trace_spans_dropped_total`), so a slow or dead collector costs memory of
    /// this bound and a counter, never request latency.
    #[serde(default = "max_queue")]
    pub max_queue: usize,
}

fn one() -> f64 {
    1.0
}

fn service_name() -> String {
    "ai-rate-limiter".into()
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn max_queue() -> usize {
    4096
}
