//! The process: the call core's shared state plus what only the HTTP side and the
//! process own (the batch store the Files/Batches API reads, the Responses API store, the
//! listener certificate),
//! and the hot reload that swaps the config snapshot ([`reload`]).

pub mod reload;

use crate::batch::backend::Backend;
use crate::gateway::GatewayState;
use crate::response_store::ResponseStore;
use crate::tls::ReloadableCert;
use std::ops::Deref;
use std::sync::Arc;

pub struct AppState {
    /// What the call core shares (snapshot, pool, metrics, limiter, queues, cool-downs);
    /// the batch dispatcher holds this, not the whole process.
    pub gateway: Arc<GatewayState>,
    /// The batch store (`None` when `batch.enabled` is off).
    pub batch: Option<Arc<dyn Backend>>,
    /// The Responses API store (`None` with `responses.store: off`).
    pub responses: Option<Arc<dyn ResponseStore>>,
    /// The proxy listener's certificate (with `server.tls`), swapped on reload.
    pub tls: Option<Arc<ReloadableCert>>,
    /// The brake on failed authentications (per client address and per user).
    pub auth_failures: std::sync::Mutex<crate::limits::auth_failures::AuthFailures>,
    /// The clock of `auth_failures` (seconds since it).
    pub started: std::time::Instant,
    /// The config file's own content (command-line overrides applied): the base the
    /// runtime snapshot is built on.
    pub file_config: arc_swap::ArcSwap<crate::config::Config>,
    /// What the Admin API adds to it ([`crate::config::overlay`]).
    pub overlay: arc_swap::ArcSwap<crate::config::overlay::Overlay>,
}

impl AppState {
    /// Build and swap in the runtime snapshot from the file's config and the overlay (a
    /// new generation).
    pub fn rebuild(&self) {
        let file = self.file_config.load();
        let overlay = self.overlay.load();
        let merged = crate::config::overlay::merge(&file, &overlay);
        let generation = self.runtime.load().generation + 1;
        self.runtime
            .store(Arc::new(crate::runtime::Runtime::build(merged, generation)));
        self.metrics.config_generation.set(generation as i64);
    }
}

impl Deref for AppState {
    type Target = GatewayState;
    fn deref(&self) -> &GatewayState {
        &self.gateway
    }
}
