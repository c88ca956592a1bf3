//! The way out: the OpenTelemetry SDK's batch processor (its own thread) and OTLP/HTTP
//! protobuf exporter, over a small blocking HTTP client on that thread, with the spans
//! waiting bounded and every span counted as exported, dropped or failed.

use super::TraceMetrics;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest collector answer read (it is a small protobuf message).
const MAX_ANSWER: u64 = 64 * 1024;

/// The exporter's HTTP client: `ureq`, blocking, called only on the batch processor's own
/// thread (which runs each export to completion), so no async worker ever waits on it.
#[derive(Debug)]
pub(super) struct BlockingHttp {
    agent: ureq::Agent,
}

impl BlockingHttp {
    pub(super) fn new(timeout: Duration) -> BlockingHttp {
        BlockingHttp {
            agent: ureq::AgentBuilder::new()
                .timeout(timeout)
                .redirects(0)
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self
            .agent
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            req = req.set(name.as_str(), value.to_str()?);
        }
        let resp = match req.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(Box::new(e)),
        };
        let status = resp.status();
        let mut answer = Vec::new();
        resp.into_reader()
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)?;
        Ok(http::Response::builder()
            .status(status)
            .body(Bytes::from(answer))?)
    }
}

/// The OTLP exporter, counting what it sends and what it loses, and giving back the
/// spans' places in the bounded queue.
#[derive(Debug)]
pub(super) struct Counted<E> {
    pub(super) inner: E,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) metrics: TraceMetrics,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        let outcome = if result.is_ok() { "exported" } else { "failed" };
        self.metrics
            .spans
            .with_label_values(&[outcome])
            .inc_by(n as u64);
        if let Err(e) = &result {
            tracing::debug!(error = %e, spans = n, "trace export failed");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
