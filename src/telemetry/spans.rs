//! What one request's trace records while it runs, and the spans it becomes when it ends.
//!
//! Recording is a few timestamps and ids in the request's context (no span objects, no
//! locks); the spans are built once, at the end, and only for a sampled trace:
//!
//! - the request (kind SERVER), a child of the client's span when it sent `traceparent`:
//!   HTTP's attributes (`http.request.method`, `http.route`, `url.path`, `url.scheme`,
//!   `http.response.status_code`), the OpenTelemetry GenAI attributes
//!   (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.*`,
//!   `gen_ai.response.*`, `gen_ai.usage.*`: see [`super::genai`]) and the gateway's own
//!   (`gateway.consumer`, `gateway.deployment` — `provider/model`, names from the config —,
//!   `gateway.limit.outcome`, `gateway.cost_usd`, …);
//! - `gateway.admission`: the limit decision, queue wait included;
//! - one span per upstream attempt (kind CLIENT: the conventions' inference span), whose
//!   id the upstream receives as its parent in `traceparent`, with `server.address` (the
//!   host) and `server.port`; the attempt that answered also carries the answer's
//!   `gen_ai.response.*` and `gen_ai.usage.*`, so backends that sum inference spans count
//!   its tokens;
//! - `gateway.stream`: a streamed answer, from its first byte to its end.
//!
//! No prompt, completion or key is ever recorded: only names from the config, numbers and
//! labels. A string that can come from a client or an upstream (a model name the client
//! chose on an AI route, the model an upstream says answered) is cut to
//! [`MAX_ATTRIBUTE_BYTES`], in attributes and span names alike.

use super::context::{self, TraceParent};
use super::genai::{usage_attributes, RequestParams, ResponseInfo};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Longest string attribute or span name exported (longer ones are cut, marked `…`).
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// `s` cut to [`MAX_ATTRIBUTE_BYTES`] at a character boundary.
fn bounded(s: Cow<'static, str>) -> Cow<'static, str> {
    if s.len() <= MAX_ATTRIBUTE_BYTES {
        return s;
    }
    let mut end = MAX_ATTRIBUTE_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

fn bounded_attr(kv: KeyValue) -> KeyValue {
    match kv.value {
        opentelemetry::Value::String(v) if v.as_str().len() > MAX_ATTRIBUTE_BYTES => KeyValue::new(
            kv.key,
            bounded(Cow::Owned(v.as_str().to_string())).into_owned(),
        ),
        _ => kv,
    }
}

/// The trace of one request, recorded as it runs.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The request's own span.
    pub root: SpanId,
    /// The client's span, when it sent a valid `traceparent`.
    parent: Option<SpanId>,
    /// Whether this trace is exported (the client's decision, or the ratio's).
    pub sampled: bool,
    start: SystemTime,
    admission: Option<Admission>,
    attempts: Vec<Attempt>,
    stream_start: Option<SystemTime>,
    /// The request's sampling parameters (set with its first attempt).
    pub params: Option<RequestParams>,
    /// What the answer said about itself.
    pub response: ResponseInfo,
}

#[derive(Debug, Clone)]
struct Admission {
    start: SystemTime,
    end: Option<SystemTime>,
    outcome: &'static str,
    queue_wait: Duration,
}

/// One upstream attempt.
#[derive(Debug, Clone)]
struct Attempt {
    span: SpanId,
    start: SystemTime,
    end: Option<SystemTime>,
    target: AttemptTarget,
    status: Option<u16>,
    error: Option<&'static str>,
}

/// Where an attempt goes: names from the config.
#[derive(Debug, Clone)]
pub struct AttemptTarget {
    pub deployment: Arc<str>,
    /// `gen_ai.provider.name`: see `Provider::otel_name`.
    pub provider: Arc<str>,
    /// The model name sent upstream.
    pub model: String,
    /// The upstream's host and port (none for the built-in mock).
    pub server: Option<(String, u16)>,
}

/// What the request came to, read from its context when it ends.
#[derive(Debug, Clone, Default)]
pub struct Summary<'a> {
    /// `chat`, `text_completion` or `embeddings` (an AI request), else `None`.
    pub operation: Option<&'static str>,
    /// The endpoint label (`chat_completions`, `models`, `batches`, …).
    pub endpoint: &'a str,
    pub method: &'a str,
    pub request_model: Option<&'a str>,
    /// The model the provider says answered (else the deployment's model is reported).
    pub response_model: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub request_id: &'a str,
    /// The request's path (normalised) and its route template, for HTTP requests.
    pub path: Option<&'a str>,
    pub route: Option<&'static str>,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub status: u16,
    pub stream: bool,
    pub batch: bool,
    /// Prompt and completion tokens.
    pub usage: Option<(u64, u64)>,
    /// Prompt tokens read from and written to the provider's cache, when billed.
    pub cache: Option<(u64, u64)>,
    pub cost_usd: Option<f64>,
    /// The gateway's error label (`rate_limited`, `upstream_timeout`, …).
    pub error: Option<&'a str>,
}

