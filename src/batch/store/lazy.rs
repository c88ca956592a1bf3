//! The SQLite store opened on first write: a gateway whose batch module is never used
//! writes nothing to `batch.data_dir`. Until a file or batch is created, reads answer as
//! an empty store does (no file, no batch, nothing due), so the dispatcher's polls and the
//! status page create nothing either. A store that exists already is opened at start-up
//! instead (its batches resume at once).

use super::{Sqlite, Store};
use crate::batch::backend::{
    Backend, Batch, Cancel, Claimed, FileRow, NewBatch, NewRequest, Queue, StoreResult, Swept,
};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The SQLite store of a data directory, opened when it is first written to.
pub struct Lazy {
    dir: PathBuf,
    scratch: PathBuf,
    opened: OnceCell<Sqlite>,
}

impl Lazy {
    /// The store of `dir`, not opened yet (`Store::open` does that on first write).
    pub fn new(dir: &Path) -> Lazy {
        Lazy {
            dir: dir.to_path_buf(),
            scratch: Store::scratch_of(dir),
            opened: OnceCell::new(),
        }
    }

    /// The store, opened (and created) now if it was not.
    async fn open(&self) -> StoreResult<&Sqlite> {
        self.opened
            .get_or_try_init(|| async {
                let dir = self.dir.clone();
                let store = tokio::task::spawn_blocking(move || Store::open(&dir, false))
                    .await
                    .map_err(|e| format!("batch store task: {e}"))??;
                tracing::info!(dir = %self.dir.display(), "batch store created on first use");
                Ok(Sqlite::new(Arc::new(store)))
            })
            .await
    }
}

#[async_trait]
impl Backend for Lazy {
    async fn ready(&self) -> StoreResult<()> {
        self.open().await.map(|_| ())
    }
    async fn add_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
        quota: u64,
    ) -> StoreResult<bool> {
        self.open()
            .await?
            .add_file(consumer, f, content, quota)
            .await
    }
    async fn usage(&self, consumer: Option<&str>) -> StoreResult<u64> {
        match self.opened.get() {
            Some(s) => s.usage(consumer).await,
            None => Ok(0),
        }
    }
    async fn file(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<FileRow>> {
        match self.opened.get() {
            Some(s) => s.file(consumer, id).await,
            None => Ok(None),
        }
    }
    async fn files(
        &self,
        consumer: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> StoreResult<Vec<FileRow>> {
        match self.opened.get() {
            Some(s) => s.files(consumer, purpose, after, limit, asc).await,
            None => Ok(Vec::new()),
        }
    }
    async fn delete_file(&self, consumer: Option<&str>, id: &str) -> StoreResult<bool> {
        match self.opened.get() {
            Some(s) => s.delete_file(consumer, id).await,
            None => Ok(false),
        }
    }
    async fn file_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>> {
        match self.opened.get() {
            Some(s) => s.file_chunk(id, index).await,
            None => Ok(None),
        }
    }
    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }
    async fn add_batch(&self, b: &NewBatch<'_>) -> StoreResult<()> {
        self.open().await?.add_batch(b).await
    }
    async fn batch(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<Batch>> {
        match self.opened.get() {
            Some(s) => s.batch(consumer, id).await,
            None => Ok(None),
        }
    }
    async fn batch_any(&self, id: &str) -> StoreResult<Option<Batch>> {
        match self.opened.get() {
            Some(s) => s.batch_any(id).await,
            None => Ok(None),
        }
    }
    async fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Batch>> {
        match self.opened.get() {
            Some(s) => s.batches(consumer, after, limit).await,
            None => Ok(Vec::new()),
        }
    }
    async fn cancel(&self, consumer: Option<&str>, id: &str) -> StoreResult<Cancel> {
        match self.opened.get() {
            Some(s) => s.cancel(consumer, id).await,
            None => Ok(Cancel::NotFound),
        }
    }
    async fn validating(&self) -> StoreResult<Vec<(String, String, String)>> {
        match self.opened.get() {
            Some(s) => s.validating().await,
            None => Ok(Vec::new()),
        }
    }
    async fn fail_batch(&self, id: &str, errors: &Value) -> StoreResult<()> {
        self.open().await?.fail_batch(id, errors).await
    }
    async fn add_requests(&self, id: &str, rows: &[NewRequest]) -> StoreResult<Vec<u64>> {
        self.open().await?.add_requests(id, rows).await
    }
    async fn start_batch(&self, id: &str, model: Option<&str>, total: u64) -> StoreResult<()> {
        self.open().await?.start_batch(id, model, total).await
    }
    async fn sweep(&self, retention_secs: i64) -> StoreResult<Swept> {
        match self.opened.get() {
            Some(s) => s.sweep(retention_secs).await,
            None => Ok(Swept::default()),
        }
    }
    async fn claim(&self, n: usize, queue: Queue<'_>) -> StoreResult<Vec<Claimed>> {
        match self.opened.get() {
            Some(s) => s.claim(n, queue).await,
            None => Ok(Vec::new()),
        }
    }
    async fn finish(
        &self,
        c: &Claimed,
        ok: bool,
        line: &Value,
        tokens: (u64, u64),
    ) -> StoreResult<()> {
        self.open().await?.finish(c, ok, line, tokens).await
    }
    async fn retry(&self, c: &Claimed, not_before_ms: i64, counts: bool) -> StoreResult<()> {
        self.open().await?.retry(c, not_before_ms, counts).await
    }
    async fn results(
        &self,
        consumer: Option<&str>,
        id: &str,
        after_line: i64,
        limit: usize,
    ) -> StoreResult<Option<Vec<(i64, String)>>> {
        match self.opened.get() {
            Some(s) => s.results(consumer, id, after_line, limit).await,
            None => Ok(None),
        }
    }
    async fn request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<Value>> {
        match self.opened.get() {
            Some(s) => s.request(consumer, id, custom_id).await,
            None => Ok(None),
        }
    }
    async fn cancel_request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<bool>> {
        match self.opened.get() {
            Some(s) => s.cancel_request(consumer, id, custom_id).await,
            None => Ok(None),
        }
    }
    async fn overview(&self, limit: usize) -> StoreResult<Vec<Batch>> {
        match self.opened.get() {
            Some(s) => s.overview(limit).await,
            None => Ok(Vec::new()),
        }
    }
    async fn pending(&self) -> StoreResult<i64> {
        match self.opened.get() {
            Some(s) => s.pending().await,
            None => Ok(0),
        }
    }
    async fn settle(&self, file_lifetime_secs: i64) -> StoreResult<Vec<String>> {
        match self.opened.get() {
            Some(s) => s.settle(file_lifetime_secs).await,
            None => Ok(Vec::new()),
        }
    }
    async fn webhooks_due(&self) -> StoreResult<Vec<(String, String, String)>> {
        match self.opened.get() {
            Some(s) => s.webhooks_due().await,
            None => Ok(Vec::new()),
        }
    }
    async fn webhook_delivered(
        &self,
        id: &str,
        event: &str,
        status: Option<u16>,
        attempts: u32,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.open()
            .await?
            .webhook_delivered(id, event, status, attempts, error)
            .await
    }
}
