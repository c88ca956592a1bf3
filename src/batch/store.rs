//! The durable batch store: one SQLite file in the data dir (WAL mode), with file contents
//! beside it on disk (`files/<id>`), so uploads and results are streamed, never held whole
//! in memory.
//!
//! A batch's requests are rows keyed by `(batch_id, custom_id)`; a result is written once
//! per row (`state` moves from `running` to `done`/`failed` only once), so a crash and a
//! restart can neither lose nor duplicate a result line. Rows still `running` at start
//! were interrupted and go back to `pending`.
//!
//! [`Store`]'s calls block (rusqlite, file I/O under one lock); the gateway uses it as
//! [`Sqlite`], which runs every call on tokio's blocking pool, never on a proxy thread.

use super::backend::{
    new_id, now, now_ms, request_status, unrun_line, webhook_event, webhook_record, Claimed,
    FileRow, NewBatch, NewRequest, Queue, StoreResult, Swept, CHUNK,
};
use super::model::{json_or_null, Batch, BatchStatus, Cancel};
use crate::migrate::{add_column, migrate, Migration};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub struct Store {
    db: Mutex<Connection>,
    dir: PathBuf,
    /// Uploads in progress (inside the data dir, so taking one over is a rename).
    scratch: PathBuf,
    /// This process's mark on the requests it runs.
    me: String,
}

mod lazy;
mod lifecycle;
mod requests;
mod space;
mod sqlite;
pub use lazy::Lazy;
pub use sqlite::Sqlite;

/// Set on every open (outside any transaction; WAL is a property of the file).
const PRAGMAS: &str = "
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
";

/// The tables as they were when the steps were first numbered.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, consumer TEXT, purpose TEXT NOT NULL, filename TEXT NOT NULL,
  bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER);
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY, consumer TEXT, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
  completion_window TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
  in_progress_at INTEGER, expires_at INTEGER NOT NULL, finalizing_at INTEGER,
  completed_at INTEGER, failed_at INTEGER, expired_at INTEGER, cancelling_at INTEGER,
  cancelled_at INTEGER, output_file_id TEXT, error_file_id TEXT, errors TEXT,
  metadata TEXT, model TEXT, total INTEGER NOT NULL DEFAULT 0,
  input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
  webhook_url TEXT, webhook_every INTEGER NOT NULL DEFAULT 0,
  webhook_notified INTEGER NOT NULL DEFAULT 0, webhook_done INTEGER NOT NULL DEFAULT 0,
  webhook TEXT);
CREATE TABLE IF NOT EXISTS requests (
  batch_id TEXT NOT NULL, custom_id TEXT NOT NULL, line INTEGER NOT NULL, body TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, not_before INTEGER NOT NULL DEFAULT 0,
  result TEXT, PRIMARY KEY (batch_id, custom_id));
CREATE INDEX IF NOT EXISTS requests_state ON requests (state, not_before);
CREATE INDEX IF NOT EXISTS requests_due ON requests (batch_id, state, line);
";

/// The store's schema, step by step (see [`crate::migrate`]).
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "files, batches and requests",
        run: |tx| tx.execute_batch(SCHEMA),
    },
    Migration {
        name: "requests refer to their input file and have an owner; batches are purged",
        run: |tx| {
            add_column(tx, "requests", "owner", "TEXT")?;
            add_column(tx, "requests", "start", "INTEGER")?;
            add_column(tx, "requests", "len", "INTEGER")?;
            add_column(tx, "batches", "purged", "INTEGER NOT NULL DEFAULT 0")
        },
    },
    Migration {
        name: "orphaned files and the quota's indexes",
        run: |tx| tx.execute_batch(space::SCHEMA),
    },
];

