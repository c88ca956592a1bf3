//! State shared by every service of one gateway process.

use crate::config::Runtime;
use crate::limits::local::LocalStore;
use crate::metrics::Metrics;
use crate::providers::http::HttpClient;
use arc_swap::ArcSwap;
use std::sync::Arc;

pub struct GatewayState {
    /// The current config snapshot; swapped whole on reload.
    pub runtime: ArcSwap<Runtime>,
    /// The upstream connection pool.
    pub http: Arc<HttpClient>,
    pub metrics: Metrics,
    /// Limit counters (local policy). Kept across reloads: counters are keyed by rule
    /// identity, so changed numbers apply to the usage so far.
    pub limits: Arc<LocalStore>,
}
