//! The SQLite response store: every call on tokio's blocking pool. Writes go through one
//! connection and do constant work (the consumer's running total is a row of its own;
//! an eviction deletes at most [`super::MAX_EVICTIONS`] rows, each once); reads use their
//! own connections, so with WAL they never wait for a writer.
//!
//! The file belongs to one config: the first config that opens it is recorded in it, and
//! another config's gateway refuses to open it (tenants of two configs never share
//! responses).

use super::{Put, RawResponse, ResponseStore, ResponseStoreError, Result, MAX_EVICTIONS};
use crate::migrate::{migrate, Migration};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Read connections (a read holds one for its query only).
const READERS: usize = 2;

pub struct SqliteResponses {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next: AtomicUsize,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS responses (
      id TEXT PRIMARY KEY, consumer TEXT NOT NULL, created INTEGER NOT NULL,
      bytes INTEGER NOT NULL, response TEXT NOT NULL, input TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS responses_owner ON responses (consumer, created);
    CREATE INDEX IF NOT EXISTS responses_age ON responses (created);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

fn open_conn(path: &Path) -> std::result::Result<Connection, String> {
    let db = crate::owner_only::open_sqlite(path)?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(db)
}

/// The store's schema, step by step (see [`crate::migrate`]).
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "responses and meta",
        run: |tx| tx.execute_batch(SCHEMA),
    },
    Migration {
        // A store from before the running totals gets them computed once, here.
        name: "each consumer's running total",
        run: |tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS usage (consumer TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
                 INSERT OR IGNORE INTO usage SELECT consumer, SUM(bytes) FROM responses GROUP BY consumer;",
            )
        },
    },
];

impl SqliteResponses {
    /// Open (or create) `responses.sqlite` in `dir`, owned by the config at `owner`
    /// (none: no ownership check, for tests and configs not read from a file).
    pub fn open(dir: &Path, owner: Option<&Path>) -> std::result::Result<SqliteResponses, String> {
        crate::owner_only::create_dir(dir)
            .map_err(|e| format!("responses.data_dir {}: {e}", dir.display()))?;
        let path = dir.join("responses.sqlite");
        let mut db = open_conn(&path)?;
        let at = |e: rusqlite::Error| format!("{}: {e}", path.display());
        db.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")
            .map_err(at)?;
        migrate(&mut db, &path.display().to_string(), MIGRATIONS)?;
        if let Some(owner) = owner {
            let me = owner.display().to_string();
            let recorded: Option<String> = db
                .query_row("SELECT value FROM meta WHERE key = 'config'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(at)?;
            match recorded {
                Some(o) if o != me => {
                    return Err(format!(
                        "responses.data_dir {}: this store belongs to the config {o}, not {me} \
                         (give each config its own data_dir, or delete the store to hand it over)",
                        dir.display()
                    ))
                }
                Some(_) => {}
                None => {
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES ('config', ?1)",
                        params![me],
                    )
                    .map_err(at)?;
                }
            }
        }
        let readers = (0..READERS)
            .map(|_| open_conn(&path).map(Mutex::new))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(SqliteResponses {
            writer: Arc::new(Mutex::new(db)),
            readers: Arc::new(readers),
            next: AtomicUsize::new(0),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let c = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|e| ResponseStoreError::Other(format!("store task: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let c = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|e| ResponseStoreError::Other(format!("store task: {e}")))?
    }
}

fn held(c: &Connection, consumer: &str) -> rusqlite::Result<i64> {
    Ok(c.query_row(
        "SELECT bytes FROM usage WHERE consumer = ?1",
        params![consumer],
        |r| r.get(0),
    )
    .optional()?
    .unwrap_or(0))
}

fn add(c: &Connection, consumer: &str, delta: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO usage (consumer, bytes) VALUES (?1, MAX(?2, 0))
         ON CONFLICT (consumer) DO UPDATE SET bytes = MAX(bytes + ?2, 0)",
        params![consumer, delta],
    )?;
    Ok(())
}

/// A column written as text or, for inputs ([`SqliteResponses::put`]), as a blob of UTF-8.
fn text(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    use rusqlite::types::{FromSqlError, ValueRef};
    match r.get_ref(i)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8(b.to_vec()).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e))
        }),
        other => Err(FromSqlError::InvalidType).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, other.data_type(), Box::new(e))
        }),
    }
}

