//! What every call through the core shares in one process: the config snapshot, the
//! upstream pool, metrics, the limiter, the wait queues and the deployments cooling down.
//! The proxy and the batch dispatcher hold it; it knows nothing of either.

use crate::limits::limiter::Limiter;
use crate::limits::priority::RealtimeRates;
use crate::limits::queue::Queues;
use crate::metrics::Metrics;
use crate::providers::http::HttpClient;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct GatewayState {
    /// The current config snapshot; swapped whole on reload.
    pub runtime: ArcSwap<Runtime>,
    /// The upstream connection pool.
    pub http: Arc<HttpClient>,
    pub metrics: Metrics,
    /// Limit counters, local or shared (`limits.policy`, fixed at start). Kept across
    /// reloads: counters are keyed by rule identity, so changed numbers apply to the usage
    /// so far.
    pub limiter: Limiter,
    /// Requests waiting for headroom (`on_limit: queue`).
    pub queues: Queues,
    /// Realtime demand per counter, which batch work leaves room for.
    pub realtime: RealtimeRates,
    /// Deployments cooling down after a provider 429, by deployment id.
    pub cooldowns: Cooldowns,
    /// The last 15 minutes of traffic, for the status page's charts.
    pub history: crate::history::History,
    /// The trace exporter (`traces`), when configured; replaced when a reload changes it.
    pub tracer: arc_swap::ArcSwapOption<crate::telemetry::Tracer>,
}

impl GatewayState {
    /// Export traces as `config` says (at start and on every reload): a changed config
    /// starts a new exporter (the old one flushes what it holds), an unchanged one keeps
    /// its exporter, none stops tracing.
    pub fn set_traces(&self, config: Option<&crate::config::schema::TracesConfig>) {
        let current = self.tracer.load();
        if current.as_deref().map(|t| t.config()) == config {
            return;
        }
        let next = config.and_then(|c| {
            match crate::telemetry::Tracer::new(c, self.metrics.traces.clone()) {
                Ok(t) => {
                    tracing::info!(endpoint = %c.endpoint, sampling_ratio = c.sampling_ratio, "exporting traces");
                    Some(Arc::new(t))
                }
                Err(e) => {
                    tracing::error!("traces are off: {e}");
                    None
                }
            }
        });
        self.tracer.store(next);
    }
}

/// Why a deployment is left alone for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownReason {
    /// The provider said the key is over its limits (429, remaining 0) or out of credit.
    Limited,
    /// The provider refused the gateway's credentials (401/403).
    AuthRejected,
}

/// Until when each deployment that answered 429 (or 401/403, 402) is left alone.
#[derive(Default)]
pub struct Cooldowns(Mutex<HashMap<Arc<str>, (Instant, CooldownReason)>>);

impl Cooldowns {
    /// Every deployment cooling down, with the time left.
    pub fn all(&self) -> Vec<(Arc<str>, Duration)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.iter()
            .filter_map(|(id, (until, _))| Some((id.clone(), until.checked_duration_since(now)?)))
            .collect()
    }

    /// Time left in the deployment's cool-down and why, if it is cooling down.
    pub fn remaining(&self, id: &str) -> Option<(Duration, CooldownReason)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).and_then(|(until, why)| {
            until
                .checked_duration_since(Instant::now())
                .map(|left| (left, *why))
        })
    }

    pub fn start(&self, id: &Arc<str>, length: Duration, why: CooldownReason) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (until, _)| *until > now);
        map.insert(id.clone(), (now + length, why));
    }
}
