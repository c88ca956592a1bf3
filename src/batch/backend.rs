//! What the batch module needs from a durable store, whichever it is: [`super::store`]
//! (one SQLite file in the data dir, the default, no Redis needed) or [`super::redis`]
//! (batches in Redis: a stream with a consumer group per model as the work queue and
//! hashes for state, so several gateway instances dispatch one batch together).
//!
//! Both keep the same promises: a request's result is written once per `custom_id` (a
//! request moves from running to done or failed only once), a request interrupted by a
//! crash runs again, and file contents move in [`CHUNK`]-sized pieces, never whole.

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

/// How long batch input and output files are kept (OpenAI: 30 days).
pub const FILE_LIFETIME_SECS: i64 = 30 * 86_400;

impl FileRow {
    /// A batch's output or error file (`name`: `batch_output.jsonl` / `batch_errors.jsonl`).
    pub fn batch_output(id: String, batch_id: &str, name: &str, bytes: u64) -> FileRow {
        FileRow {
            id,
            purpose: "batch_output".into(),
            filename: format!("{batch_id}_{name}"),
            bytes,
            created_at: now(),
            expires_at: Some(now() + FILE_LIFETIME_SECS),
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

/// A validated request: (input line, custom_id, body).
pub type Request = (u64, String, String);

/// Errors of a store, as text (they end up in logs and 500 bodies without secrets).
pub type StoreResult<T> = Result<T, String>;

#[async_trait]
pub trait Backend: Send + Sync {
    /// Store a file whose content is at `content` (a local file, taken over or copied).
    async fn add_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
    ) -> StoreResult<()>;
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
    /// Where uploads are written before [`Backend::add_file`] takes them.
    fn scratch_dir(&self) -> &Path;

    async fn add_batch(&self, b: &NewBatch<'_>) -> StoreResult<()>;
    /// The Batch object (`None`: no such batch for this consumer).
    async fn batch(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<Value>>;
    /// The Batch object, whoever owns it (for webhooks).
    async fn batch_any(&self, id: &str) -> StoreResult<Option<Value>>;
    /// Batches of a consumer, newest first, after `after`.
    async fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Value>>;
    /// Request a cancel: `Err(status)` when the batch has already ended (`""`: no batch).
    async fn cancel(&self, consumer: Option<&str>, id: &str) -> StoreResult<Result<(), String>>;

    /// Batches to validate now: (id, endpoint, input file). Each is given to one
    /// validator at a time.
    async fn validating(&self) -> StoreResult<Vec<(String, String, String)>>;
    async fn fail_batch(&self, id: &str, errors: &Value) -> StoreResult<()>;
    /// Store a validated batch's requests and start it.
    async fn start_batch(
        &self,
        id: &str,
        model: Option<&str>,
        requests: &[Request],
    ) -> StoreResult<()>;

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
    async fn overview(&self, limit: usize) -> StoreResult<Vec<Value>>;
    /// Requests waiting or running, over every batch (a gauge).
    async fn pending(&self) -> StoreResult<i64>;
    /// End what has to end: expired batches, cancels, batches with nothing left to run;
    /// returns the batches ended.
    async fn settle(&self) -> StoreResult<Vec<String>>;
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
pub fn request_status<'a>(state: &'a str, result: &Value) -> &'a str {
    match state {
        "done" => "completed",
        "failed" if result["error"]["code"] == "batch_cancelled" => "cancelled",
        "failed" if result["error"]["code"] == "batch_expired" => "expired",
        other => other,
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
