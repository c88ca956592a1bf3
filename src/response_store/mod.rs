//! Where Responses API responses live (`store: true`, the default), so that
//! `previous_response_id`, `GET`/`DELETE /v1/responses/{id}` and `input_items` work for
//! every provider. A response belongs to the consumer that created it: another consumer
//! gets a 404, as if it did not exist.
//!
//! - [`sqlite`]: one file in `responses.data_dir`, calls on the blocking pool (default).
//! - [`redis`]: the limits' Redis, shared by every instance (`store: redis`, or `auto` with
//!   a shared limits policy); keys expire after the retention.
//!
//! Space is bounded twice: `responses.retention` (30 days) ends every response, and
//! `responses.consumer_quota_bytes` caps what one consumer keeps — past it the consumer's
//! oldest responses are dropped, never another consumer's.

pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;

/// One stored response: the Response object and the input items the model saw (the
/// previous responses' history included), each with an id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub id: String,
    pub consumer: String,
    /// Unix seconds.
    pub created: u64,
    pub response: Value,
    pub input: Vec<Value>,
}

impl StoredResponse {
    /// Bytes it takes (what the quota counts).
    pub fn bytes(&self) -> u64 {
        (self.response.to_string().len() + Value::Array(self.input.clone()).to_string().len())
            as u64
    }
}

/// Why the store failed (an outage, not a missing response).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResponseStoreError {
    #[error("response store (SQLite): {0}")]
    Database(String),
    #[error("response store (Redis): {0}")]
    Redis(String),
    #[error("response store: {0}")]
    Other(String),
}

impl From<rusqlite::Error> for ResponseStoreError {
    fn from(e: rusqlite::Error) -> Self {
        ResponseStoreError::Database(e.to_string())
    }
}

impl From<::redis::RedisError> for ResponseStoreError {
    fn from(e: ::redis::RedisError) -> Self {
        ResponseStoreError::Redis(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, ResponseStoreError>;

/// The store contract, the same for every backend.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Keep a response (replacing one with the same id), then drop the consumer's oldest
    /// responses while it holds more than `quota` bytes.
    async fn put(&self, r: StoredResponse, quota: u64) -> Result<()>;
    /// A response of `consumer`.
    async fn get(&self, consumer: &str, id: &str) -> Result<Option<StoredResponse>>;
    /// Delete a response of `consumer`; whether there was one.
    async fn delete(&self, consumer: &str, id: &str) -> Result<bool>;
    /// Drop responses created before `before` (unix seconds); how many.
    async fn sweep(&self, before: u64) -> Result<u64>;
}

/// The owner of a response made without a consumer (auth off).
pub const ANONYMOUS: &str = "~";

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
