//! State shared by every service of one gateway process.

use crate::config::Runtime;
use crate::limits::limiter::Limiter;
use crate::limits::queue::Queues;
use crate::metrics::Metrics;
use crate::providers::http::HttpClient;
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
    pub realtime: crate::limits::priority::RealtimeRates,
    /// The batch store (`None` when `batch.enabled` is off).
    pub batch: Option<Arc<dyn crate::batch::backend::Backend>>,
    /// Deployments cooling down after a provider 429, by deployment id.
    pub cooldowns: Cooldowns,
    /// The proxy listener's certificate (with `server.tls`), swapped on reload.
    pub tls: Option<Arc<crate::tls::ReloadableCert>>,
}

/// Until when each deployment that answered 429 is left alone.
#[derive(Default)]
pub struct Cooldowns(Mutex<HashMap<Arc<str>, Instant>>);

impl Cooldowns {
    /// Every deployment cooling down, with the time left.
    pub fn all(&self) -> Vec<(Arc<str>, Duration)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.iter()
            .filter_map(|(id, until)| Some((id.clone(), until.checked_duration_since(now)?)))
            .collect()
    }

    /// Time left in the deployment's cool-down, if any.
    pub fn remaining(&self, id: &str) -> Option<Duration> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .and_then(|until| until.checked_duration_since(Instant::now()))
    }

    pub fn start(&self, id: &Arc<str>, length: Duration) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, until| *until > now);
        map.insert(id.clone(), now + length);
    }
}
