//! The graceful upgrade's guard: the old process hands its listening sockets over only to
//! a socket that no other local user could have put there.
//!
//! On SIGQUIT Pingora connects to `server.upgrade_sock` and sends the listening sockets
//! to whoever listens there. The default path is in the temp dir under a predictable
//! name, so on a shared `/tmp` another local user could bind it first and receive the
//! listeners (and with them the clients' connections and keys). This watcher replaces
//! Pingora's signal watcher: on SIGQUIT it waits up to [`WAIT_FOR_SOCKET`] for the new
//! process's socket and lets the upgrade go on only when the socket is not a symlink, is
//! owned by this process's user, and no other user can replace it (each directory above
//! it is owned by root or this user, and one that others may write to has the sticky
//! bit). Otherwise it logs why and keeps serving: the listeners stay with this process.
//! SIGTERM and SIGINT are passed on as Pingora's own watcher does.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How long SIGQUIT waits for the new process's socket (Pingora's own sender tries for
/// about as long).
pub const WAIT_FOR_SOCKET: Duration = Duration::from_secs(5);

/// What [`check`] needs of a path: `lstat`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub uid: u32,
    /// Permission bits, sticky bit included (`st_mode & 0o7777`).
    pub mode: u32,
}

/// The kinds of file [`check`] tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Socket,
    Dir,
    Symlink,
    Other,
}

/// Why an upgrade socket is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing at the path (no new process waiting), or it could not be read.
    Missing(String),
    /// The path is a symlink or not a socket.
    NotASocket(Kind),
    /// The socket belongs to another user.
    ForeignSocket { uid: u32 },
    /// A directory above the socket could let another user replace it.
    UnsafeDir { dir: PathBuf, uid: u32, mode: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing(e) => write!(f, "no new process listens there ({e}): start `run --upgrade` first"),
            Refusal::NotASocket(k) => write!(f, "it is not a unix socket but {k:?}"),
            Refusal::ForeignSocket { uid } => write!(f, "the socket belongs to uid {uid}, not to this process's user"),
            Refusal::UnsafeDir { dir, uid, mode } => write!(
                f,
                "{} (uid {uid}, mode {mode:o}) lets another user replace the socket: use a directory \
                 owned by root or this user that others cannot write to (or that has the sticky bit)",
                dir.display()
            ),
        }
    }
}

