//! The checks a change of providers, models or APISIX objects passes before it is stored:
//! the config it would make, checked as the file is; and a provider's URL against the
//! egress policy.

use super::store::Snapshot;
use super::{now, AdminApi, ApiError};
use serde_json::Value;

/// A provider's URL reaches only public addresses (or the allowed networks).
pub async fn egress(api: &AdminApi, body: &Value) -> Result<(), ApiError> {
    let Some(url) = body["base_url"].as_str() else {
        return Ok(());
    };
    let allow = api
        .state
        .runtime
        .load()
        .config
        .admin
        .provider_allow_networks
        .clone();
    let policy = crate::egress::EgressPolicy::new(&allow);
    let base = policy
        .parse(url)
        .map_err(|e| ApiError::invalid(e.to_string(), "base_url"))?;
    policy
        .resolve(&base)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::invalid(format!("{e} (admin.provider_allow_networks)"), "base_url"))
}

/// The config the store would make after `snap`, checked as the file is: the first
/// problem it has that the current one does not.
pub async fn config(api: &AdminApi, snap: &Snapshot) -> Result<(), ApiError> {
    let (next, _) = super::overlay::build(snap, now());
    let current = api.state.overlay.load_full();
    let file = api.state.file_config.load_full();
    tokio::task::spawn_blocking(move || {
        let check = |o: &crate::config::overlay::Overlay| {
            crate::config::validate::validate(
                &crate::config::overlay::merge(&file, o),
                crate::providers::check,
            )
        };
        let before: Vec<String> = check(&current).into_iter().map(|p| p.to_string()).collect();
        match check(&next)
            .into_iter()
            .find(|p| !before.contains(&p.to_string()))
        {
            Some(p) => Err(ApiError::invalid(p.message, &p.path)),
            None => Ok(()),
        }
    })
    .await
    .map_err(ApiError::internal)?
}
