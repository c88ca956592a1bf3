//! The `responses` section of `gateway.yaml`: where Responses API responses are kept.

use super::*;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResponseStoreKind {
    /// `redis` with a shared limits policy, else `sqlite`.
    #[default]
    Auto,
    /// One SQLite file in `data_dir` (this instance only).
    Sqlite,
    /// The limits' Redis, shared by every instance.
    Redis,
    /// Nothing is kept: `store: true` is answered as `store: false`, and
    /// `previous_response_id` and `GET /v1/responses/{id}` find nothing.
    Off,
}

/// The Responses API store (`store: true`, `previous_response_id`, retrieve, delete,
/// input items).
#[derive(Debug, Clone, Deserialize, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// Where responses live (restart to change).
    pub store: ResponseStoreKind,
    /// Where the SQLite store lives (restart to change).
    pub data_dir: PathBuf,
    /// How long a response is kept.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationText")]
    pub retention: Duration,
    /// Most bytes of responses one consumer keeps; past it its oldest are dropped.
    pub consumer_quota_bytes: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            store: ResponseStoreKind::Auto,
            data_dir: PathBuf::from("data"),
            retention: Duration::from_secs(30 * 86_400),
            consumer_quota_bytes: 1024 * 1024 * 1024,
        }
    }
}
