//! Per-thread lanes: each worker thread that admits requests gets its own group-commit
//! queue, run by a task on that thread's runtime, and (the `redis` policy) its own
//! connection to Redis and release queue. A request's admission and release then never
//! hop to another thread: a hop costs a futex wake and two context switches each way,
//! which profiling showed as a fifth of the gateway's CPU when one background thread made
//! every call.
//!
//! The connection is made lazily on the thread, reconnects by itself, and loads the
//! scripts on first use. On Redis Cluster the lane shares the cluster connection (it
//! routes each call to its node) and its group commit makes one call per node. Releases
//! without a lane of their own (the cluster policy, or no runtime on the calling thread)
//! go to the shared queue of the background service.

use super::*;

/// One thread's queues; their tasks run on that thread's runtime.
pub(super) struct Lane {
    admissions: group::AdmitQueue,
    releases: mpsc::UnboundedSender<ReleaseMsg>,
}

impl RedisStore {
    /// This thread's lane, made on first use (`None`: not a Redis policy, no runtime here,
    /// or the cluster not connected yet).
    fn lane(&self) -> Option<&Lane> {
        let cluster = match self.policy {
            LimitPolicy::Redis => false,
            LimitPolicy::RedisCluster => true,
            _ => return None,
        };
        let handle = tokio::runtime::Handle::try_current().ok()?;
        self.lanes
            .get_or_try(|| {
                let store = self.me.upgrade().ok_or(())?;
                let (admissions, admit_rx) = mpsc::unbounded_channel();
                if cluster {
                    let conn = self.conn.get().cloned().ok_or(())?;
                    handle.spawn(store.admit_loop_cluster(admit_rx, conn));
                    return Ok(Lane {
                        admissions,
                        releases: self.releases.clone(),
                    });
                }
                let conn = Conn::single_lazy(&self.urls, self.timeout).map_err(|_| ())?;
                let (releases, release_rx) = mpsc::unbounded_channel();
                handle.spawn(store.clone().admit_loop(admit_rx, conn.clone()));
                handle.spawn(store.release_loop(release_rx, Some(conn)));
                Ok::<_, ()>(Lane {
                    admissions,
                    releases,
                })
            })
            .ok()
    }

    /// Where this thread queues its admissions (`None`: no lane here).
    pub(super) fn admission_queue(&self) -> Option<&group::AdmitQueue> {
        self.lane().map(|l| &l.admissions)
    }

    /// Queue releases on this thread's lane (or the shared queue).
    pub(super) fn send_release(&self, msg: ReleaseMsg) {
        let queue = self.lane().map_or(&self.releases, |l| &l.releases);
        // The receiver lives as long as the runtime; if it is gone the leases expire.
        let _ = queue.send(msg);
    }
}
