//! OpenTelemetry traces (`traces` in gateway.yaml): one trace per request, exported over
//! OTLP/HTTP (protobuf) to the operator's collector.
//!
//! The request path only records ids and timestamps ([`spans::RequestTrace`]); spans are
//! built when the request ends, for sampled traces only, and handed to the SDK's batch
//! processor, which exports them from its own thread. The queue is bounded
//! (`traces.max_queue`): when the collector is slow or gone, spans are dropped and counted
//! (`gateway_trace_spans_total{outcome}`), and requests never wait.
//!
//! [`context`] reads and writes W3C `traceparent` (accepted from clients, sent to
//! upstreams), [`spans`] turns a request into spans with the GenAI semantic-convention
//! attributes, [`export`] is the way out.

pub mod context;
mod export;
pub mod genai;
pub mod spans;

use crate::config::schema::TracesConfig;
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanProcessor};
use spans::{RequestTrace, Summary};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// `gateway_trace_spans_total{outcome}`: spans exported, dropped (queue full) or failed
/// (the collector did not take them).
#[derive(Debug, Clone)]
pub struct TraceMetrics {
    pub spans: prometheus::IntCounterVec,
}

impl TraceMetrics {
    pub fn new() -> TraceMetrics {
        let spans = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "gateway_trace_spans_total",
                "Trace spans by outcome: exported to the collector, dropped (the export queue was full) or failed (the collector did not take them).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for o in ["exported", "dropped", "failed"] {
            spans.with_label_values(&[o]);
        }
        TraceMetrics { spans }
    }
}

impl Default for TraceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The exporter of one `traces` config.
pub struct Tracer {
    config: TracesConfig,
    processor: Option<BatchSpanProcessor>,
    /// Spans handed to the processor and not yet exported (bounded by `max_queue`).
    queued: Arc<AtomicUsize>,
    scope: InstrumentationScope,
    metrics: TraceMetrics,
}

impl Tracer {
    /// Start exporting as `config` says (the processor's thread starts here).
    pub fn new(config: &TracesConfig, metrics: TraceMetrics) -> Result<Tracer, String> {
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect();
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .with_headers(headers)
            .with_http_client(export::BlockingHttp::new(config.timeout))
            .build()
            .map_err(|e| format!("traces: {e}"))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = export::Counted {
            inner: otlp,
            queued: queued.clone(),
            metrics: metrics.clone(),
        };
        let batch = BatchConfigBuilder::default()
            // The processor's own queue never fills first: ours is the bound.
            .with_max_queue_size(config.max_queue + 1)
            .with_max_export_batch_size(512)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        processor.set_resource(&resource(config));
        Ok(Tracer {
            config: config.clone(),
            processor: Some(processor),
            queued,
            scope: InstrumentationScope::builder("ai-rate-limiter")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            metrics,
        })
    }

    /// The config it exports for (a reload with another one starts a new tracer).
    pub fn config(&self) -> &TracesConfig {
        &self.config
    }

    /// A request's trace, from the client's `traceparent` if it sent one.
    pub fn begin(&self, traceparent: Option<&str>) -> RequestTrace {
        RequestTrace::begin(traceparent, self.config.sampling_ratio)
    }

    /// The request ended: export its spans if it was sampled.
    pub fn finish(&self, trace: &RequestTrace, summary: &Summary<'_>) {
        let Some(processor) = &self.processor else {
            return;
        };
        if !trace.sampled {
            return;
        }
        for span in trace.spans(summary, SystemTime::now(), &self.scope) {
            if self.queued.fetch_add(1, Ordering::Relaxed) >= self.config.max_queue {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.metrics.spans.with_label_values(&["dropped"]).inc();
                continue;
            }
            processor.on_end(span);
        }
    }
}

impl Tracer {
    /// Export everything queued now, waiting for it (blocking: call it off the async
    /// threads). For shutdown: the spans of the last requests are not lost.
    pub fn flush(&self) {
        if let Some(p) = &self.processor {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Tracer {
    /// Flush what is queued (a reload's old tracer, or shutdown) on a thread of its own:
    /// the processor's shutdown waits for its last export.
    fn drop(&mut self) {
        if let Some(p) = self.processor.take() {
            let timeout = self.config.timeout;
            let _ = std::thread::Builder::new()
                .name("trace-flush".into())
                .spawn(move || {
                    let _ = p.shutdown_with_timeout(timeout);
                });
        }
    }
}

/// `gen_ai.operation.name` of an endpoint label (`None`: not a model call).
pub fn operation(endpoint: &str) -> Option<&'static str> {
    match endpoint {
        "chat_completions" | "messages" | "responses" => Some("chat"),
        "completions" => Some("text_completion"),
        "embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// This process's `service.instance.id`: a random UUID (version 4), the same across
/// reloads, so two instances can be told apart.
fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut b: [u8; 16] = rand::random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    })
}

/// The spans' resource: the standard variables honoured (`OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_SERVICE_NAME`), `telemetry.sdk.*`, `service.version`, and `service.instance.id`
/// unless the variables set one. `service.name`: `OTEL_SERVICE_NAME`, else
/// `traces.service_name` when set, else the variables' `service.name`, else
/// `ai-rate-limiter`.
fn resource(config: &TracesConfig) -> opentelemetry_sdk::Resource {
    use opentelemetry::{Key, KeyValue};
    let from_env = opentelemetry_sdk::Resource::builder().build();
    let mut b = opentelemetry_sdk::Resource::builder();
    if from_env
        .get(&Key::from_static_str("service.version"))
        .is_none()
    {
        b = b.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if from_env
        .get(&Key::from_static_str("service.instance.id"))
        .is_none()
    {
        b = b.with_attribute(KeyValue::new("service.instance.id", instance_id()));
    }
    let env_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty());
    let attr_name = from_env
        .get(&Key::from_static_str("service.name"))
        .map(|v| v.to_string())
        .filter(|n| !n.starts_with("unknown_service"));
    let name = match (env_name, attr_name) {
        (Some(n), _) => n,
        (None, _) if config.service_name != "ai-rate-limiter" => config.service_name.clone(),
        (None, Some(n)) => n,
        (None, None) => config.service_name.clone(),
    };
    b.with_service_name(name).build()
}
