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
        Some(t.attempt_started(|| {
            AttemptTarget {
                deployment: d.id.clone(),
                provider: d
                    .provider
                    .api
                    .otel_name()
                    .map_or_else(|| d.provider.name.clone(), std::sync::Arc::from),
                model: upstream_model(d, req).to_string(),
                server: match &d.provider.target {
                    Target::Http { base, .. } => Some(base.authority.to_string()),
                    Target::Mock(_) => None,
                },
            }
        }))
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
