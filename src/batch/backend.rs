//! What the batch module needs from a durable store, whichever it is: [`super::store`]
//! (one SQLite file in the data dir, the default, no Redis needed) or [`super::redis`]
//! (batches in Redis: a stream with a consumer group per model as the work queue and
//! hashes for state, so several gateway instances dispatch one batch together).
//!
//! Both keep the same promises: a request's result is written once per `custom_id` (a
//! request moves from running to done or failed only once), a request interrupted by a
//! crash runs again, and file contents move in [`CHUNK`]-sized pieces, never whole.

pub use super::model::{Batch, BatchStatus, Cancel};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};
use std::path::Path;

/// File contents are stored and read in pieces of this size.
pub const CHUNK: usize = 1 << 20;

/// A stored file.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: u64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl FileRow {
    /// A batch's output or error file (`name`: `batch_output.jsonl` / `batch_errors.jsonl`),
    /// kept `lifetime_secs` (`batch.retention`).
    pub fn batch_output(
        id: String,
        batch_id: &str,
        name: &str,
        bytes: u64,
        lifetime_secs: i64,
    ) -> FileRow {
        FileRow {
            id,
            purpose: "batch_output".into(),
            filename: format!("{batch_id}_{name}"),
            bytes,
            created_at: now(),
            expires_at: Some(now() + lifetime_secs),
        }
    }

    pub fn object(&self) -> Value {
        json!({"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
               "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
               "status": "processed", "status_details": null})
    }
}

/// A request claimed for execution.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub batch_id: String,
    pub custom_id: String,
    pub consumer: Option<String>,
    pub endpoint: String,
    pub body: String,
    pub attempts: u32,
    /// The batch's model (its dispatch queue).
    pub model: Option<String>,
    /// The work-queue entry to acknowledge (Redis), if any.
    pub entry: Option<String>,
}

/// A batch being created.
pub struct NewBatch<'a> {
    pub id: &'a str,
    pub consumer: Option<&'a str>,
    pub endpoint: &'a str,
    pub input_file_id: &'a str,
    pub metadata: &'a Value,
    /// URL and progress step (percent, 0 for none).
    pub webhook: Option<(&'a str, u32)>,
    /// `completion_window` as given, and in seconds.
    pub window: (String, i64),
}

/// Which batches' requests [`Backend::claim`] takes.
#[derive(Clone, Copy)]
pub enum Queue<'a> {
    /// The batches of one model.
    Model(&'a str),
    /// Every batch but those of these models.
    AllBut(&'a [String]),
}

/// Where a request's line lies in its batch's input file: requests refer to the input
/// file instead of copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef {
    pub start: u64,
    pub len: u64,
}

impl LineRef {
    /// How a reference is stored where a body used to be (Redis): `@start:len`.
    pub fn encode(self) -> String {
        format!("@{}:{}", self.start, self.len)
    }

    pub fn decode(s: &str) -> Option<LineRef> {
        let (a, b) = s.strip_prefix('@')?.split_once(':')?;
        Some(LineRef {
            start: a.parse().ok()?,
            len: b.parse().ok()?,
        })
    }
}

/// A validated request of a batch being loaded.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Input line number (from 1).
    pub line: u64,
    pub custom_id: String,
    pub at: LineRef,
}

/// The `body` of an input line (as JSON text), read back through its [`LineRef`].
pub fn body_of_line(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        body: &'a serde_json::value::RawValue,
    }
    let l: Line<'_> = serde_json::from_slice(line).ok()?;
    Some(l.body.get().to_string())
}

/// What [`Backend::sweep`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
    pub batches: u64,
}

