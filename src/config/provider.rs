//! A provider as the gateway runs it: what every kind shares, and the settings of its own
//! kind only, as a tagged enum ([`KindConfig`]). The file and the Admin API write a
//! provider flat ([`ProviderSpec`]: serde's `deny_unknown_fields` cannot be combined with a
//! flattened tagged enum, and a flat shape lets validation name every problem with its
//! path); [`ProviderConfig::from_spec`] sorts it, naming each setting given to a kind that
//! does not take it and each one a kind requires. The checks of the values themselves
//! (syntax, a readable key file) are each provider module's `Provider::validate`.

use super::schema::{MockConfig, ProviderKind, ProviderSpec, Secret};
use super::ConfigProblem;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A provider: where it is, the key to use, and its kind with that kind's settings.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    /// Base URL up to and including the version segment (`None`: the kind's default).
    pub base_url: Option<String>,
    /// The provider key (a deployment may name its own).
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream.
    pub headers: BTreeMap<String, String>,
    /// Pass the provider's own rate-limit headers on to clients.
    pub pass_ratelimit_headers: bool,
    pub kind: KindConfig,
}

/// A provider's kind, with the settings only that kind takes.
#[derive(Debug, Clone)]
pub enum KindConfig {
    Openai,
    OpenaiCompatible,
    Anthropic,
    Gemini,
    /// `api_version`: the classic deployment URLs' `api-version` (`None`: `/openai/v1`).
    Azure {
        api_version: Option<String>,
    },
    Vertex(VertexConfig),
    Bedrock(BedrockConfig),
    Mock(MockConfig),
}

/// Vertex AI's settings.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// The Google Cloud project and location (both may be unset when `base_url` says
    /// where).
    pub project: Option<String>,
    pub location: Option<String>,
    /// The service-account JSON key file tokens are fetched with.
    pub credentials_file: PathBuf,
}

/// AWS Bedrock's settings.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    pub region: String,
    /// AWS keys to sign with; `None`: the provider's `api_key` is a Bedrock API key.
    pub keys: Option<AwsKeys>,
}

/// An AWS access key and its secret (and the session token of temporary credentials).
#[derive(Debug, Clone)]
pub struct AwsKeys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Problems found, each with its field's path under a provider's (`providers[i]`).
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

impl KindConfig {
    /// The kind, as the file names it.
    pub fn kind(&self) -> ProviderKind {
        match self {
            KindConfig::Openai => ProviderKind::Openai,
            KindConfig::OpenaiCompatible => ProviderKind::OpenaiCompatible,
            KindConfig::Anthropic => ProviderKind::Anthropic,
            KindConfig::Gemini => ProviderKind::Gemini,
            KindConfig::Azure { .. } => ProviderKind::Azure,
            KindConfig::Vertex(_) => ProviderKind::Vertex,
            KindConfig::Bedrock(_) => ProviderKind::Bedrock,
            KindConfig::Mock(_) => ProviderKind::Mock,
        }
    }
}

impl ProviderConfig {
    /// The typed provider of a spec, or every problem of its kind's settings, each with
    /// its path under `path` (`providers[i]`).
    pub fn from_spec(s: &ProviderSpec, path: &str) -> Result<ProviderConfig, Vec<ConfigProblem>> {
        let mut f = Found::new(path);
        for (field, owner, set) in [
            ("api_version", ProviderKind::Azure, s.api_version.is_some()),
            ("mock", ProviderKind::Mock, s.mock.is_some()),
            ("region", ProviderKind::Bedrock, s.region.is_some()),
            (
                "access_key_id",
                ProviderKind::Bedrock,
                s.access_key_id.is_some(),
            ),
            (
                "secret_access_key",
                ProviderKind::Bedrock,
                s.secret_access_key.is_some(),
            ),
            (
                "session_token",
                ProviderKind::Bedrock,
                s.session_token.is_some(),
            ),
            ("project", ProviderKind::Vertex, s.project.is_some()),
            ("location", ProviderKind::Vertex, s.location.is_some()),
            (
                "credentials_file",
                ProviderKind::Vertex,
                s.credentials_file.is_some(),
            ),
        ] {
            if set && owner != s.kind {
                let owner = owner.as_str();
                f.add(
                    field,
                    format!("only a provider of kind {owner} takes {field}"),
                );
            }
        }
        let kind = match s.kind {
            ProviderKind::Openai => Some(KindConfig::Openai),
            ProviderKind::OpenaiCompatible => Some(KindConfig::OpenaiCompatible),
            ProviderKind::Anthropic => Some(KindConfig::Anthropic),
            ProviderKind::Gemini => Some(KindConfig::Gemini),
            ProviderKind::Azure => Some(KindConfig::Azure {
                api_version: s.api_version.clone(),
            }),
            ProviderKind::Vertex => vertex(s, &mut f).map(KindConfig::Vertex),
            ProviderKind::Bedrock => bedrock(s, &mut f).map(KindConfig::Bedrock),
            ProviderKind::Mock => Some(KindConfig::Mock(s.mock.clone().unwrap_or_default())),
        };
        match kind {
            Some(kind) if f.problems.is_empty() => Ok(ProviderConfig {
                name: s.name.clone(),
                base_url: s.base_url.clone(),
                api_key: s.api_key.clone(),
                headers: s.headers.clone(),
                pass_ratelimit_headers: s.pass_ratelimit_headers,
                kind,
            }),
            _ => Err(f.problems),
        }
    }