impl RequestTrace {
    /// A request's trace: in the client's trace (and following its sampled flag) when its
    /// `traceparent` is valid, else a new trace sampled at `ratio`.
    pub fn begin(traceparent: Option<&str>, ratio: f64) -> RequestTrace {
        let parent = traceparent.and_then(TraceParent::parse);
        let (trace_id, parent_id, sampled) = match parent {
            Some(p) => (p.trace_id, Some(p.parent_id), p.sampled),
            None => {
                let id = context::new_trace_id();
                (id, None, context::sampled_by_ratio(id, ratio))
            }
        };
        RequestTrace {
            trace_id,
            root: context::new_span_id(),
            parent: parent_id,
            sampled,
            start: SystemTime::now(),
            admission: None,
            attempts: Vec::new(),
            stream_start: None,
            params: None,
            response: ResponseInfo::default(),
        }
    }

    /// The first chunk of answer text reached the gateway: the time to it from its
    /// attempt's start.
    pub fn first_chunk(&mut self) {
        if let (true, None, Some(a)) = (
            self.sampled,
            self.response.time_to_first_chunk,
            self.attempts.last(),
        ) {
            let t = SystemTime::now()
                .duration_since(a.start)
                .unwrap_or_default();
            self.response.time_to_first_chunk = Some(t.as_secs_f64());
        }
    }

    /// The limit decision starts (once per request; a failover's re-admission is part of
    /// its attempt).
    pub fn admission_started(&mut self) {
        if self.sampled && self.admission.is_none() {
            self.admission = Some(Admission {
                start: SystemTime::now(),
                end: None,
                outcome: "admitted",
                queue_wait: Duration::ZERO,
            });
        }
    }

    /// The limit decision ended: `admitted`, `queued` (admitted after a wait), `rejected`
    /// or `unavailable`; `queue_wait` spent waiting for headroom.
    pub fn admission_ended(&mut self, outcome: &'static str, queue_wait: Duration) {
        if let Some(a) = self.admission.as_mut().filter(|a| a.end.is_none()) {
            a.end = Some(SystemTime::now());
            a.outcome = outcome;
            a.queue_wait = queue_wait;
        }
    }

    /// An upstream attempt to `target` starts: the `traceparent` to send with it. An
    /// unsampled trace records nothing (the upstream still hears the decision).
    pub fn attempt_started(&mut self, target: impl FnOnce() -> AttemptTarget) -> String {
        let span = context::new_span_id();
        if self.sampled {
            self.attempts.push(Attempt {
                span,
                start: SystemTime::now(),
                end: None,
                target: target(),
                status: None,
                error: None,
            });
        }
        context::format(self.trace_id, span, self.sampled)
    }

    /// The current attempt got its answer's head (`status`) or failed (`error`).
    pub fn attempt_ended(&mut self, status: Option<u16>, error: Option<&'static str>) {
        if let Some(a) = self.attempts.last_mut().filter(|a| a.end.is_none()) {
            a.end = Some(SystemTime::now());
            a.status = status;
            a.error = error;
        }
    }

    /// A streamed answer starts reaching the client.
    pub fn stream_started(&mut self) {
        if self.sampled {
            self.stream_start.get_or_insert_with(SystemTime::now);
        }
    }

