//! Where the Admin API keeps what it creates: SQLite in `admin.data_dir` ([`sqlite`], one
//! instance) or the limits' Redis ([`redis`], shared by every instance). Consumers are
//! stored as their JSON spec; keys only as the SHA-256 digest of the key, with a short
//! public prefix to recognise them; every change is written atomically with its audit
//! entry and a bump of the store's version, which instances compare to know they are
//! behind.

pub mod redis;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// A stored consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerRow {
    pub name: String,
    /// Its spec as JSON text (see `consumers::Spec`).
    pub spec: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub version: u64,
}

/// A stored key: never the key, only its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub consumer: String,
    /// The SHA-256 of the key, hex (shown by no view: see `consumers::key_view`).
    pub digest: String,
    pub prefix: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// A stored provider or model: the client's JSON as validated (a provider's credentials
/// included: the gateway needs them to call it; no view shows them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectRow {
    /// `provider` or `model`.
    pub kind: String,
    pub name: String,
    pub body: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub version: u64,
}

impl ObjectRow {
    /// Its field in the store (`provider/openai-eu`).
    pub fn field(kind: &str, name: &str) -> String {
        format!("{kind}/{name}")
    }
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: u64,
    pub at: u64,
    /// The admin key's id.
    pub actor: String,
    pub action: String,
    pub object: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One change, written with its audit row in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub upsert_consumer: Option<ConsumerRow>,
    pub delete_consumer: Option<String>,
    pub insert_key: Option<KeyRow>,
    /// A key with a new expiry (rotation's grace) or revocation time.
    pub update_key: Option<KeyRow>,
    pub upsert_object: Option<ObjectRow>,
    /// (kind, name) of an object to delete.
    pub delete_object: Option<(String, String)>,
    /// `upsert_consumer` (or `upsert_object`) creates: refused if the name exists
    /// (another instance made it).
    pub create: bool,
    pub audit: (String, String, String, Option<String>, Option<String>),
}

/// Everything stored.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub consumers: Vec<ConsumerRow>,
    pub keys: Vec<KeyRow>,
    pub objects: Vec<ObjectRow>,
}

/// The store in use.
pub enum Store {
    Sqlite(sqlite::Sqlite),
    Redis(redis::Redis),
}

impl Store {
    /// Write `change` and its audit entry: the store's new version (`None`: a create
    /// whose name exists).
    pub async fn apply(&self, change: Change) -> Result<Option<u64>, String> {
        match self {
            Store::Sqlite(s) => s.apply(change).await,
            Store::Redis(r) => r.apply(change).await,
        }
    }

    /// Audit entries after `after` (oldest first), at most `limit`.
    pub async fn audit(&self, after: u64, limit: u64) -> Result<Vec<AuditRow>, String> {
        match self {
            Store::Sqlite(s) => s.audit(after, limit).await,
            Store::Redis(r) => r.audit(after, limit).await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Redis(_) => "redis",
        }
    }
}