impl Store {
    /// Open (or create) the store in `dir`; requests interrupted by a crash are pending again.
    /// Open the store in `dir`. `taking_over`: a graceful upgrade, whose old process is
    /// still finishing its requests (see [`Store::adopt_interrupted`]); otherwise requests
    /// left running by a previous process were interrupted and go back to pending.
    pub fn open(dir: &Path, taking_over: bool) -> Result<Store, String> {
        crate::owner_only::create_dir(dir)
            .and_then(|()| crate::owner_only::own_dir(&dir.join("files")))
            .map_err(|e| format!("batch data dir {}: {e}", dir.display()))?;
        let mut db = crate::owner_only::open_sqlite(&dir.join("batches.sqlite3"))
            .map_err(|e| format!("opening the batch store: {e}"))?;
        db.execute_batch(PRAGMAS)
            .map_err(|e| format!("batch store: {e}"))?;
        migrate(&mut db, "batch store", MIGRATIONS)?;
        let scratch = Store::scratch_of(dir);
        if !taking_over {
            db.execute(
                "UPDATE requests SET state = 'pending' WHERE state = 'running'",
                [],
            )
            .map_err(|e| e.to_string())?;
            // Uploads a crash interrupted are dropped.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        crate::owner_only::own_dir(&scratch)
            .map_err(|e| format!("batch data dir {}: {e}", dir.display()))?;
        Ok(Store {
            db: Mutex::new(db),
            dir: dir.to_path_buf(),
            scratch,
            me: new_id("proc-"),
        })
    }

    /// Where uploads of the store in `dir` are written before they are stored.
    pub fn scratch_of(dir: &Path) -> PathBuf {
        dir.join("files").join("uploading")
    }

    /// Whether `dir` holds a store already.
    pub fn exists(dir: &Path) -> bool {
        dir.join("batches.sqlite3").exists()
    }

    /// After a graceful upgrade, once the old process has had its grace period: requests
    /// it left running were interrupted and go back to pending.
    pub fn adopt_interrupted(&self) -> rusqlite::Result<usize> {
        self.db().execute(
            "UPDATE requests SET state = 'pending' WHERE state = 'running' AND owner IS NOT ?1",
            [&self.me],
        )
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a file's bytes live.
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.dir.join("files").join(id)
    }

    fn insert_file(&self, consumer: Option<&str>, f: &FileRow) -> rusqlite::Result<()> {
        self.db().execute(
            "INSERT INTO files (id, consumer, purpose, filename, bytes, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![f.id, consumer, f.purpose, f.filename, f.bytes as i64, f.created_at, f.expires_at],
        )?;
        Ok(())
    }

    fn file(&self, consumer: Option<&str>, id: &str) -> rusqlite::Result<Option<FileRow>> {
        self.db()
            .query_row(
                "SELECT id, purpose, filename, bytes, created_at, expires_at FROM files WHERE id = ?1 AND consumer IS ?2",
                params![id, consumer],
                file_row,
            )
            .optional()
    }

    /// Files of a consumer, newest first (or oldest first with `asc`), after `after`.
    fn files(
        &self,
        consumer: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> rusqlite::Result<Vec<FileRow>> {
        let db = self.db();
        let cursor: Option<(i64, String)> = match after {
            Some(a) => db
                .query_row("SELECT created_at, id FROM files WHERE id = ?1", [a], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?,
            None => None,
        };
        let (cmp, order) = if asc { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT id, purpose, filename, bytes, created_at, expires_at FROM files
             WHERE consumer IS ?1 AND (?2 IS NULL OR purpose = ?2)
               AND (?3 IS NULL OR (created_at, id) {cmp} (?3, ?4))
             ORDER BY created_at {order}, id {order} LIMIT ?5"
        );
        let mut st = db.prepare(&sql)?;
        let (c_at, c_id) = cursor.unzip();
        let rows = st.query_map(
            params![consumer, purpose, c_at, c_id, limit as i64],
            file_row,
        )?;
        rows.collect()
    }

    fn delete_file(&self, consumer: Option<&str>, id: &str) -> rusqlite::Result<bool> {
        let db = self.db();
        let n = db.execute(
            "DELETE FROM files WHERE id = ?1 AND consumer IS ?2",
            params![id, consumer],
        )?;
        if n > 0 {
            self.drop_content(&db, id)?;
        }
        Ok(n > 0)
    }

    fn add_batch(&self, b: &NewBatch<'_>) -> rusqlite::Result<()> {
        let t = now();
        let (url, every) = b.webhook.unzip();
        let (window, window_secs) = &b.window;
        let NewBatch {
            id,
            consumer,
            endpoint,
            input_file_id,
            metadata,
            ..
        } = b;
        self.db().execute(
            "INSERT INTO batches (id, consumer, endpoint, input_file_id, completion_window, status, created_at, expires_at, metadata, webhook_url, webhook_every)
             VALUES (?1, ?2, ?3, ?4, ?10, 'validating', ?5, ?6, ?7, ?8, ?9)",
            params![id, consumer, endpoint, input_file_id, t, t + window_secs, metadata.to_string(), url, every.unwrap_or(0), window],
        )?;
        Ok(())
    }

    /// Webhook events now due: (batch id, url, event). Each is taken once: progress by
    /// `webhook_every` percent steps while running, then one event when the batch ends.
    fn webhooks_due(&self) -> rusqlite::Result<Vec<(String, String, String)>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT b.id, b.webhook_url, b.status, b.webhook_every, b.webhook_notified, b.total,
               (SELECT COUNT(*) FROM requests r WHERE r.batch_id = b.id AND r.state IN ('done', 'failed'))
             FROM batches b WHERE b.webhook_url IS NOT NULL AND b.webhook_done = 0",
        )?;
        let rows: Vec<(String, String, String, i64, i64, i64, i64)> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut due = Vec::new();
        for (id, url, status, every, notified, total, ended) in rows {
            let Some((event, step)) = webhook_event(&status, every, notified, total, ended) else {
                continue;
            };
            if event == "batch.progress" {
                db.execute(
                    "UPDATE batches SET webhook_notified = ?2 WHERE id = ?1",
                    params![id, step],
                )?;
            } else {
                db.execute("UPDATE batches SET webhook_done = 1 WHERE id = ?1", [&id])?;
            }
            due.push((id, url, event));
        }
        Ok(due)
    }

    /// Record a webhook delivery's outcome on its batch.
    fn webhook_delivered(
        &self,
        id: &str,
        event: &str,
        status: Option<u16>,
        attempts: u32,
        error: Option<&str>,
    ) -> rusqlite::Result<()> {
        let db = self.db();
        let old: Option<String> =
            db.query_row("SELECT webhook FROM batches WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        let w = webhook_record(old.as_deref(), event, status, attempts, error);
        db.execute(
            "UPDATE batches SET webhook = ?2 WHERE id = ?1",
            params![id, w],
        )?;
        Ok(())
    }

    /// The Batch object (`None`: no such batch for this consumer).
    fn batch(&self, consumer: Option<&str>, id: &str) -> rusqlite::Result<Option<Batch>> {
        let db = self.db();
        let row = db
            .query_row(
                &format!("{BATCH_SELECT} WHERE b.id = ?1 AND b.consumer IS ?2"),
                params![id, consumer],
                batch_object,
            )
            .optional()?;
        Ok(row)
    }

    /// The Batch object, whoever owns it (for webhooks).
    fn batch_any(&self, id: &str) -> rusqlite::Result<Option<Batch>> {
        self.db()
            .query_row(
                &format!("{BATCH_SELECT} WHERE b.id = ?1"),
                [id],
                batch_object,
            )
            .optional()
    }

    /// Batches of a consumer, newest first, after `after`.
    fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> rusqlite::Result<Vec<Batch>> {
        let db = self.db();
        let cursor: Option<(i64, String)> = match after {
            Some(a) => db
                .query_row(
                    "SELECT created_at, id FROM batches WHERE id = ?1",
                    [a],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            None => None,
        };
        let (c_at, c_id) = cursor.unzip();
        let mut st = db.prepare(&format!(
            "{BATCH_SELECT} WHERE b.consumer IS ?1 AND (?2 IS NULL OR (b.created_at, b.id) < (?2, ?3))
             ORDER BY b.created_at DESC, b.id DESC LIMIT ?4"
        ))?;
        let rows = st.query_map(params![consumer, c_at, c_id, limit as i64], batch_object)?;
        rows.collect()
    }

    /// Batches waiting for validation: (id, endpoint, input file).
    fn validating(&self) -> rusqlite::Result<Vec<(String, String, String)>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, endpoint, input_file_id FROM batches WHERE status = 'validating'",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    fn fail_batch(&self, id: &str, errors: &Value) -> rusqlite::Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE batches SET status = 'failed', failed_at = ?2, errors = ?3 WHERE id = ?1 AND status = 'validating'",
            params![id, now(), errors.to_string()],
        )?;
        tx.execute("DELETE FROM requests WHERE batch_id = ?1", [id])?;
        tx.commit()
    }

    /// Start a batch whose requests were all added.
    fn start_batch(&self, id: &str, model: Option<&str>, total: u64) -> rusqlite::Result<()> {
        self.db().execute(
            "UPDATE batches SET status = 'in_progress', in_progress_at = ?2, total = ?3, model = ?4 WHERE id = ?1 AND status = 'validating'",
            params![id, now(), total as i64, model],
        )?;
        Ok(())
    }

    /// Request a cancel.
    fn cancel(&self, consumer: Option<&str>, id: &str) -> rusqlite::Result<Cancel> {
        let db = self.db();
        let status: Option<String> = db
            .query_row(
                "SELECT status FROM batches WHERE id = ?1 AND consumer IS ?2",
                params![id, consumer],
                |r| r.get(0),
            )
            .optional()?;
        match status.as_deref() {
            Some("validating" | "in_progress") => {
                db.execute(
                    "UPDATE batches SET status = 'cancelling', cancelling_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )?;
                Ok(Cancel::Requested)
            }
            Some(s) => Ok(Cancel::Refused(BatchStatus::shown(s))),
            None => Ok(Cancel::NotFound),
        }
    }
}

/// The rows of a two-text-column query.
fn text<T>(r: rusqlite::Result<T>) -> StoreResult<T> {
    r.map_err(Into::into)
}

impl Store {
    /// The `index`-th chunk of a file's content.
    pub(super) fn file_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(self.file_path(id)).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(index * CHUNK as u64))
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(CHUNK);
        f.take(CHUNK as u64)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        Ok((!buf.is_empty()).then(|| Bytes::from(buf)))
    }

