//! Each provider kind's own checks of its settings in the config, behind
//! [`super::Provider::validate`]: the config (a leaf that knows no provider) runs them
//! through [`super::check`] as part of validation, so every problem is still named with
//! its path in one `check`. What every kind shares (a setting given to the wrong kind,
//! base URL syntax, headers) stays in `config::validate`.

use crate::config::schema::ProviderConfig;
use crate::config::ConfigProblem;

/// Problems found, each with its field's path under `providers[i]`.
pub struct Found<'a> {
    path: &'a str,
    pub problems: Vec<ConfigProblem>,
}

impl<'a> Found<'a> {
    pub fn new(path: &'a str) -> Found<'a> {
        Found {
            path,
            problems: Vec::new(),
        }
    }

    /// A problem with `field` (a path below the provider's).
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            path: format!("{}.{field}", self.path),
            message: message.into(),
        });
    }
}

/// The base URL is required when the kind has no default one.
pub fn base_url_required(p: &ProviderConfig, default: Option<String>, f: &mut Found<'_>) {
    if p.base_url.is_none() && default.is_none() {
        f.add("base_url", format!("required for kind {}", p.kind.as_str()));
    }
}

/// A cloud name (a region, project or location): letters, digits, `-` and `_`.
pub fn cloud_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Bedrock: a region, and either AWS keys or a Bedrock API key.
pub fn bedrock(p: &ProviderConfig, f: &mut Found<'_>) {
    match p.region.as_deref() {
        None => f.add("region", "required for kind bedrock"),
        Some(r) if !cloud_name_ok(r) => f.add("region", "must look like us-east-1"),
        _ => {}
    }
    match (&p.access_key_id, &p.secret_access_key, &p.api_key) {
        (Some(_), Some(_), None) | (None, None, Some(_)) => {}
        (Some(_), Some(_), Some(_)) => f.add(
            "api_key",
            "either AWS keys (access_key_id, secret_access_key) or a Bedrock api_key, not both",
        ),
        (Some(_), None, _) | (None, Some(_), _) => f.add(
            "secret_access_key",
            "access_key_id and secret_access_key go together",
        ),
        (None, None, None) => f.add(
            "access_key_id",
            "required for kind bedrock (or a Bedrock api_key)",
        ),
    }
    if p.session_token.is_some() && p.access_key_id.is_none() {
        f.add("session_token", "only with access_key_id");
    }
}

/// Vertex: a project and location (unless a base URL says where), and a readable
/// service-account key file, parsed as the token flow parses it.
pub fn vertex(p: &ProviderConfig, f: &mut Found<'_>) {
    for (field, value) in [("project", &p.project), ("location", &p.location)] {
        match value.as_deref() {
            None if p.base_url.is_none() => f.add(field, "required for kind vertex"),
            Some(v) if !cloud_name_ok(v) => f.add(field, "letters, digits, - and _ only"),
            _ => {}
        }
    }
    match &p.credentials_file {
        None => f.add("credentials_file", "required for kind vertex"),
        Some(file) => match std::fs::read_to_string(file) {
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
        },
    }
    if p.api_key.is_some() {
        f.add("api_key", "vertex authenticates with credentials_file");
    }
}

/// The mock: no base URL, and settings in range.
pub fn mock(p: &ProviderConfig, f: &mut Found<'_>) {
    if p.base_url.is_some() {
        f.add("base_url", "a mock provider has no base_url");
    }
    let Some(m) = &p.mock else { return };
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
pub fn azure(p: &ProviderConfig, f: &mut Found<'_>) {
    let bad = |v: &str| {
        v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if p.api_version.as_deref().is_some_and(bad) {
        f.add("api_version", "must look like 2024-10-21");
    }
}

/// The settings of a provider config only some kinds take (which ones: each kind's
/// `Provider::settings`), and whether each is set.
pub fn kind_settings(p: &ProviderConfig) -> [(&'static str, bool); 9] {
    [
        ("api_version", p.api_version.is_some()),
        ("mock", p.mock.is_some()),
        ("region", p.region.is_some()),
        ("access_key_id", p.access_key_id.is_some()),
        ("secret_access_key", p.secret_access_key.is_some()),
        ("session_token", p.session_token.is_some()),
        ("project", p.project.is_some()),
        ("location", p.location.is_some()),
        ("credentials_file", p.credentials_file.is_some()),
    ]
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
