//! The status page's and the Admin API's settings (`admin` in gateway.yaml).

use super::{BatchStoreKind, Secret};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The status page and the Admin API (both on the metrics listener).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Key for `/status` (`Authorization: Bearer <key>` or `?key=`); unset: the page is off.
    pub key: Option<Secret>,
    /// Keys of the Admin API (`/admin/…`, `X-API-KEY` or `Authorization: Bearer`), each
    /// with an id (named in the audit log) and a role; none: the Admin API is off.
    pub keys: Vec<AdminKeyConfig>,
    /// Where the Admin API keeps what it creates (restart to change): `sqlite` (one file
    /// in `data_dir`, this instance), `redis` (the limits' Redis, shared by every
    /// instance), or `auto` (`redis` when the limits policy is `redis` or
    /// `redis-cluster`, else `sqlite`).
    pub store: BatchStoreKind,
    /// Where the SQLite store lives (restart to change).
    pub data_dir: PathBuf,
    /// Networks a provider created through the Admin API may reach besides public
    /// addresses (CIDR; none by default: no loopback, private or metadata address).
    #[schemars(with = "Vec<String>")]
    pub provider_allow_networks: Vec<ipnet::IpNet>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            key: None,
            keys: Vec::new(),
            store: BatchStoreKind::default(),
            data_dir: PathBuf::from("data"),
            provider_allow_networks: Vec::new(),
        }
    }
}

/// One key of the Admin API.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyConfig {
    /// Its name in the audit log (never the key).
    pub id: String,
    /// The key: the value, `${ENV_VAR}`, or `sha256:<64 hex digits>` of it.
    pub key: Secret,
    /// `admin` (read and write) or `viewer` (read only).
    #[serde(default)]
    pub role: AdminRole,
}

/// What an Admin API key may do.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    #[default]
    Admin,
    Viewer,
}
