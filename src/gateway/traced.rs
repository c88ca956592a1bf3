//! What the call core records in a request's trace (when `traces` is on): the admission
//! and its queue wait, and each upstream attempt, whose span the upstream is told is its
//! parent. Names from the config only (see [`crate::telemetry::spans`]).

use super::admit::Refused;
use super::upstream::upstream_model;
use super::CallCtx;
use crate::canonical::AiRequest;
use crate::errors::GatewayError;
use crate::providers::{UpstreamFailure, UpstreamResponse};
use crate::runtime::{Deployment, Target};
use crate::telemetry::genai::RequestParams;
use crate::telemetry::spans::AttemptTarget;
use std::time::Duration;

impl CallCtx {
    /// The limit decision starts.
    pub(super) fn trace_admission_started(&mut self) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.admission_started();
        }
    }

    /// Admitted, after waiting in a queue for `waited` (if it did).
    pub(super) fn note_admitted(&mut self, waited: Option<Duration>) {
        if waited.is_some() {
            self.queue_wait = waited;
        }
        if let Some(t) = self.trace.as_deref_mut() {
            let outcome = if waited.is_some() {
                "queued"
            } else {
                "admitted"
            };
            t.admission_ended(outcome, waited.unwrap_or_default());
        }
    }

    /// Refused (after waiting `waited`, if it did).
    pub(super) fn trace_refused(&mut self, refused: &Refused, waited: Option<Duration>) {
        if let Some(t) = self.trace.as_deref_mut() {
            let outcome = match refused {
                Refused::Answer(GatewayError::LimiterUnavailable(_), _) => "unavailable",
                _ => "rejected",
            };
            t.admission_ended(outcome, waited.unwrap_or_default());
        }
    }

    /// An attempt on `d` starts: the `traceparent` to send upstream.
    pub(super) fn trace_attempt(&mut self, d: &Deployment, req: &AiRequest) -> Option<String> {
        let t = self.trace.as_deref_mut()?;
        if t.sampled && t.params.is_none() {
            t.params = Some(params_of(req));
        }
        Some(t.attempt_started(|| {
            AttemptTarget {
                // Names from the config (the id holds a digest of the provider key).
                deployment: format!("{}/{}", d.provider.name, upstream_model(d, req)).into(),
                provider: d
                    .provider
                    .api
                    .otel_name()
                    .map_or_else(|| d.provider.name.clone(), std::sync::Arc::from),
                model: upstream_model(d, req).to_string(),
                server: match &d.provider.target {
                    Target::Http { base, .. } => Some((base.host.clone(), base.port)),
                    Target::InProcess(_) => None,
                },
            }
        }))
    }

    /// What the answer says of itself: its id and a finish reason (a traced request's).
    pub fn note_response(&mut self, id: Option<&str>, finish: Option<&str>) {
        if let Some(t) = self.trace.as_deref_mut().filter(|t| t.sampled) {
            if let Some(id) = id {
                t.response.note_id(id);
            }
            if let Some(f) = finish {
                t.response.note_finish(f);
            }
        }
    }

    /// Whether the request's trace is exported (what only traces read is read then).
    pub fn traced(&self) -> bool {
        self.trace.as_deref().is_some_and(|t| t.sampled)
    }

    /// The first chunk of answer text arrived.
    pub fn trace_first_chunk(&mut self) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.first_chunk();
        }
    }

    /// The attempt's answer head arrived (a stream's relay starts with it), or it failed.
    pub(super) fn trace_attempt_ended(
        &mut self,
        result: &Result<UpstreamResponse, UpstreamFailure>,
        stream: bool,
    ) {
        let Some(t) = self.trace.as_deref_mut() else {
            return;
        };
        match result {
            Ok(resp) => {
                t.attempt_ended(Some(resp.status), None);
                if stream && resp.status < 300 {
                    t.stream_started();
                }
            }
            Err(f) => t.attempt_ended(None, Some(f.kind.label())),
        }
    }
}

/// A request's sampling parameters, as the GenAI conventions list them (read from its
/// body only for a sampled trace).
fn params_of(req: &AiRequest) -> RequestParams {
    let num = |k: &str| req.field(k).and_then(|r| r.get().parse::<f64>().ok());
    let mut p = RequestParams {
        stream: req.stream,
        max_tokens: req.max_tokens,
        choice_count: (req.choices != 1).then_some(req.choices),
        temperature: num("temperature"),
        top_p: num("top_p"),
        top_k: num("top_k"),
        frequency_penalty: num("frequency_penalty"),
        presence_penalty: num("presence_penalty"),
        seed: req.field("seed").and_then(|r| r.get().parse::<i64>().ok()),
        stop_sequences: Vec::new(),
    };
    let stops = req.field("stop").or_else(|| req.field("stop_sequences"));
    match stops.map(|r| serde_json::from_str::<serde_json::Value>(r.get())) {
        Some(Ok(serde_json::Value::String(s))) => p.add_stop(&s),
        Some(Ok(serde_json::Value::Array(list))) => {
            for s in list.iter().filter_map(serde_json::Value::as_str) {
                p.add_stop(s);
            }
        }
        _ => {}
    }
    p
}
