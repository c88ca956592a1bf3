//! The Admin API's store in one SQLite file (`admin.db` in `admin.data_dir`), every call
//! on the blocking pool: every change is one transaction with its audit row and the
//! store's version bump, so a crash never leaves a change without its audit entry.

use super::{AuditRow, Change, ConsumerRow, KeyRow, ObjectRow, Snapshot};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::migrate::{migrate, Migration};

const STEPS: &[Migration] = &[
    Migration {
        name: "consumers, keys, audit, meta",
        run: |tx| {
            tx.execute_batch(
                "CREATE TABLE consumers (name TEXT PRIMARY KEY, spec TEXT NOT NULL,
                 created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                 version INTEGER NOT NULL);
             CREATE TABLE keys (id TEXT PRIMARY KEY, consumer TEXT NOT NULL,
                 digest TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
                 created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER);
             CREATE INDEX keys_consumer ON keys(consumer);
             CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
                 actor TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL,
                 before TEXT, after TEXT);
             CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             INSERT INTO meta VALUES ('version', 0);",
            )
        },
    },
    Migration {
        name: "providers and models",
        run: |tx| {
            tx.execute_batch(
                "CREATE TABLE objects (kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
                 created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                 version INTEGER NOT NULL, PRIMARY KEY (kind, name));",
            )
        },
    },
];

#[derive(Clone)]
pub struct Sqlite {
    db: Arc<Mutex<Connection>>,
}

/// SQLite integers are signed: times and versions stored as `i64`.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn opt(v: Option<u64>) -> Option<i64> {
    v.map(int)
}

fn uint(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
}

fn uopt(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?
        .map(|v| u64::try_from(v).unwrap_or(0)))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("admin store: {e}")
}

impl Sqlite {
    /// Open (or create) the store in `dir` (blocking: call it at startup).
    pub fn open(dir: &Path) -> Result<Sqlite, String> {
        crate::owner_only::create_dir(dir)
            .map_err(|e| format!("admin.data_dir {}: {e}", dir.display()))?;
        let mut db = crate::owner_only::open_sqlite(&dir.join("admin.db")).map_err(err)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        migrate(&mut db, "admin store", STEPS)?;
        Ok(Sqlite {
            db: Arc::new(Mutex::new(db)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c).map_err(err)
        })
        .await
        .map_err(err)?
    }

    /// Everything stored (blocking: at startup).
    pub fn load_blocking(&self) -> Result<Snapshot, String> {
        let c = self.db.lock().unwrap_or_else(|p| p.into_inner());
        load(&c).map_err(err)
    }

    /// Write `change` and its audit row; the store's new version (`None`: a create whose
    /// name exists).
    pub async fn apply(&self, change: Change) -> Result<Option<u64>, String> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if let Some(r) = &change.upsert_consumer {
                if change.create {
                    let exists: bool = tx
                        .prepare("SELECT 1 FROM consumers WHERE name = ?1")?
                        .exists([&r.name])?;
                    if exists {
                        return Ok(None);
                    }
                }
                tx.execute(
                    "INSERT INTO consumers VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(name) DO UPDATE SET spec = ?2, updated_at = ?4, version = ?5",
                    params![
                        r.name,
                        r.spec,
                        int(r.created_at),
                        int(r.updated_at),
                        int(r.version)
                    ],
                )?;
            }
            if let Some(o) = &change.upsert_object {
                if change.create {
                    let exists: bool = tx
                        .prepare("SELECT 1 FROM objects WHERE kind = ?1 AND name = ?2")?
                        .exists([&o.kind, &o.name])?;
                    if exists {
                        return Ok(None);
                    }
                }
                tx.execute(
                    "INSERT INTO objects VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(kind, name) DO UPDATE SET body = ?3, updated_at = ?5, version = ?6",
                    params![o.kind, o.name, o.body, int(o.created_at), int(o.updated_at), int(o.version)],
                )?;
            }
            if let Some((kind, name)) = &change.delete_object {
                tx.execute("DELETE FROM objects WHERE kind = ?1 AND name = ?2", [kind, name])?;
            }
            if let Some(name) = &change.delete_consumer {
                tx.execute("DELETE FROM consumers WHERE name = ?1", [name])?;
                tx.execute("DELETE FROM keys WHERE consumer = ?1", [name])?;
            }
            if let Some(k) = &change.insert_key {
                tx.execute(
                    "INSERT INTO keys VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        k.id,
                        k.consumer,
                        k.digest,
                        k.prefix,
                        int(k.created_at),
                        opt(k.expires_at),
                        opt(k.revoked_at)
                    ],
                )?;
            }
            if let Some(k) = &change.update_key {
                tx.execute(
                    "UPDATE keys SET expires_at = ?2, revoked_at = ?3 WHERE id = ?1",
                    params![k.id, opt(k.expires_at), opt(k.revoked_at)],
                )?;
            }
            let (actor, action, object, before, after) = &change.audit;
            tx.execute(
                "INSERT INTO audit (at, actor, action, object, before, after)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    int(crate::admin::api::now()),
                    actor,
                    action,
                    object,
                    before,
                    after
                ],
            )?;
            tx.execute("UPDATE meta SET v = v + 1 WHERE k = 'version'", [])?;
            let v: i64 =
                tx.query_row("SELECT v FROM meta WHERE k = 'version'", [], |r| r.get(0))?;
            tx.commit()?;
            Ok(Some(u64::try_from(v).unwrap_or(0)))
        })
        .await
    }

    /// Audit entries after `after` (oldest first), at most `limit`.
    pub async fn audit(&self, after: u64, limit: u64) -> Result<Vec<AuditRow>, String> {
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT seq, at, actor, action, object, before, after FROM audit
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![int(after), int(limit)], |r| {
                let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
                Ok(AuditRow {
                    seq: uint(r, 0)?,
                    at: uint(r, 1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    object: r.get(4)?,
                    before: json(r.get(5)?),
                    after: json(r.get(6)?),
                })
            })?;
            rows.collect()
        })
        .await
    }
}

fn load(c: &Connection) -> rusqlite::Result<Snapshot> {
    let version: i64 = c
        .query_row("SELECT v FROM meta WHERE k = 'version'", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let mut st = c.prepare("SELECT name, spec, created_at, updated_at, version FROM consumers")?;
    let consumers = st
        .query_map([], |r| {
            Ok(ConsumerRow {
                name: r.get(0)?,
                spec: r.get(1)?,
                created_at: uint(r, 2)?,
                updated_at: uint(r, 3)?,
                version: uint(r, 4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut st = c.prepare(
        "SELECT id, consumer, digest, prefix, created_at, expires_at, revoked_at FROM keys",
    )?;
    let keys = st
        .query_map([], |r| {
            Ok(KeyRow {
                id: r.get(0)?,
                consumer: r.get(1)?,
                digest: r.get(2)?,
                prefix: r.get(3)?,
                created_at: uint(r, 4)?,
                expires_at: uopt(r, 5)?,
                revoked_at: uopt(r, 6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut st = c.prepare(
        "SELECT kind, name, body, created_at, updated_at, version FROM objects ORDER BY kind, name",
    )?;
    let objects = st
        .query_map([], |r| {
            Ok(ObjectRow {
                kind: r.get(0)?,
                name: r.get(1)?,
                body: r.get(2)?,
                created_at: uint(r, 3)?,
                updated_at: uint(r, 4)?,
                version: uint(r, 5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Snapshot {
        version: u64::try_from(version).unwrap_or(0),
        consumers,
        keys,
        objects,
    })
}
