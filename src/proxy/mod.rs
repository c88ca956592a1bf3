//! The realtime path. The `impl ProxyHttp` is kept thin: `request_filter` runs the phases
//! in order and `logging` accounts for the request on every outcome.
//!
//! `auth → body → route → upstream → stream → account`
//!
//! AI routes are served entirely inside `request_filter` (the gateway drives the upstream
//! call itself, see [`crate::providers::http`]), so Pingora's `upstream_peer` is never
//! reached for them.

pub mod account;
pub mod admit;
pub mod auth;
pub mod body;
pub mod front;
pub mod passthrough;
pub mod respond;
pub mod route;
pub mod stream;
pub mod upstream;

use crate::config::Runtime;
use crate::errors::GatewayError;
use crate::limits::admission::{Quota, Ticket};
use crate::state::GatewayState;
use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Pingora service of the proxy listener.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

/// Token usage of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Everything one request carries from phase to phase.
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub runtime: Option<Arc<Runtime>>,
    pub consumer: Option<Arc<str>>,
    /// The public model name (only names from the config: a bounded label).
    pub model: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub endpoint: &'static str,
    pub stream: bool,
    /// Status sent to the client (499: client went away).
    pub status: u16,
    pub upstream_ttfb: Option<Duration>,
    pub usage: Option<Usage>,
    pub attempts: u32,
    pub error: Option<&'static str>,
    /// Limit tickets held until the request ends (slots, token reservations).
    pub tickets: Vec<Ticket>,
    /// Quotas seen at admission, for the rate-limit headers.
    pub quotas: Vec<Quota>,
    /// The provider's rate-limit headers, when its config passes them on.
    pub provider_headers: Vec<(String, String)>,
    /// Set when the request is proxied as it is by a pass-through route.
    pub pass: Option<passthrough::Pass>,
    _in_flight: InFlight,
}

impl RequestCtx {
    fn with_gauge(request_id: String, gauge: prometheus::IntGauge) -> RequestCtx {
        RequestCtx {
            request_id,
            started: Instant::now(),
            runtime: None,
            consumer: None,
            model: None,
            provider: None,
            endpoint: "none",
            stream: false,
            status: 0,
            upstream_ttfb: None,
            usage: None,
            attempts: 0,
            error: None,
            tickets: Vec::new(),
            quotas: Vec::new(),
            provider_headers: Vec::new(),
            pass: None,
            _in_flight: InFlight(gauge),
        }
    }

    /// A context for a request that no client connection carries (a batch request): it
    /// is not counted in `gateway_requests_in_flight`.
    pub fn detached(request_id: String) -> RequestCtx {
        let gauge = prometheus::IntGauge::new("detached", "not registered").expect("valid name");
        gauge.inc();
        RequestCtx::with_gauge(request_id, gauge)
    }
}

/// Counts a request in the in-flight gauge for exactly as long as it lives.
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let gauge = self.state.metrics.in_flight.clone();
        gauge.inc();
        RequestCtx::with_gauge(String::new(), gauge)
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        ctx.request_id = respond::request_id(session);
        let runtime = self.state.runtime.load_full();
        ctx.runtime = Some(runtime.clone());
        if let Err(e) = route::serve(&self.state, &runtime, session, ctx).await {
            ctx.pass = None;
            respond::error(session, ctx, &e).await;
        }
        // A pass-through request goes on to Pingora's proxy flow; the rest are answered.
        Ok(ctx.pass.is_none())
    }

    fn on_connection_reuse(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
        mark: Box<dyn std::any::Any + Send + Sync>,
    ) {
        // The connection front saw pipelined requests: answer this one, then close.
        if mark.is::<front::Pipelined>() {
            session.set_keepalive(None);
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        match &ctx.pass {
            Some(p) => Ok(passthrough::peer(p)),
            None => pingora::Error::e_explain(
                pingora::ErrorType::InternalError,
                "not a pass-through request",
            ),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(p) = &ctx.pass {
            passthrough::request_headers(p, upstream_request);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if ctx.pass.is_some() {
            respond::rate_limit_headers(upstream_response, &ctx.quotas);
            let _ = upstream_response.insert_header("x-request-id", ctx.request_id.as_str());
        }
        Ok(())
    }

    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        // Wait (bounded) for shared-store releases, so that the client's next request on
        // this connection sees the slot and tokens given back.
        for done in account::finish(&self.state, session, e, ctx) {
            let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
        }
    }
}

impl From<GatewayError> for Box<pingora::Error> {
    fn from(e: GatewayError) -> Self {
        pingora::Error::explain(pingora::ErrorType::HTTPStatus(e.status()), e.to_string())
    }
}
