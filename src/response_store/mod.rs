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
//! `responses.consumer_quota_bytes` caps what one consumer keeps — a new response evicts
//! the consumer's oldest ones (never another consumer's), and one that cannot fit is not
//! stored. Each store keeps a running total per consumer, so a put does constant work
//! however many responses the consumer holds.

pub mod lazy;
pub mod redis;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::value::RawValue;

/// Most of a consumer's oldest responses one put may evict to make room; a response that
/// needs more is refused (nothing is deleted), so a put's work is bounded whatever the
/// consumer holds.
pub const MAX_EVICTIONS: usize = 256;

/// One stored response as kept: the Response object and the input items the model saw
/// (the previous responses' history included, each with an id), both as JSON text, so
/// that a read serves what it needs without building the whole input in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RawResponse {
    pub id: String,
    pub consumer: String,
    /// Unix seconds.
    pub created: u64,
    /// The Response object (JSON).
    pub response: String,
    /// The input items (a JSON array).
    pub input: String,
}

impl RawResponse {
    /// Bytes it takes (what the quota counts).
    pub fn bytes(&self) -> u64 {
        (self.response.len() + self.input.len()) as u64
    }
}

/// What became of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored; the consumer now holds `held` bytes, after evicting `evicted` responses.
    Stored { held: u64, evicted: usize },
    /// Not stored: it alone is over the quota, or more than [`MAX_EVICTIONS`] of the
    /// consumer's responses would have to go. `held`: what the consumer holds.
    Refused { held: u64 },
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

/// The store contract, the same for every backend. Every call does bounded work,
/// whatever the consumer (or any other) holds.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Keep a response (replacing one with the same id), evicting the consumer's oldest
    /// responses so that it holds at most `quota` bytes, or refuse it.
    async fn put(&self, r: RawResponse, quota: u64) -> Result<Put>;
    /// A response of `consumer`, with its input.
    async fn get(&self, consumer: &str, id: &str) -> Result<Option<RawResponse>>;
    /// The Response object alone of a response of `consumer`.
    async fn response(&self, consumer: &str, id: &str) -> Result<Option<String>>;
    /// Delete a response of `consumer`; whether there was one.
    async fn delete(&self, consumer: &str, id: &str) -> Result<bool>;
    /// Drop responses created before `before` (unix seconds); how many.
    async fn sweep(&self, before: u64) -> Result<u64>;
    /// Bytes `consumer` holds (its running total).
    async fn held(&self, consumer: &str) -> Result<u64>;
}

/// The owner of a response made without a consumer (auth off).
pub const ANONYMOUS: &str = "~";

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The input items of a stored response, borrowed from its text: each item stays raw
/// JSON (only its `id` is read), so a page of a large input costs the text plus a slice
/// per item, not a parsed tree.
pub fn raw_items(input: &str) -> Result<Vec<&RawValue>> {
    serde_json::from_str(input).map_err(|e| ResponseStoreError::Other(format!("stored input: {e}")))
}

/// The `id` of a raw item (nothing else of it is parsed).
pub fn item_id(item: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_str::<Id>(item.get()).ok()?.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_items_read_only_ids() {
        let input = r#"[{"id":"a","type":"message","content":"x"},{"type":"x"},{"id":"c"}]"#;
        let items = raw_items(input).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(item_id(items[0]).as_deref(), Some("a"));
        assert_eq!(item_id(items[1]), None);
        assert_eq!(items[2].get(), r#"{"id":"c"}"#);
    }
}
