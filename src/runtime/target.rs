//! Where a provider's requests go: over HTTP to its base URL (with the headers its config
//! adds), or to an upstream in the gateway's process (the mock), as its `Provider` says.

use crate::config::provider::ProviderConfig;
use crate::providers::api::InProcess;
use crate::providers::openai::OPENAI_BASE_URL;
use crate::url::BaseUrl;
use std::sync::Arc;

/// Where a provider's requests go.
#[derive(Debug)]
pub enum Target {
    Http {
        base: BaseUrl,
        headers: Vec<crate::providers::http::Header>,
    },
    /// An upstream in the gateway's process (the mock).
    InProcess(Arc<dyn InProcess>),
}

impl Target {
    /// The target of a validated provider config, spoken to through `api`.
    pub fn of(p: &ProviderConfig, api: &dyn crate::providers::Provider) -> Target {
        if let Some(upstream) = api.in_process(p) {
            return Target::InProcess(upstream);
        }
        // Validation has parsed the URL (and required it where there is no default).
        let url = p.base_url.clone().or(api.default_base_url(p));
        let base = BaseUrl::parse(url.as_deref().unwrap_or(OPENAI_BASE_URL))
            .unwrap_or_else(|_| BaseUrl::parse(OPENAI_BASE_URL).expect("constant URL"));
        // Validation has checked the names and values.
        let headers = p
            .headers
            .iter()
            .filter_map(|(k, v)| {
                let name = http::HeaderName::try_from(k.as_str()).ok()?;
                crate::providers::http::header(name, v).ok()
            })
            .collect();
        Target::Http { base, headers }
    }
}
