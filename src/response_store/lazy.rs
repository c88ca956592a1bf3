//! The SQLite response store opened on first write: a gateway that never stores a
//! response writes nothing to `responses.data_dir`. Until then every read finds nothing,
//! as an empty store would. A store that exists already is opened at start-up instead
//! (so a config that does not own it is refused there).

use super::sqlite::SqliteResponses;
use super::{Put, RawResponse, ResponseStore, ResponseStoreError, Result};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use tokio::sync::OnceCell;

pub struct LazyResponses {
    dir: PathBuf,
    owner: Option<PathBuf>,
    opened: OnceCell<SqliteResponses>,
}

impl LazyResponses {
    /// The store of `dir` owned by the config at `owner`, not opened yet.
    pub fn new(dir: &Path, owner: Option<&Path>) -> LazyResponses {
        LazyResponses {
            dir: dir.to_path_buf(),
            owner: owner.map(Path::to_path_buf),
            opened: OnceCell::new(),
        }
    }

    async fn open(&self) -> Result<&SqliteResponses> {
        self.opened
            .get_or_try_init(|| async {
                let (dir, owner) = (self.dir.clone(), self.owner.clone());
                tokio::task::spawn_blocking(move || SqliteResponses::open(&dir, owner.as_deref()))
                    .await
                    .map_err(|e| ResponseStoreError::Other(e.to_string()))?
                    .map_err(ResponseStoreError::Other)
            })
            .await
    }
}

#[async_trait]
impl ResponseStore for LazyResponses {
    async fn put(&self, r: RawResponse, quota: u64) -> Result<Put> {
        self.open().await?.put(r, quota).await
    }
    async fn get(&self, consumer: &str, id: &str) -> Result<Option<RawResponse>> {
        match self.opened.get() {
            Some(s) => s.get(consumer, id).await,
            None => Ok(None),
        }
    }
    async fn response(&self, consumer: &str, id: &str) -> Result<Option<String>> {
        match self.opened.get() {
            Some(s) => s.response(consumer, id).await,
            None => Ok(None),
        }
    }
    async fn delete(&self, consumer: &str, id: &str) -> Result<bool> {
        match self.opened.get() {
            Some(s) => s.delete(consumer, id).await,
            None => Ok(false),
        }
    }
    async fn sweep(&self, before: u64) -> Result<u64> {
        match self.opened.get() {
            Some(s) => s.sweep(before).await,
            None => Ok(0),
        }
    }
    async fn held(&self, consumer: &str) -> Result<u64> {
        match self.opened.get() {
            Some(s) => s.held(consumer).await,
            None => Ok(0),
        }
    }
}
