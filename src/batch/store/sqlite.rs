//! [`Sqlite`]: the SQLite store as a [`Backend`], with every call run on tokio's blocking
//! pool. rusqlite and the file reads and writes under the store's lock block; on the
//! proxy's threads (one runtime per thread) they would stall every connection of that
//! thread, so none of them runs there.

use super::{text, Store};
use crate::batch::backend::{
    Backend, Batch, Cancel, Claimed, FileRow, NewBatch, NewRequest, Queue, StoreResult, Swept,
};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The SQLite store behind the async [`Backend`] contract.
pub struct Sqlite {
    store: Arc<Store>,
    scratch: PathBuf,
}

impl Sqlite {
    pub fn new(store: Arc<Store>) -> Sqlite {
        Sqlite {
            scratch: store.scratch().to_path_buf(),
            store,
        }
    }

    /// Run `f` on the blocking pool.
    async fn off<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| format!("batch store task: {e}"))?
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}

#[async_trait]
impl Backend for Sqlite {
    async fn add_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
        quota: u64,
    ) -> StoreResult<bool> {
        let (c, f, content) = (owned(consumer), f.clone(), content.to_path_buf());
        self.off(move |s| s.add_file_within(c.as_deref(), &f, &content, quota))
            .await
    }
    async fn usage(&self, consumer: Option<&str>) -> StoreResult<u64> {
        let c = owned(consumer);
        self.off(move |s| text(Store::usage(&s.db(), c.as_deref())))
            .await
    }
    async fn file(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<FileRow>> {
        let (c, id) = (owned(consumer), id.to_string());
        self.off(move |s| text(s.file(c.as_deref(), &id))).await
    }
    async fn files(
        &self,
        consumer: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> StoreResult<Vec<FileRow>> {
        let (c, p, a) = (owned(consumer), owned(purpose), owned(after));
        self.off(move |s| text(s.files(c.as_deref(), p.as_deref(), a.as_deref(), limit, asc)))
            .await
    }
    async fn delete_file(&self, consumer: Option<&str>, id: &str) -> StoreResult<bool> {
        let (c, id) = (owned(consumer), id.to_string());
        self.off(move |s| text(s.delete_file(c.as_deref(), &id)))
            .await
    }
    async fn file_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>> {
        let id = id.to_string();
        self.off(move |s| s.file_chunk(&id, index)).await
    }
    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }
    async fn add_batch(&self, b: &NewBatch<'_>) -> StoreResult<()> {
        let (id, c, endpoint, input) = (
            b.id.to_string(),
            owned(b.consumer),
            b.endpoint.to_string(),
            b.input_file_id.to_string(),
        );
        let (metadata, window) = (b.metadata.clone(), b.window.clone());
        let webhook = b.webhook.map(|(u, e)| (u.to_string(), e));
        self.off(move |s| {
            text(s.add_batch(&NewBatch {
                id: &id,
                consumer: c.as_deref(),
                endpoint: &endpoint,
                input_file_id: &input,
                metadata: &metadata,
                webhook: webhook.as_ref().map(|(u, e)| (u.as_str(), *e)),
                window,
            }))
        })
        .await
    }
    async fn batch(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<Batch>> {
        let (c, id) = (owned(consumer), id.to_string());
        self.off(move |s| text(s.batch(c.as_deref(), &id))).await
    }
    async fn batch_any(&self, id: &str) -> StoreResult<Option<Batch>> {
        let id = id.to_string();
        self.off(move |s| text(s.batch_any(&id))).await
    }
    async fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Batch>> {
        let (c, a) = (owned(consumer), owned(after));
        self.off(move |s| text(s.batches(c.as_deref(), a.as_deref(), limit)))
            .await
    }
    async fn cancel(&self, consumer: Option<&str>, id: &str) -> StoreResult<Cancel> {
        let (c, id) = (owned(consumer), id.to_string());
        self.off(move |s| text(s.cancel(c.as_deref(), &id))).await
    }
    async fn validating(&self) -> StoreResult<Vec<(String, String, String)>> {
        self.off(|s| text(s.validating())).await
    }
    async fn fail_batch(&self, id: &str, errors: &Value) -> StoreResult<()> {
        let (id, errors) = (id.to_string(), errors.clone());
        self.off(move |s| text(s.fail_batch(&id, &errors))).await
    }
    async fn add_requests(&self, id: &str, rows: &[NewRequest]) -> StoreResult<Vec<u64>> {
        let (id, rows) = (id.to_string(), rows.to_vec());
        self.off(move |s| text(s.add_requests(&id, &rows))).await
    }
    async fn start_batch(&self, id: &str, model: Option<&str>, total: u64) -> StoreResult<()> {
        let (id, m) = (id.to_string(), owned(model));
        self.off(move |s| text(s.start_batch(&id, m.as_deref(), total)))
            .await
    }
    async fn sweep(&self, retention_secs: i64) -> StoreResult<Swept> {
        self.off(move |s| text(s.sweep(retention_secs))).await
    }
    async fn claim(&self, n: usize, queue: Queue<'_>) -> StoreResult<Vec<Claimed>> {
        enum Owned {
            Model(String),
            AllBut(Vec<String>),
        }
        let q = match queue {
            Queue::Model(m) => Owned::Model(m.to_string()),
            Queue::AllBut(but) => Owned::AllBut(but.to_vec()),
        };
        self.off(move |s| {
            let queue = match &q {
                Owned::Model(m) => Queue::Model(m),
                Owned::AllBut(but) => Queue::AllBut(but),
            };
            text(s.claim(n, queue))
        })
        .await
    }
    async fn finish(
        &self,
        c: &Claimed,
        ok: bool,
        line: &Value,
        tokens: (u64, u64),
    ) -> StoreResult<()> {
        let (b, cid, line) = (c.batch_id.clone(), c.custom_id.clone(), line.clone());
        self.off(move |s| text(s.finish(&b, &cid, ok, &line, tokens)))
            .await
    }
    async fn retry(&self, c: &Claimed, not_before_ms: i64, counts: bool) -> StoreResult<()> {
        let (b, cid) = (c.batch_id.clone(), c.custom_id.clone());
        self.off(move |s| text(s.retry(&b, &cid, not_before_ms, counts)))
            .await
    }
    async fn results(
        &self,
        consumer: Option<&str>,
        id: &str,
        after_line: i64,
        limit: usize,
    ) -> StoreResult<Option<Vec<(i64, String)>>> {
        let (c, id) = (owned(consumer), id.to_string());
        self.off(move |s| text(s.results(c.as_deref(), &id, after_line, limit)))
            .await
    }
    async fn request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<Value>> {
        let (c, id, cid) = (owned(consumer), id.to_string(), custom_id.to_string());
        self.off(move |s| text(s.request(c.as_deref(), &id, &cid)))
            .await
    }
    async fn cancel_request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<bool>> {
        let (c, id, cid) = (owned(consumer), id.to_string(), custom_id.to_string());
        self.off(move |s| text(s.cancel_request(c.as_deref(), &id, &cid)))
            .await
    }
    async fn pending(&self) -> StoreResult<i64> {
        self.off(|s| text(s.pending())).await
    }
    async fn overview(&self, limit: usize) -> StoreResult<Vec<Batch>> {
        self.off(move |s| text(s.overview(limit))).await
    }
    async fn settle(&self, file_lifetime_secs: i64) -> StoreResult<Vec<String>> {
        self.off(move |s| Ok(s.settle(file_lifetime_secs)?)).await
    }
    async fn webhooks_due(&self) -> StoreResult<Vec<(String, String, String)>> {
        self.off(|s| text(s.webhooks_due())).await
    }
    async fn webhook_delivered(
        &self,
        id: &str,
        event: &str,
        status: Option<u16>,
        attempts: u32,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let (id, event, error) = (id.to_string(), event.to_string(), owned(error));
        self.off(move |s| {
            text(s.webhook_delivered(&id, &event, status, attempts, error.as_deref()))
        })
        .await
    }
}
