//! The SQLite response store: one table, every call on tokio's blocking pool.

use super::{ResponseStore, ResponseStoreError, Result, StoredResponse};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct SqliteResponses {
    db: Arc<Mutex<Connection>>,
}

impl SqliteResponses {
    /// Open (or create) `responses.sqlite` in `dir`.
    pub fn open(dir: &Path) -> std::result::Result<SqliteResponses, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("responses.data_dir {}: {e}", dir.display()))?;
        let path = dir.join("responses.sqlite");
        let db = Connection::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA auto_vacuum=INCREMENTAL;
             CREATE TABLE IF NOT EXISTS responses (
               id TEXT PRIMARY KEY, consumer TEXT NOT NULL, created INTEGER NOT NULL,
               bytes INTEGER NOT NULL, response TEXT NOT NULL, input TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS responses_owner ON responses (consumer, created);
             CREATE INDEX IF NOT EXISTS responses_age ON responses (created);",
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SqliteResponses {
            db: Arc::new(Mutex::new(db)),
        })
    }

    async fn off<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let c = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|e| ResponseStoreError::Other(format!("store task: {e}")))?
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

#[async_trait]
impl ResponseStore for SqliteResponses {
    async fn put(&self, r: StoredResponse, quota: u64) -> Result<()> {
        self.off(move |c| {
            let bytes = r.bytes() as i64;
            let input = serde_json::Value::Array(r.input).to_string();
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO responses (id, consumer, created, bytes, response, input)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    r.id,
                    r.consumer,
                    r.created as i64,
                    bytes,
                    r.response.to_string(),
                    input
                ],
            )?;
            let mut held: i64 = tx.query_row(
                "SELECT COALESCE(SUM(bytes), 0) FROM responses WHERE consumer = ?1",
                params![r.consumer],
                |x| x.get(0),
            )?;
            while held > quota as i64 {
                let oldest: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT id, bytes FROM responses WHERE consumer = ?1 AND id != ?2
                         ORDER BY created, rowid LIMIT 1",
                        params![r.consumer, r.id],
                        |x| Ok((x.get(0)?, x.get(1)?)),
                    )
                    .optional()?;
                let Some((id, b)) = oldest else { break };
                tx.execute("DELETE FROM responses WHERE id = ?1", params![id])?;
                held -= b;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get(&self, consumer: &str, id: &str) -> Result<Option<StoredResponse>> {
        let (consumer, id) = (consumer.to_string(), id.to_string());
        self.off(move |c| {
            let found = c
                .query_row(
                    "SELECT id, consumer, created, response, input FROM responses
                     WHERE id = ?1 AND consumer = ?2",
                    params![id, consumer],
                    row,
                )
                .optional()?;
            Ok(
                found.map(|(id, consumer, created, response, input)| StoredResponse {
                    id,
                    consumer,
                    created: created as u64,
                    response: serde_json::from_str(&response).unwrap_or_default(),
                    input: serde_json::from_str(&input).unwrap_or_default(),
                }),
            )
        })
        .await
    }

    async fn delete(&self, consumer: &str, id: &str) -> Result<bool> {
        let (consumer, id) = (consumer.to_string(), id.to_string());
        self.off(move |c| {
            Ok(c.execute(
                "DELETE FROM responses WHERE id = ?1 AND consumer = ?2",
                params![id, consumer],
            )? > 0)
        })
        .await
    }

    async fn sweep(&self, before: u64) -> Result<u64> {
        self.off(move |c| {
            let n = c.execute(
                "DELETE FROM responses WHERE created < ?1",
                params![before as i64],
            )?;
            if n > 0 {
                c.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
            }
            Ok(n as u64)
        })
        .await
    }
}
