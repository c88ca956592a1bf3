//! What the Admin API adds to the file's config: consumers, providers and models created
//! at runtime. The file
//! stays the base; the runtime snapshot is built from the file's config with the overlay
//! appended ([`merge`]), on every file reload and every API change, so neither undoes the
//! other. Keys in the overlay are digests only (`sha256:…` entries): the overlay never
//! holds a readable key.

use super::schema::{Config, ConsumerConfig, ModelConfig, ProviderSpec, RouteConfig};

/// The consumers the Admin API holds, as the runtime takes them (only their active keys).
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    /// The store's version this overlay was built from.
    pub version: u64,
    pub consumers: Vec<ConsumerConfig>,
    pub providers: Vec<ProviderSpec>,
    pub models: Vec<ModelConfig>,
    /// Routes (from APISIX objects the API took).
    pub routes: Vec<RouteConfig>,
}

/// The file's config with the overlay's objects after its own.
pub fn merge(file: &Config, overlay: &Overlay) -> Config {
    let mut c = file.clone();
    c.consumers.extend(overlay.consumers.iter().cloned());
    c.providers.extend(overlay.providers.iter().cloned());
    c.models.extend(overlay.models.iter().cloned());
    c.routes.extend(overlay.routes.iter().cloned());
    c
}