#[async_trait]
impl ResponseStore for SqliteResponses {
    async fn put(&self, r: RawResponse, quota: u64) -> Result<Put> {
        self.write(move |c| {
            let bytes = r.bytes() as i64;
            let quota = i64::try_from(quota).unwrap_or(i64::MAX);
            if bytes > quota {
                return Ok(Put::Refused { held: 0 });
            }
            let tx = c.unchecked_transaction()?;
            let replaced: i64 = tx
                .query_row(
                    "SELECT bytes FROM responses WHERE id = ?1 AND consumer = ?2",
                    params![r.id, r.consumer],
                    |x| x.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let mut now = held(&tx, &r.consumer)? - replaced;
            // The oldest responses to evict, if any must go: at most MAX_EVICTIONS, and
            // only when that many are enough (otherwise nothing is deleted).
            let mut victims = Vec::new();
            if now + bytes > quota {
                let mut q = tx.prepare_cached(
                    "SELECT id, bytes FROM responses WHERE consumer = ?1 AND id != ?2
                     ORDER BY created, rowid LIMIT ?3",
                )?;
                let rows = q.query_map(params![r.consumer, r.id, MAX_EVICTIONS as i64], |x| {
                    Ok((x.get::<_, String>(0)?, x.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (id, b) = row?;
                    victims.push(id);
                    now -= b;
                    if now + bytes <= quota {
                        break;
                    }
                }
                if now + bytes > quota {
                    return Ok(Put::Refused {
                        held: held(&tx, &r.consumer)? as u64,
                    });
                }
            }
            for id in &victims {
                tx.execute("DELETE FROM responses WHERE id = ?1", params![id])?;
            }
            // The input (up to the body limit) is written into a zeroblob in place: bound
            // as a parameter, SQLite would copy it whole and build a record of it whole.
            tx.execute(
                "INSERT OR REPLACE INTO responses (id, consumer, created, bytes, response, input)
                 VALUES (?1, ?2, ?3, ?4, ?5, zeroblob(?6))",
                params![
                    r.id,
                    r.consumer,
                    r.created as i64,
                    bytes,
                    r.response,
                    r.input.len() as i64
                ],
            )?;
            if !r.input.is_empty() {
                let row = tx.last_insert_rowid();
                tx.blob_open(rusqlite::MAIN_DB, "responses", "input", row, false)?
                    .write_all_at(r.input.as_bytes(), 0)?;
            }
            let total = now + bytes;
            tx.execute(
                "INSERT INTO usage (consumer, bytes) VALUES (?1, ?2)
                 ON CONFLICT (consumer) DO UPDATE SET bytes = ?2",
                params![r.consumer, total],
            )?;
            tx.commit()?;
            Ok(Put::Stored {
                held: total as u64,
                evicted: victims.len(),
            })
        })
        .await
    }

    async fn get(&self, consumer: &str, id: &str) -> Result<Option<RawResponse>> {
        let (consumer, id) = (consumer.to_string(), id.to_string());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT id, consumer, created, response, input FROM responses
                 WHERE id = ?1 AND consumer = ?2",
                params![id, consumer],
                |r| {
                    Ok(RawResponse {
                        id: r.get(0)?,
                        consumer: r.get(1)?,
                        created: r.get::<_, i64>(2)? as u64,
                        response: r.get(3)?,
                        input: text(r, 4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn response(&self, consumer: &str, id: &str) -> Result<Option<String>> {
        let (consumer, id) = (consumer.to_string(), id.to_string());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT response FROM responses WHERE id = ?1 AND consumer = ?2",
                params![id, consumer],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn delete(&self, consumer: &str, id: &str) -> Result<bool> {
        let (consumer, id) = (consumer.to_string(), id.to_string());
        self.write(move |c| {
            let tx = c.unchecked_transaction()?;
            let bytes: Option<i64> = tx
                .query_row(
                    "DELETE FROM responses WHERE id = ?1 AND consumer = ?2 RETURNING bytes",
                    params![id, consumer],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(b) = bytes {
                add(&tx, &consumer, -b)?;
            }
            tx.commit()?;
            Ok(bytes.is_some())
        })
        .await
    }

    async fn sweep(&self, before: u64) -> Result<u64> {
        self.write(move |c| {
            let tx = c.unchecked_transaction()?;
            let freed: Vec<(String, i64)> = {
                let mut q = tx.prepare(
                    "SELECT consumer, SUM(bytes) FROM responses WHERE created < ?1
                     GROUP BY consumer",
                )?;
                let rows = q.query_map(params![before as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (consumer, b) in &freed {
                add(&tx, consumer, -b)?;
            }
            let n = tx.execute(
                "DELETE FROM responses WHERE created < ?1",
                params![before as i64],
            )?;
            tx.execute("DELETE FROM usage WHERE bytes <= 0", [])?;
            tx.commit()?;
            if n > 0 {
                c.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn held(&self, consumer: &str) -> Result<u64> {
        let consumer = consumer.to_string();
        self.read(move |c| Ok(held(c, &consumer)?.max(0) as u64))
            .await
    }
}
