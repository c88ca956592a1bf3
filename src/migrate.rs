//! Numbered schema migrations for the SQLite stores (batches, stored responses).
//!
//! `PRAGMA user_version` records how many steps a store file has had. Each pending step
//! runs in one transaction together with its version bump, so a crash leaves the store at
//! a whole step; an error names the store and the step instead of being swallowed. A store
//! written by a newer gateway (more steps than this one knows) is refused rather than
//! misread.
//!
//! Stores made before the steps were numbered are at version 0 with some of the later
//! columns present: steps that add columns use [`add_column`], which adds only what is
//! missing.

use rusqlite::{Connection, Transaction};

/// One step of a store's schema.
pub struct Migration {
    /// What the step does (in errors).
    pub name: &'static str,
    pub run: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// Bring `db` (the store called `store` in errors) up to date with `steps`.
pub fn migrate(db: &mut Connection, store: &str, steps: &[Migration]) -> Result<(), String> {
    let at: usize = db
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| format!("{store}: reading the schema version: {e}"))
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX))?;
    if at > steps.len() {
        return Err(format!(
            "{store}: the schema is at version {at}, newer than this gateway's {} \
             (a newer gateway wrote it; run that version, or move the store away)",
            steps.len()
        ));
    }
    for (i, step) in steps.iter().enumerate().skip(at) {
        let fail = |e: rusqlite::Error| {
            format!("{store}: schema step {} ({}) failed: {e}", i + 1, step.name)
        };
        let tx = db.transaction().map_err(fail)?;
        (step.run)(&tx).map_err(fail)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

/// `ALTER TABLE table ADD COLUMN column decl`, unless the table has that column already.
pub fn add_column(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    decl: &str,
) -> rusqlite::Result<()> {
    let has: bool = tx
        .prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?
        .exists([column])?;
    if !has {
        tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            name: "table t",
            run: |tx| tx.execute_batch("CREATE TABLE IF NOT EXISTS t (a INTEGER)"),
        },
        Migration {
            name: "column b",
            run: |tx| add_column(tx, "t", "b", "TEXT"),
        },
    ];

    fn version(db: &Connection) -> i64 {
        db.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn steps_run_once_each_and_record_the_version() {
        let mut db = Connection::open_in_memory().unwrap();
        migrate(&mut db, "test store", STEPS).unwrap();
        assert_eq!(version(&db), 2);
        db.execute("INSERT INTO t (a, b) VALUES (1, 'x')", [])
            .unwrap();
        migrate(&mut db, "test store", STEPS).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_store_from_before_the_numbering_gets_only_what_it_lacks() {
        let mut db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (a INTEGER, b TEXT)")
            .unwrap();
        migrate(&mut db, "test store", STEPS).unwrap();
        assert_eq!(version(&db), 2);
    }

    #[test]
    fn a_failing_step_is_an_error_naming_it_and_leaves_the_version() {
        let mut db = Connection::open_in_memory().unwrap();
        let bad = [Migration {
            name: "broken",
            run: |tx| tx.execute_batch("ALTER TABLE missing ADD COLUMN x"),
        }];
        let e = migrate(&mut db, "test store", &bad).unwrap_err();
        assert!(
            e.contains("test store") && e.contains("step 1 (broken)"),
            "{e}"
        );
        assert_eq!(version(&db), 0);
    }

    #[test]
    fn a_newer_store_is_refused() {
        let mut db = Connection::open_in_memory().unwrap();
        db.pragma_update(None, "user_version", 9).unwrap();
        let e = migrate(&mut db, "test store", STEPS).unwrap_err();
        assert!(e.contains("newer"), "{e}");
    }
}