    /// Every secret it holds: its key, and AWS's secret key and session token.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        let aws = match &self.kind {
            KindConfig::Bedrock(BedrockConfig { keys: Some(k), .. }) => {
                [Some(&k.secret_access_key), k.session_token.as_ref()]
            }
            _ => [None, None],
        };
        self.api_key.iter().chain(aws.into_iter().flatten())
    }
}

/// Vertex: a project and location (unless a base URL says where) and a key file; a key
/// file is how it authenticates, so not an `api_key`.
fn vertex(s: &ProviderSpec, f: &mut Found<'_>) -> Option<VertexConfig> {
    if s.base_url.is_none() {
        for (field, value) in [("project", &s.project), ("location", &s.location)] {
            if value.is_none() {
                f.add(field, "required for kind vertex");
            }
        }
    }
    if s.api_key.is_some() {
        f.add("api_key", "vertex authenticates with credentials_file");
    }
    let Some(file) = &s.credentials_file else {
        f.add("credentials_file", "required for kind vertex");
        return None;
    };
    Some(VertexConfig {
        project: s.project.clone(),
        location: s.location.clone(),
        credentials_file: file.clone(),
    })
}

/// Bedrock: a region, and either AWS keys or a Bedrock API key.
fn bedrock(s: &ProviderSpec, f: &mut Found<'_>) -> Option<BedrockConfig> {
    if s.region.is_none() {
        f.add("region", "required for kind bedrock");
    }
    let keys = match (&s.access_key_id, &s.secret_access_key, &s.api_key) {
        (Some(id), Some(secret), None) => Some(AwsKeys {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: s.session_token.clone(),
        }),
        (None, None, Some(_)) => None,
        (Some(_), Some(_), Some(_)) => {
            f.add(
                "api_key",
                "either AWS keys (access_key_id, secret_access_key) or a Bedrock api_key, not both",
            );
            None
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            f.add(
                "secret_access_key",
                "access_key_id and secret_access_key go together",
            );
            None
        }
        (None, None, None) => {
            f.add(
                "access_key_id",
                "required for kind bedrock (or a Bedrock api_key)",
            );
            None
        }
    };
    if s.session_token.is_some() && s.access_key_id.is_none() {
        f.add("session_token", "only with access_key_id");
    }
    Some(BedrockConfig {
        region: s.region.clone()?,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ProviderSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        match ProviderConfig::from_spec(&spec(yaml), "providers[0]") {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_kind_gets_only_its_settings() {
        let p = ProviderConfig::from_spec(
            &spec("{name: b, kind: bedrock, region: us-east-1, access_key_id: A, secret_access_key: S, session_token: T}"),
            "p",
        )
        .unwrap();
        let KindConfig::Bedrock(b) = &p.kind else {
            panic!("{p:?}")
        };
        assert_eq!(b.region, "us-east-1");
        let keys = b.keys.as_ref().unwrap();
        assert_eq!(keys.access_key_id.expose(), "A");
        assert_eq!(
            p.secrets().map(Secret::expose).collect::<Vec<_>>(),
            ["S", "T"]
        );
        let p = ProviderConfig::from_spec(
            &spec("{name: b, kind: bedrock, region: eu-west-1, api_key: K}"),
            "p",
        )
        .unwrap();
        assert!(matches!(
            &p.kind,
            KindConfig::Bedrock(BedrockConfig { keys: None, .. })
        ));
        let p = ProviderConfig::from_spec(&spec("{name: m, kind: mock}"), "p").unwrap();
        assert!(matches!(&p.kind, KindConfig::Mock(m) if m.completion_tokens == 16));
        let p = ProviderConfig::from_spec(
            &spec("{name: a, kind: azure, base_url: 'https://x', api_version: 2024-10-21}"),
            "p",
        )
        .unwrap();
        assert!(matches!(&p.kind, KindConfig::Azure { api_version: Some(v) } if v == "2024-10-21"));
        assert_eq!(p.kind.kind(), ProviderKind::Azure);
    }

    #[test]
    fn every_misplaced_or_missing_setting_is_named() {
        assert_eq!(
            problems("{name: a, kind: openai, region: x, credentials_file: f}"),
            [
                "providers[0].region: only a provider of kind bedrock takes region",
                "providers[0].credentials_file: only a provider of kind vertex takes credentials_file",
            ]
        );
        assert_eq!(
            problems("{name: a, kind: bedrock, secret_access_key: s, session_token: t}"),
            [
                "providers[0].region: required for kind bedrock",
                "providers[0].secret_access_key: access_key_id and secret_access_key go together",
                "providers[0].session_token: only with access_key_id",
            ]
        );
        assert_eq!(
            problems("{name: v, kind: vertex, base_url: 'https://x', api_key: k}"),
            [
                "providers[0].api_key: vertex authenticates with credentials_file",
                "providers[0].credentials_file: required for kind vertex",
            ]
        );
    }
}
