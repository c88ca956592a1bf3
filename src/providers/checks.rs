//! Each provider kind's own checks of its settings in the config, behind
//! [`super::Provider::validate`]: the config (a leaf that knows no provider) runs them
//! through [`super::check`] as part of validation, so every problem is still named with
//! its path in one `check`. Which settings a kind takes (and requires) is the typed
//! config's (`config::provider`); what every kind shares (base URL syntax, headers) stays
//! in `config::validate`.

pub use crate::config::provider::Found;
use crate::config::provider::{BedrockConfig, ProviderConfig, VertexConfig};
use crate::config::schema::MockConfig;

/// The base URL is required when the kind has no default one.
pub fn base_url_required(p: &ProviderConfig, default: Option<String>, f: &mut Found<'_>) {
    if p.base_url.is_none() && default.is_none() {
        f.add(
            "base_url",
            format!("required for kind {}", p.kind.kind().as_str()),
        );
    }
}

/// A cloud name (a region, project or location): letters, digits, `-` and `_`.
pub fn cloud_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Bedrock: a region as AWS writes one.
pub fn bedrock(b: &BedrockConfig, f: &mut Found<'_>) {
    if !cloud_name_ok(&b.region) {
        f.add("region", "must look like us-east-1");
    }
}

/// Vertex: project and location as Google writes them, and a readable service-account
/// key file, parsed as the token flow parses it.
pub fn vertex(v: &VertexConfig, f: &mut Found<'_>) {
    for (field, value) in [("project", &v.project), ("location", &v.location)] {
        if value.as_deref().is_some_and(|v| !cloud_name_ok(v)) {
            f.add(field, "letters, digits, - and _ only");
        }
    }
    let file = &v.credentials_file;
    match std::fs::read_to_string(file) {
        Err(e) => f.add(
            "credentials_file",
            format!("cannot read {}: {e}", file.display()),
        ),
        Ok(text) => match super::google_auth::ServiceAccount::parse(&text) {
            Err(e) => f.add("credentials_file", e),
            Ok(sa) if sa.client_email.is_empty() => {
                f.add("credentials_file", "client_email is empty")
            }
            Ok(_) => {}
        },
    }
}

/// The mock: no base URL, and settings in range.
pub fn mock(p: &ProviderConfig, m: &MockConfig, f: &mut Found<'_>) {
    if p.base_url.is_some() {
        f.add("base_url", "a mock provider has no base_url");
    }
    if !(m.tokens_per_second >= 0.0 && m.tokens_per_second.is_finite()) {
        f.add("mock.tokens_per_second", "must be a number >= 0");
    }
    if m.embedding_dimensions == 0 || m.embedding_dimensions > 8192 {
        f.add("mock.embedding_dimensions", "must be 1..=8192");
    }
    if let Some(fail) = &m.failure {
        if !(400..=599).contains(&fail.status) {
            f.add("mock.failure.status", "must be 400..=599");
        }
        if fail.every == 0 {
            f.add("mock.failure.every", "must be at least 1");
        }
    }
}

/// Azure: `api-version` as Azure writes it.
pub fn azure(api_version: Option<&str>, f: &mut Found<'_>) {
    let bad = |v: &str| {
        v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if api_version.is_some_and(bad) {
        f.add("api_version", "must look like 2024-10-21");
    }
}

#[cfg(test)]
mod tests {
    fn problems(providers: &str) -> Vec<String> {
        let yaml = format!("auth: {{enabled: false}}\nproviders: {providers}\n");
        match crate::config::parse_str_with_env(&yaml, "t", &|_| None, crate::providers::check) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_kind_checks_its_own_settings_with_paths() {
        let found = problems(
            "[{name: a, kind: bedrock}, {name: b, kind: vertex, api_key: k}, \
             {name: c, kind: openai-compatible}, {name: d, kind: azure, base_url: 'https://x', api_version: 'v 1'}, \
             {name: e, kind: mock, base_url: 'https://x', mock: {embedding_dimensions: 0}}]",
        );
        for want in [
            "providers[0].region: required for kind bedrock",
            "providers[0].access_key_id: required for kind bedrock (or a Bedrock api_key)",
            "providers[1].project: required for kind vertex",
            "providers[1].credentials_file: required for kind vertex",
            "providers[1].api_key: vertex authenticates with credentials_file",
            "providers[2].base_url: required for kind openai-compatible",
            "providers[3].api_version: must look like 2024-10-21",
            "providers[4].base_url: a mock provider has no base_url",
            "providers[4].mock.embedding_dimensions: must be 1..=8192",
        ] {
            assert!(
                found.iter().any(|p| p == want),
                "{want} missing from {found:#?}"
            );
        }
    }

    #[test]
    fn a_setting_of_another_kind_is_named() {
        let found = problems("[{name: a, kind: openai, region: us-east-1, mock: {}}]");
        assert!(
            found.contains(
                &"providers[0].region: only a provider of kind bedrock takes region".into()
            ),
            "{found:#?}"
        );
        assert!(
            found.contains(&"providers[0].mock: only a provider of kind mock takes mock".into()),
            "{found:#?}"
        );
        assert!(problems("[{name: a, kind: openai}]").is_empty());
    }
}
