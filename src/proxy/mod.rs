//! The Pingora adapter and the HTTP surfaces. The `impl ProxyHttp` is kept thin:
//! `request_filter` runs the phases in order and `logging` accounts for the request on
//! every outcome.
//!
//! `front → auth → body → route → (gateway: admit → upstream) → stream → account`
//!
//! AI routes are served entirely inside `request_filter` (the call core drives the
//! upstream call itself, see [`crate::gateway`] and [`crate::providers::http`]), so
//! Pingora's `upstream_peer` is reached only by pass-through routes.

pub mod account;
pub mod ai_route;
pub mod auth;
pub mod batches;
pub mod body;
pub mod front;
pub mod passthrough;
pub mod path;
pub mod respond;
pub mod responses;
pub mod route;
pub mod stream;

use crate::errors::GatewayError;
use crate::state::AppState;
use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

/// The Pingora service of the proxy listener.
pub struct Gateway {
    pub state: Arc<AppState>,
}

pub use crate::gateway::{CallCtx, Usage};

/// Everything one client request carries from phase to phase: the call core's context
/// (reached through `Deref`) plus what only the proxy needs.
pub struct RequestCtx {
    pub call: CallCtx,
    /// Set when the request is proxied as it is by a pass-through route.
    pub pass: Option<passthrough::Pass>,
    /// The `Access-Control-*` headers every answer carries (a route with `cors`).
    pub cors: Vec<(&'static str, String)>,
    _in_flight: InFlight,
}

impl std::ops::Deref for RequestCtx {
    type Target = CallCtx;
    fn deref(&self) -> &CallCtx {
        &self.call
    }
}

impl std::ops::DerefMut for RequestCtx {
    fn deref_mut(&mut self) -> &mut CallCtx {
        &mut self.call
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
        RequestCtx {
            call: CallCtx::new(String::new()),
            pass: None,
            cors: Vec::new(),
            _in_flight: InFlight(gauge),
        }
    }

    /// None: Pingora's default adds a response compression module, disabled, that still
    /// runs on every answer's header and on every body chunk written (each event of a
    /// stream). The gateway compresses no answer.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        ctx.request_id = respond::request_id(session);
        let runtime = self.state.runtime.load_full();
        ctx.runtime = Some(runtime.clone());
        if let Some(tracer) = self.state.tracer.load().as_deref() {
            let parent = session
                .req_header()
                .headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok());
            ctx.trace = Some(Box::new(tracer.begin(parent)));
        }
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
            // The upstream's parent is the request's own span.
            if let Some(t) = ctx.trace.as_deref() {
                let tp = crate::telemetry::context::format(t.trace_id, t.root, t.sampled);
                let _ = upstream_request.insert_header("traceparent", tp);
            }
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
            respond::quota_headers(upstream_response, ctx, &ctx.quotas);
            let _ = upstream_response.insert_header("x-request-id", ctx.request_id.as_str());
            for (k, v) in &ctx.cors {
                let _ = upstream_response.insert_header(*k, v.as_str());
            }
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

/// Resolves once the client has closed (or reset) its connection; pends otherwise. Used
/// beside every wait on an upstream, so that a client that leaves ends the upstream call
/// and frees what its request holds at once, not at `upstream.read_timeout`.
pub async fn client_closed(session: &mut Session) {
    match session.downstream_session.read_body_or_idle(true).await {
        Ok(_) => std::future::pending().await,
        Err(e) if *e.etype() == pingora::ErrorType::ConnectError => {
            // Bytes after the body: the client pipelined its next request mid-answer.
            // This answer closes the connection, and the client sends it again.
            session.set_keepalive(None);
            std::future::pending().await
        }
        Err(_) => {}
    }
}

impl From<GatewayError> for Box<pingora::Error> {
    fn from(e: GatewayError) -> Self {
        pingora::Error::explain(pingora::ErrorType::HTTPStatus(e.status()), e.to_string())
    }
}
