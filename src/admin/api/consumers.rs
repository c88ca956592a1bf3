//! Consumers and their keys through the Admin API: the JSON shapes, their validation (the
//! limits by the same rules as `gateway.yaml`, checked on the config they would make), and
//! the overlay the runtime takes from what is stored (active keys only, as digests).

use super::store::{ConsumerRow, KeyRow};
use super::ApiError;
use crate::config::schema::{Config, ConsumerConfig, LimitRuleConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Largest `metadata` object, as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Most consumers the API holds (each a row in every instance's snapshot).
pub const MAX_CONSUMERS: usize = 100_000;
/// Most keys (active or not) one consumer may hold.
pub const MAX_KEYS_PER_CONSUMER: usize = 64;

/// What a consumer is, beyond its name.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Limits of every kind, with `gateway.yaml`'s schema and rules.
    #[serde(default)]
    pub limits: Vec<LimitRuleConfig>,
    /// Free-form labels (at most 16 KiB of JSON).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// A disabled consumer's keys are refused.
    #[serde(default)]
    pub disabled: bool,
    /// Unix seconds after which its keys are refused.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The models it may use (empty: every model).
    #[serde(default)]
    pub models: Vec<String>,
}

/// `POST /admin/consumers`: a name and a spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    pub name: String,
    #[serde(default)]
    pub limits: Vec<LimitRuleConfig>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub models: Vec<String>,
}

impl Create {
    pub fn split(self) -> (String, Spec) {
        let spec = Spec {
            limits: self.limits,
            metadata: self.metadata,
            disabled: self.disabled,
            expires_at: self.expires_at,
            models: self.models,
        };
        (self.name, spec)
    }
}

/// `POST …/keys`: an optional expiry; or an imported key (`key`), stored as its digest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub expires_at: Option<u64>,
    pub key: Option<String>,
}

/// `POST …/keys/{id}/rotate`: how long the old key keeps working (seconds, at most 30 days).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    #[serde(default)]
    pub grace_seconds: u64,
}

/// A consumer or key name: 1–64 of letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name must be 1 to 64 letters, digits, '.', '_' or '-'",
            "name",
        ))
    }
}

/// Parse a JSON body into `T`, naming the field serde complains about.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v: Value = serde_json::from_slice(if body.is_empty() { b"{}" } else { body })
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}"), ""))?;
    if !v.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object", ""));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ApiError::invalid(e.inner().to_string(), &path)
    })
}

/// Check a spec: its metadata's size, and its limits on the config it would make (the
/// file's, with this consumer added), the problems named by their path in the spec.
pub fn check_spec(name: &str, spec: &Spec, file: &Config) -> Result<(), ApiError> {
    if serde_json::to_vec(&spec.metadata).map_or(0, |b| b.len()) > MAX_METADATA_BYTES {
        return Err(ApiError::invalid("metadata is over 16 KiB", "metadata"));
    }
    if let Some(i) = spec
        .models
        .iter()
        .position(|m| m.is_empty() || m.len() > 256)
    {
        return Err(ApiError::invalid(
            "a model name of 1 to 256 bytes",
            &format!("models[{i}]"),
        ));
    }
    let mut c = file.clone();
    let at = c.consumers.len();
    c.consumers.push(ConsumerConfig {
        name: name.to_string(),
        keys: Vec::new(),
        basic_auth: Vec::new(),
        limits: spec.limits.clone(),
        models: spec.models.clone(),
    });
    let prefix = format!("consumers[{at}].");
    let problem = crate::config::validate::validate(&c, crate::providers::check)
        .into_iter()
        .find_map(|p| Some((p.path.strip_prefix(&prefix)?.to_string(), p.message)));
    match problem {
        Some((path, message)) => Err(ApiError::invalid(message, &path)),
        None => Ok(()),
    }
}

/// A consumer as the API shows it.
pub fn view(row: &ConsumerRow, keys: &[&KeyRow]) -> Value {
    let spec: Value = serde_json::from_str(&row.spec).unwrap_or(Value::Null);
    json!({"object": "consumer", "name": row.name, "source": "api",
        "limits": spec["limits"], "metadata": spec["metadata"], "disabled": spec["disabled"],
        "expires_at": spec["expires_at"], "models": spec["models"], "created_at": row.created_at,
        "updated_at": row.updated_at, "version": row.version,
        "keys": keys.iter().map(|k| key_view(k)).collect::<Vec<_>>()})
}

/// A consumer of the file as the API shows it (read-only; its keys never shown).
pub fn file_view(c: &ConsumerConfig) -> Value {
    json!({"object": "consumer", "name": c.name, "source": "file",
        "limits": serde_json::to_value(&c.limits).unwrap_or(Value::Null),
        "metadata": {}, "disabled": false, "expires_at": null, "models": c.models, "keys": []})
}

/// A key as the API shows it: its id and public prefix, never the key.
pub fn key_view(k: &KeyRow) -> Value {
    let state = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= super::now()) {
        "expired"
    } else {
        "active"
    };
    json!({"object": "consumer.key", "id": k.id, "prefix": k.prefix, "state": state,
        "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at})
}

/// A new key: `sk-gw-` and 40 random letters and digits (238 bits).
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::from("sk-gw-");
    while out.len() < 46 {
        let b: u8 = rand::random();
        // 248 = 4 × 62: no bias.
        if b < 248 {
            out.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = generate_key();
        assert!(a.starts_with("sk-gw-") && a.len() == 46);
        assert_ne!(a, generate_key());
        assert!(check_name("team-a.v2_x").is_ok());
        for bad in ["", "a/b", "../x", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
