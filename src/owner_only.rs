//! The gateway's stored data is readable by its own user only.
//!
//! The SQLite stores and the batch files hold prompts and answers, and `admin.db` holds
//! the credentials of providers added through the Admin API. Created under the usual
//! umask (022) they would be world-readable, so another local user could read them. Here:
//! a data directory the gateway creates is 0700; a directory wholly its own (the batch
//! store's `files/`) is set to 0700 even when it exists, so files an older build wrote
//! there are covered, and the files the gateway writes there are 0600; a database and its `-wal`, `-shm` and `-journal` files are 0600
//! (SQLite gives the side files the database's mode when it creates them). A data
//! directory the operator made is left as it is. Blocking file-system calls: call these
//! where the stores open, at start or on the blocking pool.

use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Create `dir` and any missing parent, owner-only; an existing one is left as it is.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Create `dir` owner-only, or make an existing one owner-only: for directories only the
/// gateway writes to.
pub fn own_dir(dir: &Path) -> std::io::Result<()> {
    create_dir(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Options that create (or truncate) a file for writing, owner-only when created: the
/// batch store's files (`tokio::fs::OpenOptions::from` takes them too).
pub fn file_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true).mode(0o600);
    o
}

/// Open (or create) the SQLite database at `path`, owner-only with its side files. Call
/// it before `journal_mode = WAL`, so the WAL is created owner-only too.
pub fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, String> {
    let db = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    restrict_db(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(db)
}

/// Set the database at `path` and its side files that exist to 0600.
fn restrict_db(path: &Path) -> std::io::Result<()> {
    let mut all = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        all.push(side.into());
    }
    for p in all {
        match std::fs::set_permissions(&p, Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_databases_are_owner_only_under_any_umask() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a/b");
        create_dir(&data).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&data)), (0o700, 0o700));
        let db_path = data.join("x.db");
        let db = open_sqlite(&db_path).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (v); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let wal = data.join("x.db-wal");
        let shm = data.join("x.db-shm");
        assert!(wal.exists() && shm.exists());
        assert_eq!(
            (mode(&db_path), mode(&wal), mode(&shm)),
            (0o600, 0o600, 0o600)
        );
    }

    #[test]
    fn an_older_builds_world_readable_files_are_made_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let files = root.path().join("files");
        std::fs::create_dir(&files).unwrap();
        std::fs::set_permissions(&files, Permissions::from_mode(0o755)).unwrap();
        let db_path = root.path().join("old.db");
        {
            let db = rusqlite::Connection::open(&db_path).unwrap();
            db.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v);")
                .unwrap();
            std::fs::set_permissions(&db_path, Permissions::from_mode(0o644)).unwrap();
            let wal = root.path().join("old.db-wal");
            std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
            // Kept open, so the WAL is still there when the new opener looks.
            let _again = open_sqlite(&db_path).unwrap();
            assert_eq!((mode(&db_path), mode(&wal)), (0o600, 0o600));
        }
        own_dir(&files).unwrap();
        assert_eq!(mode(&files), 0o700);
        // An operator's directory that exists is left alone.
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o750)).unwrap();
        create_dir(root.path()).unwrap();
        assert_eq!(mode(root.path()), 0o750);
    }
}