/// Why a store call failed (logged, and a 500 to the client, without secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("batch store (SQLite): {0}")]
    Database(String),
    #[error("batch store (Redis): {0}")]
    Redis(String),
    #[error("batch store (files): {0}")]
    Io(String),
    /// Anything else the store found wrong (an unreadable record, a lost task).
    #[error("batch store: {0}")]
    Other(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

impl From<String> for StoreError {
    fn from(e: String) -> Self {
        StoreError::Other(e)
    }
}

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Backend: Send + Sync {
    /// Store a file whose content is at `content` (a local file, taken over or copied),
    /// unless the consumer's files would then take more than `quota` bytes: `Ok(false)`.
    async fn add_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
        quota: u64,
    ) -> StoreResult<bool>;
    /// Bytes of the consumer's stored files (uploads and results).
    async fn usage(&self, consumer: Option<&str>) -> StoreResult<u64>;
    async fn file(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<FileRow>>;
    async fn files(
        &self,
        consumer: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> StoreResult<Vec<FileRow>>;
    async fn delete_file(&self, consumer: Option<&str>, id: &str) -> StoreResult<bool>;
    /// The `index`-th [`CHUNK`] of a file's content; `None` past its end.
    async fn file_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>>;
    /// Where uploads are written before [`Backend::add_file`] takes them (existing once
    /// [`Backend::ready`] returned).
    fn scratch_dir(&self) -> &Path;
    /// The scratch directory when it is this process's alone (removed at shutdown), not
    /// part of a data directory that outlives it.
    fn private_scratch(&self) -> Option<&Path> {
        None
    }
    /// Make the store ready to be written (a store opened on first use opens now).
    async fn ready(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn add_batch(&self, b: &NewBatch<'_>) -> StoreResult<()>;
    /// A consumer's batch (`None`: no such batch for this consumer).
    async fn batch(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<Batch>>;
    /// A batch, whoever owns it (for webhooks).
    async fn batch_any(&self, id: &str) -> StoreResult<Option<Batch>>;
    /// Batches of a consumer, newest first, after `after`.
    async fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Batch>>;
    /// Request a cancel.
    async fn cancel(&self, consumer: Option<&str>, id: &str) -> StoreResult<Cancel>;

    /// Batches to validate now: (id, endpoint, input file). Each is given to one
    /// validator at a time.
    async fn validating(&self) -> StoreResult<Vec<(String, String, String)>>;
    /// Fail a batch in validation, dropping the requests already added.
    async fn fail_batch(&self, id: &str, errors: &Value) -> StoreResult<()>;
    /// Add validated requests of a batch in validation (not yet run); returns the lines
    /// whose custom_id another line already has. Adding a line again (validation resumed
    /// after a crash) is not a duplicate.
    async fn add_requests(&self, id: &str, rows: &[NewRequest]) -> StoreResult<Vec<u64>>;
    /// Start a batch whose `total` requests were all added.
    async fn start_batch(&self, id: &str, model: Option<&str>, total: u64) -> StoreResult<()>;
    /// Delete what the retention schedule says is over: expired files (kept while a
    /// running batch reads them) and the requests and results of batches that ended more
    /// than `retention_secs` ago; give the space back.
    async fn sweep(&self, retention_secs: i64) -> StoreResult<Swept>;

    /// Claim up to `n` due requests of running batches on `queue`, oldest batch first.
    async fn claim(&self, n: usize, queue: Queue<'_>) -> StoreResult<Vec<Claimed>>;
    /// Write a request's result line once (`ok`: an output line, else an error line).
    async fn finish(
        &self,
        c: &Claimed,
        ok: bool,
        line: &Value,
        tokens: (u64, u64),
    ) -> StoreResult<()>;
    /// Put a request back for another try no earlier than `not_before_ms`; `counts`: it
    /// used one of its attempts.
    async fn retry(&self, c: &Claimed, not_before_ms: i64, counts: bool) -> StoreResult<()>;

    /// Result lines in input order after input line `after_line`: (line, result).
    /// `None`: no such batch for this consumer.
    async fn results(
        &self,
        consumer: Option<&str>,
        id: &str,
        after_line: i64,
        limit: usize,
    ) -> StoreResult<Option<Vec<(i64, String)>>>;
    /// One request of a batch: `{custom_id, status, attempts, result}`.
    async fn request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<Value>>;
    /// Cancel one request that has not run yet: `Some(false)` when it is running or ended.
    async fn cancel_request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<bool>>;

    /// The newest batches of every consumer, at most `limit` (for the status page).
    async fn overview(&self, limit: usize) -> StoreResult<Vec<Batch>>;
    /// Requests waiting or running, over every batch (a gauge).
    async fn pending(&self) -> StoreResult<i64>;
    /// End what has to end: expired batches, cancels, batches with nothing left to run;
    /// returns the batches ended. Their output files live `file_lifetime_secs`.
    async fn settle(&self, file_lifetime_secs: i64) -> StoreResult<Vec<String>>;
    /// Housekeeping of the work queue (Redis: keep this instance's claims alive, take
    /// over those of instances that died, requeue retries that are due).
    async fn maintain(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Webhook events now due: (batch id, url, event), each given out once.
    async fn webhooks_due(&self) -> StoreResult<Vec<(String, String, String)>>;
    /// Record a webhook delivery's outcome on its batch.
    async fn webhook_delivered(
        &self,
        id: &str,
        event: &str,
        status: Option<u16>,
        attempts: u32,
        error: Option<&str>,
    ) -> StoreResult<()>;
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// The error line of a request that a batch's end left unrun.
pub fn unrun_line(custom_id: &str, code: &str) -> String {
    let message = match code {
        "batch_expired" => {
            "This request could not be executed before the completion window expired."
        }
        _ => "This request was cancelled before it was executed.",
    };
    json!({"id": new_id("batch_req_"), "custom_id": custom_id, "response": null,
           "error": {"code": code, "message": message}})
    .to_string()
}

/// A request's status as the API shows it, from its stored state and result.
pub fn request_status<'a>(stored: &'a str, result: &Value) -> &'a str {
    match super::model::RequestState::parse(stored) {
        Some(state) => state.shown(result),
        None => stored,
    }
}

/// A webhook delivery's record on the batch, updated with one outcome.
pub fn webhook_record(
    old: Option<&str>,
    event: &str,
    status: Option<u16>,
    attempts: u32,
    error: Option<&str>,
) -> String {
    let mut w: Value = old
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| json!({"delivered": 0, "failed": 0}));
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let counter = if ok { "delivered" } else { "failed" };
    w[counter] = json!(w[counter].as_u64().unwrap_or(0) + 1);
    w["last"] = json!({"event": event, "status_code": status, "attempts": attempts,
                       "error": error, "at": now()});
    w.to_string()
}

/// The webhook event due for a batch, given what was already announced: the end event
/// (`batch.<status>`) once the batch has ended, else a progress step of `every` percent.
/// Returns the event and the new `notified` step.
pub fn webhook_event(
    status: &str,
    every: i64,
    notified: i64,
    total: i64,
    ended: i64,
) -> Option<(String, i64)> {
    if matches!(status, "completed" | "failed" | "cancelled" | "expired") {
        return Some((format!("batch.{status}"), notified));
    }
    if every > 0 && total > 0 && status == "in_progress" {
        let step = ended * 100 / total / every * every;
        if step > notified && step < 100 {
            return Some(("batch.progress".to_string(), step));
        }
    }
    None
}
