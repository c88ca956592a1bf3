//! The `batch` section of `gateway.yaml`.

use super::*;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BatchStoreKind {
    #[default]
    Auto,
    Sqlite,
    Redis,
}

/// The batch module.
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Serve the Files and Batches API and run the dispatcher (restart to change).
    pub enabled: bool,
    /// Where batches live (restart to change): `sqlite` (one file in `data_dir`), `redis`
    /// (the limits' Redis, shared by every instance), or `auto` (`redis` when the limits
    /// policy is `redis` or `redis-cluster`, else `sqlite`).
    pub store: BatchStoreKind,
    /// Where the SQLite store and the files live (restart to change).
    pub data_dir: PathBuf,
    /// Batch requests running at once, all models together (hot-reloadable).
    pub concurrency: usize,
    /// Batch requests running at once per model (the batch's queue), for the models
    /// listed (hot-reloadable); the others share `concurrency`.
    pub model_concurrency: BTreeMap<String, usize>,
    /// Attempts per request on a provider 429/5xx before its error line is written.
    pub max_attempts: u32,
    /// Largest uploaded file.
    pub max_file_bytes: u64,
    /// Most bytes of files (uploads and results) one consumer may keep; past it an upload
    /// is refused like OpenAI's storage limit.
    pub consumer_quota_bytes: u64,
    /// How long batch files (inputs, outputs, errors) and an ended batch's requests and
    /// results are kept before the sweep deletes them.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub retention: Duration,
    /// Webhook bodies are signed with it: `X-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub webhook_secret: Option<Secret>,
    /// Networks webhooks may reach although they are internal (loopback, private,
    /// link-local, …), e.g. `[10.1.2.0/24]`; see docs/batches.md.
    #[schemars(with = "Vec<String>")]
    pub webhook_allow_networks: Vec<ipnet::IpNet>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            enabled: true,
            store: BatchStoreKind::Auto,
            data_dir: PathBuf::from("data"),
            concurrency: 16,
            model_concurrency: Default::default(),
            max_attempts: 3,
            max_file_bytes: 200 * 1024 * 1024,
            consumer_quota_bytes: 10 * 1024 * 1024 * 1024,
            retention: Duration::from_secs(30 * 86_400),
            webhook_secret: None,
            webhook_allow_networks: Vec::new(),
        }
    }
}
