//! Configuration: `gateway.yaml` → schema structs → validation. A leaf of the module
//! graph: it knows the file's language, not the parts it configures.
//!
//! - [`schema`]: the file's shape (serde, `deny_unknown_fields`).
//! - [`env`]: `${VAR}` / `${VAR:-default}` substitution, done on parsed YAML values so a
//!   secret can never inject YAML syntax.
//! - [`cost_expr`]: ai-rate-limiting's `cost_expr` arithmetic, parsed and checked here,
//!   evaluated by `limits` over each answer's usage fields.
//! - [`key`]: the limit-key template language (`$consumer_name $http_x_user`), parsed
//!   here so validation can name a bad key's path; `limits` evaluates it per request.
//! - [`shape`]: every unknown field and wrongly typed value, in one pass.
//! - [`validate`]: every problem, each with its path (`models[2].deployments[0].provider`).
//!
//! The compiled snapshot the request path reads is [`crate::runtime`]; the hot reload
//! that swaps it is [`crate::state::reload`].

pub mod cost_expr;
pub mod digest;
pub mod env;
pub mod key;
pub mod overlay;
pub mod paths;
pub mod prices;
pub mod provider;
pub mod reference;
pub mod schema;
pub mod shape;
pub mod validate;

use std::path::Path;

pub use schema::Config;

/// Each provider kind's checks of its own settings, for validation: the provider modules
/// make them (`crate::providers::check`); the config, a leaf, knows no provider.
pub type KindChecks = fn(&provider::ProviderConfig, &str) -> Vec<ConfigProblem>;

/// One problem found in a config file, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in {source_name}:\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    fn single(source_name: &str, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            source_name: source_name.to_string(),
            problems: vec![ConfigProblem {
                path: path.to_string(),
                message: message.into(),
            }],
        }
    }
}

/// Parse, substitute, deserialize and validate config text.
pub fn parse_str(
    text: &str,
    source_name: &str,
    kind_checks: KindChecks,
) -> Result<Config, ConfigError> {
    let env_lookup = |name: &str| std::env::var(name).ok();
    parse_str_with_env(text, source_name, &env_lookup, kind_checks)
}

/// [`parse_str`] with an explicit environment (for tests).
pub fn parse_str_with_env(
    text: &str,
    source_name: &str,
    env_lookup: &dyn Fn(&str) -> Option<String>,
    kind_checks: KindChecks,
) -> Result<Config, ConfigError> {
    parse_in(text, source_name, env_lookup, None, kind_checks)
}

/// Parse config text whose relative paths are relative to `base` (the file's directory),
/// resolved before validation reads any of them.
fn parse_in(
    text: &str,
    source_name: &str,
    env_lookup: &dyn Fn(&str) -> Option<String>,
    base: Option<&Path>,
    kind_checks: KindChecks,
) -> Result<Config, ConfigError> {
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::single(source_name, "", format!("invalid YAML: {e}")))?;
    if value.is_null() {
        value = serde_yaml_ng::Value::Mapping(Default::default());
    }
    let problems = env::substitute(&mut value, env_lookup);
    if !problems.is_empty() {
        return Err(ConfigError {
            source_name: source_name.to_string(),
            problems,
        });
    }
    let mut config: Config = match shape::deserialize(value) {
        Ok(c) => c,
        // The file's other problems too, as validation finds them in the rest of it.
        Err(shape::Problems { mut problems, rest }) => {
            if let Some(mut rest) = rest {
                resolve_paths(&mut rest, base);
                problems.extend(validate::validate(&rest, kind_checks));
            }
            return Err(ConfigError {
                source_name: source_name.to_string(),
                problems,
            });
        }
    };
    resolve_paths(&mut config, base);
    let problems = validate::validate(&config, kind_checks);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            source_name: source_name.to_string(),
            problems,
        })
    }
}

/// Relative paths of `config` made relative to `base` (the file's directory).
fn resolve_paths(config: &mut Config, base: Option<&Path>) {
    if let Some(dir) = base {
        for (_, p) in config.paths_mut() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// Read and parse a config file.
pub fn load_file(path: &Path, kind_checks: KindChecks) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::single(&name, "", format!("cannot read file: {e}")))?;
    // Relative paths in the file are relative to the file's directory, not to the
    // working directory: two configs started from one directory never share a store.
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => Path::new("."),
    };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let env_lookup = |name: &str| std::env::var(name).ok();
    parse_in(&text, &name, &env_lookup, Some(&dir), kind_checks)
}