    /// The spans of the finished request, ended at `end`.
    pub fn spans(
        &self,
        s: &Summary<'_>,
        end: SystemTime,
        scope: &InstrumentationScope,
    ) -> Vec<SpanData> {
        let last = self.attempts.last();
        let mut attrs = vec![
            kv("gateway.request_id", s.request_id.to_string()),
            kv("http.request.method", s.method.to_string()),
            kv("gateway.endpoint", s.endpoint.to_string()),
            KeyValue::new("http.response.status_code", i64::from(s.status)),
            KeyValue::new("gateway.attempts", self.attempts.len() as i64),
            KeyValue::new("gateway.batch", s.batch),
        ];
        if let Some(p) = s.path {
            attrs.push(kv("url.path", p.to_string()));
            attrs.push(kv("url.scheme", s.scheme));
        }
        if let Some(r) = s.route {
            attrs.push(kv("http.route", r));
        }
        if let Some(op) = s.operation {
            attrs.push(kv("gen_ai.operation.name", op));
            let params = self.params.clone().unwrap_or_else(|| RequestParams {
                stream: s.stream,
                ..RequestParams::default()
            });
            params.attributes(&mut attrs);
            self.response.attributes(&mut attrs);
        }
        if let Some(m) = s.request_model {
            attrs.push(kv("gen_ai.request.model", m.to_string()));
        }
        if let Some(a) = last {
            attrs.push(kv("gen_ai.provider.name", a.target.provider.clone()));
            let answered = s
                .response_model
                .map_or_else(|| a.target.model.clone(), str::to_string);
            attrs.push(kv("gen_ai.response.model", answered));
            attrs.push(kv("gateway.deployment", a.target.deployment.clone()));
        }
        if let Some(c) = s.consumer {
            attrs.push(kv("gateway.consumer", c.to_string()));
        }
        usage_attributes(s.usage, s.cache, &mut attrs);
        if let Some(c) = s.cost_usd {
            attrs.push(KeyValue::new("gateway.cost_usd", c));
        }
        if let Some(a) = &self.admission {
            attrs.push(kv("gateway.limit.outcome", a.outcome));
        }
        if let Some(e) = s.error {
            attrs.push(kv("error.type", e.to_string()));
        }
        let name = match (s.operation, s.request_model) {
            (Some(op), Some(m)) => format!("{op} {m}"),
            _ => format!("{} {}", s.method, s.endpoint),
        };
        // A server span is in error for a 5xx only (a 4xx is the client's).
        let status = match s.status {
            500.. => Status::error(s.error.unwrap_or("server error").to_string()),
            _ => Status::Unset,
        };
        let mut out = vec![self.span(
            self.root,
            self.parent.unwrap_or(SpanId::INVALID),
            self.parent.is_some(),
            SpanKind::Server,
            name.into(),
            (self.start, end),
            attrs,
            status,
            scope,
        )];
        if let Some(a) = &self.admission {
            let attrs = vec![
                kv("gateway.limit.outcome", a.outcome),
                KeyValue::new("gateway.queue.wait_ms", a.queue_wait.as_millis() as i64),
            ];
            let status = match a.outcome {
                "rejected" | "unavailable" => Status::error(a.outcome),
                _ => Status::Unset,
            };
            out.push(self.child(
                SpanKind::Internal,
                "gateway.admission".into(),
                (a.start, a.end.unwrap_or(end)),
                attrs,
                status,
                scope,
            ));
        }
        let answered = self.attempts.len().saturating_sub(1);
        for (i, a) in self.attempts.iter().enumerate() {
            let mut attrs = vec![
                kv("gen_ai.provider.name", a.target.provider.clone()),
                kv("gen_ai.request.model", a.target.model.clone()),
                kv("gateway.deployment", a.target.deployment.clone()),
            ];
            if let Some(op) = s.operation {
                attrs.push(kv("gen_ai.operation.name", op));
                if let Some(p) = &self.params {
                    p.attributes(&mut attrs);
                }
            }
            if let Some((host, port)) = &a.target.server {
                attrs.push(kv("server.address", host.clone()));
                attrs.push(KeyValue::new("server.port", i64::from(*port)));
            }
            // The attempt that answered: the answer's own attributes and tokens.
            if i == answered && a.status.is_some_and(|c| c < 400) {
                let answered_by = s
                    .response_model
                    .map_or_else(|| a.target.model.clone(), str::to_string);
                attrs.push(kv("gen_ai.response.model", answered_by));
                self.response.attributes(&mut attrs);
                usage_attributes(s.usage, s.cache, &mut attrs);
            }
            if let Some(code) = a.status {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(code)));
            }
            let error = a
                .error
                .map(str::to_string)
                .or(a.status.filter(|c| *c >= 400).map(|c| c.to_string()));
            if let Some(e) = &error {
                attrs.push(kv("error.type", e.clone()));
            }
            let status = match error {
                Some(e) => Status::error(e),
                None => Status::Unset,
            };
            let name = match s.operation {
                Some(op) => format!("{op} {}", a.target.model),
                None => format!("upstream {}", a.target.deployment),
            };
            out.push(self.span(
                a.span,
                self.root,
                false,
                SpanKind::Client,
                name.into(),
                (a.start, a.end.unwrap_or(end)),
                attrs,
                status,
                scope,
            ));
        }
        if let Some(start) = self.stream_start {
            out.push(self.child(
                SpanKind::Internal,
                "gateway.stream".into(),
                (start, end.max(start)),
                Vec::new(),
                Status::Unset,
                scope,
            ));
        }
        out
    }

    /// A span under the request's own.
    fn child(
        &self,
        kind: SpanKind,
        name: Cow<'static, str>,
        times: (SystemTime, SystemTime),
        attrs: Vec<KeyValue>,
        status: Status,
        scope: &InstrumentationScope,
    ) -> SpanData {
        let id = context::new_span_id();
        self.span(
            id, self.root, false, kind, name, times, attrs, status, scope,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        id: SpanId,
        parent: SpanId,
        parent_is_remote: bool,
        kind: SpanKind,
        name: Cow<'static, str>,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
        scope: &InstrumentationScope,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: parent_is_remote,
            span_kind: kind,
            name: bounded(name),
            start_time: start,
            end_time: end.max(start),
            attributes: attributes.into_iter().map(bounded_attr).collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut() {
        let long = "m".repeat(1 << 20);
        let cut = bounded(Cow::Owned(long));
        assert!(cut.len() <= MAX_ATTRIBUTE_BYTES && cut.ends_with('…'));
        let multi = "é".repeat(300);
        let cut = bounded(Cow::Owned(multi));
        assert!(cut.len() <= MAX_ATTRIBUTE_BYTES);
        let kv = bounded_attr(KeyValue::new("k", "x".repeat(1000)));
        assert!(kv.value.as_str().len() <= MAX_ATTRIBUTE_BYTES);
        assert_eq!(bounded(Cow::Borrowed("short")), "short");
    }

    fn target() -> AttemptTarget {
        AttemptTarget {
            deployment: "gpt-4o/openai#0".into(),
            provider: "openai".into(),
            model: "gpt-4o-2024-08-06".into(),
            server: Some(("api.openai.com".into(), 443)),
        }
    }

    #[test]
    fn a_request_becomes_a_tree_of_spans_in_the_clients_trace() {
        let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut t = RequestTrace::begin(Some(client), 0.0);
        assert!(t.sampled, "the client's flag wins over the ratio");
        t.admission_started();
        t.admission_ended("queued", Duration::from_millis(120));
        let first = t.attempt_started(target);
        t.attempt_ended(None, Some("timeout"));
        let second = t.attempt_started(target);
        t.attempt_ended(Some(200), None);
        t.stream_started();
        let p1 = TraceParent::parse(&first).unwrap();
        let p2 = TraceParent::parse(&second).unwrap();
        assert_eq!(p1.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(p1.parent_id, p2.parent_id, "each attempt is its own parent");
        let s = Summary {
            operation: Some("chat"),
            endpoint: "chat_completions",
            method: "POST",
            request_model: Some("gpt-4o"),
            consumer: Some("team-a"),
            request_id: "req_1",
            status: 200,
            stream: true,
            usage: Some((12, 30)),
            cache: Some((4, 0)),
            cost_usd: Some(0.0003),
            ..Summary::default()
        };
        let scope = InstrumentationScope::builder("t").build();
        let spans = t.spans(&s, SystemTime::now(), &scope);
        let names: Vec<&str> = spans.iter().map(|s| &*s.name).collect();
        assert_eq!(
            names,
            [
                "chat gpt-4o",
                "gateway.admission",
                "chat gpt-4o-2024-08-06",
                "chat gpt-4o-2024-08-06",
                "gateway.stream"
            ]
        );
        let root = &spans[0];
        assert_eq!(root.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(root.parent_span_is_remote);
        for child in &spans[1..] {
            assert_eq!(child.parent_span_id, t.root);
            assert_eq!(child.span_context.trace_id(), t.trace_id);
        }
        assert_eq!(spans[2].span_context.span_id(), p1.parent_id);
        assert_eq!(spans[3].span_context.span_id(), p2.parent_id);
        assert!(matches!(spans[2].status, Status::Error { .. }));
        let attr = |span: &SpanData, key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            attr(root, "gen_ai.usage.input_tokens").as_deref(),
            Some("12")
        );
        assert_eq!(
            attr(root, "gen_ai.usage.cache_read.input_tokens").as_deref(),
            Some("4")
        );
        assert_eq!(
            attr(root, "gateway.limit.outcome").as_deref(),
            Some("queued")
        );
        assert_eq!(
            attr(&spans[1], "gateway.queue.wait_ms").as_deref(),
            Some("120")
        );
        assert_eq!(attr(root, "gateway.attempts").as_deref(), Some("2"));
    }

    #[test]
    fn without_a_traceparent_the_ratio_decides() {
        assert!(RequestTrace::begin(None, 1.0).sampled);
        assert!(!RequestTrace::begin(None, 0.0).sampled);
        let bad = RequestTrace::begin(Some("garbage"), 1.0);
        assert!(bad.sampled && bad.parent.is_none());
        // An unsampled client trace stays unsampled, and says so downstream.
        let mut t = RequestTrace::begin(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            1.0,
        );
        assert!(!t.sampled);
        assert!(t.attempt_started(target).ends_with("-00"));
        assert!(t.attempts.is_empty(), "an unsampled trace records nothing");
    }
}