/// Whether the socket at `path` may receive the listeners of a process running as
/// `euid`. `stat` is `lstat` (a fake in tests); `path` should be absolute, or every
/// directory above it is not checked.
pub fn check(
    path: &Path,
    euid: u32,
    stat: impl Fn(&Path) -> std::io::Result<Entry>,
) -> Result<(), Refusal> {
    let sock = stat(path).map_err(|e| Refusal::Missing(e.to_string()))?;
    if sock.kind != Kind::Socket {
        return Err(Refusal::NotASocket(sock.kind));
    }
    if sock.uid != euid {
        return Err(Refusal::ForeignSocket { uid: sock.uid });
    }
    for dir in path
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
    {
        let e = stat(dir).map_err(|e| Refusal::Missing(format!("{}: {e}", dir.display())))?;
        let owned = e.uid == 0 || e.uid == euid;
        // Writable by group or others is safe only with the sticky bit (then nobody but
        // the entry's owner, the directory's owner and root may remove or rename it).
        let shared = e.mode & 0o022 != 0 && e.mode & 0o1000 == 0;
        if e.kind != Kind::Dir || !owned || shared {
            return Err(Refusal::UnsafeDir {
                dir: dir.to_path_buf(),
                uid: e.uid,
                mode: e.mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// `lstat` as [`check`] reads it.
pub fn lstat(path: &Path) -> std::io::Result<Entry> {
    let m = std::fs::symlink_metadata(path)?;
    let t = m.file_type();
    let kind = if t.is_symlink() {
        Kind::Symlink
    } else if t.is_socket() {
        Kind::Socket
    } else if t.is_dir() {
        Kind::Dir
    } else {
        Kind::Other
    };
    Ok(Entry {
        kind,
        uid: m.uid(),
        mode: m.mode() & 0o7777,
    })
}

/// Waits up to [`WAIT_FOR_SOCKET`] for a socket at `path`, then checks it (blocking
/// file-system calls: run it on the blocking pool).
fn wait_and_check(path: &Path) -> Result<(), Refusal> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let euid = nix::unistd::geteuid().as_raw();
    let deadline = std::time::Instant::now() + WAIT_FOR_SOCKET;
    loop {
        match check(&path, euid, lstat) {
            Err(Refusal::Missing(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Pingora's signal watcher with the upgrade socket checked before SIGQUIT hands the
/// listeners over.
pub struct GuardedSignals {
    pub upgrade_sock: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for GuardedSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot watch signals: shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    let path = self.upgrade_sock.clone();
                    let shown = path.display().to_string();
                    match tokio::task::spawn_blocking(move || wait_and_check(&path)).await {
                        Ok(Ok(())) => return ShutdownSignal::GracefulUpgrade,
                        Ok(Err(why)) => tracing::error!(
                            upgrade_sock = %shown,
                            "SIGQUIT: the listening sockets stay with this process, which keeps serving: {why}"
                        ),
                        Err(e) => tracing::error!("SIGQUIT: the upgrade socket check failed: {e}"),
                    }
                }
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ME: u32 = 1000;

    fn fs(entries: &[(&str, Kind, u32, u32)]) -> impl Fn(&Path) -> std::io::Result<Entry> {
        let map: HashMap<PathBuf, Entry> = entries
            .iter()
            .map(|&(p, kind, uid, mode)| (PathBuf::from(p), Entry { kind, uid, mode }))
            .collect();
        move |p: &Path| {
            map.get(p)
                .copied()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn tree(sock: (Kind, u32), tmp: (u32, u32)) -> impl Fn(&Path) -> std::io::Result<Entry> {
        fs(&[
            ("/", Kind::Dir, 0, 0o755),
            ("/tmp", Kind::Dir, tmp.0, tmp.1),
            ("/tmp/a.sock", sock.0, sock.1, 0o755),
        ])
    }

    #[test]
    fn own_socket_in_sticky_tmp_or_private_dir_is_taken() {
        let p = Path::new("/tmp/a.sock");
        assert_eq!(check(p, ME, tree((Kind::Socket, ME), (0, 0o1777))), Ok(()));
        assert_eq!(check(p, ME, tree((Kind::Socket, ME), (ME, 0o700))), Ok(()));
        assert_eq!(check(p, 0, tree((Kind::Socket, 0), (0, 0o755))), Ok(()));
    }

    #[test]
    fn another_users_socket_or_a_symlink_is_refused() {
        let p = Path::new("/tmp/a.sock");
        assert_eq!(
            check(p, ME, tree((Kind::Socket, 1001), (0, 0o1777))),
            Err(Refusal::ForeignSocket { uid: 1001 })
        );
        assert_eq!(
            check(p, ME, tree((Kind::Symlink, ME), (0, 0o1777))),
            Err(Refusal::NotASocket(Kind::Symlink))
        );
        assert_eq!(
            check(p, ME, tree((Kind::Other, ME), (0, 0o1777))),
            Err(Refusal::NotASocket(Kind::Other))
        );
    }

    #[test]
    fn a_directory_others_can_write_without_the_sticky_bit_is_refused() {
        let p = Path::new("/tmp/a.sock");
        for mode in [0o777, 0o775, 0o757] {
            assert!(
                matches!(
                    check(p, ME, tree((Kind::Socket, ME), (0, mode))),
                    Err(Refusal::UnsafeDir { .. })
                ),
                "{mode:o}"
            );
        }
        // A directory of another user, even a private one: its owner may replace entries.
        assert!(matches!(
            check(p, ME, tree((Kind::Socket, ME), (1001, 0o1777))),
            Err(Refusal::UnsafeDir { uid: 1001, .. })
        ));
        // Every directory above is checked, not only the socket's own.
        let deep = fs(&[
            ("/", Kind::Dir, 0, 0o755),
            ("/srv", Kind::Dir, 1001, 0o755),
            ("/srv/gw", Kind::Dir, ME, 0o700),
            ("/srv/gw/a.sock", Kind::Socket, ME, 0o755),
        ]);
        assert!(matches!(
            check(Path::new("/srv/gw/a.sock"), ME, deep),
            Err(Refusal::UnsafeDir { uid: 1001, .. })
        ));
    }

    #[test]
    fn nothing_there_is_missing() {
        assert!(matches!(
            check(
                Path::new("/tmp/none.sock"),
                ME,
                tree((Kind::Socket, ME), (0, 0o1777))
            ),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn lstat_tells_a_socket_from_a_symlink_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let link = dir.path().join("l.sock");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        assert_eq!(lstat(&sock).unwrap().kind, Kind::Socket);
        assert_eq!(lstat(&link).unwrap().kind, Kind::Symlink);
        assert_eq!(lstat(dir.path()).unwrap().kind, Kind::Dir);
    }
}
