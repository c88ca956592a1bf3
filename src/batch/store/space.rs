//! Space in the SQLite store: requests refer to their input file instead of copying it,
//! consumers' files are held to a quota, and what the retention schedule says is over is
//! deleted (and its pages given back to the file system).

use super::{now, text, FileRow, NewRequest, Store, StoreResult, Swept};
use crate::batch::backend::{body_of_line, LineRef};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// Tables added to the store's schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orphans (id TEXT PRIMARY KEY);
CREATE INDEX IF NOT EXISTS files_owner ON files (consumer);
CREATE INDEX IF NOT EXISTS batches_input ON batches (input_file_id, status);
";

/// Statuses of a batch that may still read its input file.
const ACTIVE: &str = "('validating', 'in_progress', 'cancelling', 'expiring')";

/// Reads request lines back from one input file.
pub(super) struct LineReader {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl LineReader {
    pub(super) fn new(path: PathBuf) -> LineReader {
        LineReader { path, file: None }
    }

    /// The `body` of the line at `at`.
    pub(super) fn body(&mut self, at: LineRef) -> Option<String> {
        use std::os::unix::fs::FileExt;
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let f = self.file.as_ref()?;
        let mut buf = vec![0; usize::try_from(at.len).ok()?];
        f.read_exact_at(&mut buf, at.start).ok()?;
        body_of_line(&buf)
    }
}

impl Store {
    /// Bytes of a consumer's files.
    pub(super) fn usage(db: &Connection, consumer: Option<&str>) -> rusqlite::Result<u64> {
        db.query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM files WHERE consumer IS ?1",
            [consumer],
            |r| r.get::<_, i64>(0),
        )
        .map(|b| b.max(0) as u64)
    }

    /// Take over an uploaded file unless the consumer would go over `quota` (checked and
    /// inserted under the store's lock, so concurrent uploads cannot both slip in).
    pub(super) fn add_file_within(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
        quota: u64,
    ) -> StoreResult<bool> {
        let db = self.db();
        let used = text(Store::usage(&db, consumer))?;
        if used.saturating_add(f.bytes) > quota {
            return Ok(false);
        }
        std::fs::rename(content, self.file_path(&f.id)).map_err(|e| e.to_string())?;
        text(db.execute(
            "INSERT INTO files (id, consumer, purpose, filename, bytes, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![f.id, consumer, f.purpose, f.filename, f.bytes as i64, f.created_at, f.expires_at],
        ))?;
        Ok(true)
    }

    /// Remove a file's content, or leave it to [`Store::sweep`] while a batch reads it.
    pub(super) fn drop_content(&self, db: &Connection, id: &str) -> rusqlite::Result<()> {
        let in_use = db
            .query_row(
                &format!(
                    "SELECT 1 FROM batches WHERE input_file_id = ?1 AND status IN {ACTIVE} LIMIT 1"
                ),
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if in_use {
            db.execute("INSERT OR IGNORE INTO orphans (id) VALUES (?1)", [id])?;
        } else {
            let _ = std::fs::remove_file(self.file_path(id));
        }
        Ok(())
    }

    /// Add requests of a batch in validation; returns the lines whose custom_id another
    /// line has.
    pub(super) fn add_requests(&self, id: &str, rows: &[NewRequest]) -> rusqlite::Result<Vec<u64>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut duplicates = Vec::new();
        {
            let mut ins = tx.prepare(
                "INSERT OR IGNORE INTO requests (batch_id, custom_id, line, start, len, state) VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            )?;
            let mut line_of =
                tx.prepare("SELECT line FROM requests WHERE batch_id = ?1 AND custom_id = ?2")?;
            for r in rows {
                let n = ins.execute(params![
                    id,
                    r.custom_id,
                    r.line as i64,
                    r.at.start as i64,
                    r.at.len as i64
                ])?;
                if n == 0 {
                    let first: i64 = line_of.query_row(params![id, r.custom_id], |x| x.get(0))?;
                    if first as u64 != r.line {
                        duplicates.push(r.line);
                    }
                }
            }
        }
        tx.commit()?;
        Ok(duplicates)
    }

    /// Delete expired files (not while a batch reads them), contents deleted while a batch
    /// read them, and the requests of batches ended `retention` seconds ago; give the freed
    /// pages back.
    pub(super) fn sweep(&self, retention: i64) -> rusqlite::Result<Swept> {
        let t = now();
        let mut swept = Swept::default();
        let db = self.db();
        let expired: Vec<(String, i64)> = db
            .prepare(&format!(
                "SELECT id, bytes FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1
                 AND id NOT IN (SELECT input_file_id FROM batches WHERE status IN {ACTIVE})"
            ))?
            .query_map([t], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, bytes) in expired {
            db.execute("DELETE FROM files WHERE id = ?1", [&id])?;
            let _ = std::fs::remove_file(self.file_path(&id));
            swept.files += 1;
            swept.bytes += bytes.max(0) as u64;
        }
        let orphans: Vec<String> = db
            .prepare(&format!(
                "SELECT id FROM orphans WHERE id NOT IN (SELECT input_file_id FROM batches WHERE status IN {ACTIVE})"
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in orphans {
            let _ = std::fs::remove_file(self.file_path(&id));
            db.execute("DELETE FROM orphans WHERE id = ?1", [&id])?;
        }
        let ended: Vec<String> = db
            .prepare(
                "SELECT id FROM batches WHERE purged = 0
                 AND status IN ('completed', 'failed', 'expired', 'cancelled')
                 AND COALESCE(completed_at, failed_at, expired_at, cancelled_at) <= ?1",
            )?
            .query_map([t - retention], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ended {
            db.execute("DELETE FROM requests WHERE batch_id = ?1", [&id])?;
            db.execute("UPDATE batches SET purged = 1 WHERE id = ?1", [&id])?;
            swept.batches += 1;
        }
        if swept.files + swept.batches > 0 {
            // Pages freed by the deletes go back to the file system (stores created with
            // incremental auto-vacuum), and the write-ahead log is truncated.
            // (The pragma frees one page per step: step it to the end.)
            let mut vacuum = db.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
            let _: rusqlite::Result<(i64, i64, i64)> =
                db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        }
        Ok(swept)
    }
}