    /// The newest batches of every consumer.
    pub(super) fn overview(&self, limit: usize) -> rusqlite::Result<Vec<Batch>> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "{BATCH_SELECT} ORDER BY b.created_at DESC, b.id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map([limit as i64], batch_object)?;
        rows.collect()
    }

    /// Where uploads are written before they are taken over.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }
}

fn pairs(st: &mut rusqlite::Statement<'_>) -> rusqlite::Result<Vec<(String, String)>> {
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        purpose: r.get(1)?,
        filename: r.get(2)?,
        bytes: r.get::<_, i64>(3)? as u64,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

const BATCH_SELECT: &str = "SELECT b.id, b.endpoint, b.input_file_id, b.completion_window,
  CASE b.status WHEN 'expiring' THEN 'in_progress' ELSE b.status END, b.created_at,
  b.in_progress_at, b.expires_at, b.finalizing_at, b.completed_at, b.failed_at, b.expired_at,
  b.cancelling_at, b.cancelled_at, b.output_file_id, b.error_file_id, b.errors, b.metadata,
  b.model, b.total,
  (SELECT COUNT(*) FROM requests r WHERE r.batch_id = b.id AND r.state = 'done'),
  (SELECT COUNT(*) FROM requests r WHERE r.batch_id = b.id AND r.state = 'failed'),
  b.input_tokens, b.output_tokens, b.webhook_url, b.webhook
  FROM batches b";

fn batch_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<Batch> {
    let json_col = |i: usize| -> rusqlite::Result<Value> {
        Ok(json_or_null(r.get::<_, Option<String>>(i)?.as_deref()))
    };
    let status: String = r.get(4)?;
    Ok(Batch {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        input_file_id: r.get(2)?,
        completion_window: r.get(3)?,
        status: BatchStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown batch status {status:?}").into(),
            )
        })?,
        created_at: r.get(5)?,
        in_progress_at: r.get(6)?,
        expires_at: r.get(7)?,
        finalizing_at: r.get(8)?,
        completed_at: r.get(9)?,
        failed_at: r.get(10)?,
        expired_at: r.get(11)?,
        cancelling_at: r.get(12)?,
        cancelled_at: r.get(13)?,
        output_file_id: r.get(14)?,
        error_file_id: r.get(15)?,
        errors: json_col(16)?,
        metadata: json_col(17)?,
        model: r.get(18)?,
        total: r.get(19)?,
        completed: r.get(20)?,
        failed: r.get(21)?,
        input_tokens: r.get(22)?,
        output_tokens: r.get(23)?,
        webhook: match r.get::<_, Option<String>>(24)? {
            Some(url) => Some((url, json_col(25)?)),
            None => None,
        },
    })
}
