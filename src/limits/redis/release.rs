//! Giving back what admitted requests held: conn leases and token reservations, many
//! requests' in one call of `lua-compat/release.lua` (per node on a cluster).

use super::*;

/// How long token blocks given back may wait for other releases to share their call.
pub(super) const LAZY_MS: u64 = 100;

/// Releases per call at most.
const MAX_BATCH: usize = 2000;

/// Releases to send, and whom to tell when they are applied.
pub(super) struct ReleaseMsg {
    releases: Vec<Release>,
    ack: Option<tokio::sync::oneshot::Sender<()>>,
    /// Token blocks this instance gives back: nobody waits for them, so they wait up to
    /// [`LAZY_MS`] to share a call with others. (Slots and rate shares go at once: what
    /// they give back, another instance may need at once.)
    lazy: bool,
}

impl ReleaseMsg {
    /// Releases sent at once (a request's own, or waited for).
    pub(super) fn now(
        releases: Vec<Release>,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Self {
        ReleaseMsg {
            releases,
            ack,
            lazy: false,
        }
    }

    /// Quota leases given back: token blocks alone may wait a little for company.
    pub(super) fn lazy(releases: Vec<Release>) -> Self {
        let lazy = releases.iter().all(|r| r.kind == 4);
        ReleaseMsg {
            releases,
            ack: None,
            lazy,
        }
    }
}

/// The releases of the next call, whom to tell, and whether all of them may wait.
struct Pending {
    batch: Vec<Release>,
    acks: Vec<tokio::sync::oneshot::Sender<()>>,
    lazy: bool,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            batch: Vec::new(),
            acks: Vec::new(),
            lazy: true,
        }
    }
}

impl Pending {
    fn take(&mut self, m: ReleaseMsg) {
        self.lazy &= m.lazy;
        self.batch.extend(m.releases);
        self.acks.extend(m.ack);
    }
}

impl RedisStore {
    /// One call of release.lua. On failure the leases expire by themselves after
    /// lease_ttl; -1: a key is not on the node the cluster map said (nothing changed).
    async fn release_call(&self, via: Option<&Conn>, run: &[Release]) -> Result<i64, RedisFault> {
        let mut inv = self.release.prepare_invoke();
        inv.arg(run.len());
        for r in run {
            inv.arg(r.kind).arg(&r.member).arg(r.window_ms).arg(r.used);
        }
        let keys = run.iter().flat_map(|r| [r.key.as_str(), r.zset.as_str()]);
        call::push_keys(self.policy == LimitPolicy::RedisCluster, &mut inv, keys);
        self.call_via(via, "release", &inv).await
    }

    /// Send releases as they come, everything queued meanwhile in one call (per node), on
    /// `via` or the shared connection. While only returned token blocks wait (nobody waits
    /// for them), they wait up to [`LAZY_MS`] for more to share the call: a busy fleet returns
    /// a token block per key and second, and a call's fixed cost is most of Redis's work.
    pub(super) async fn release_loop(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<ReleaseMsg>,
        via: Option<Conn>,
    ) {
        while let Some(first) = rx.recv().await {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(LAZY_MS);
            let mut next = Pending::default();
            next.take(first);
            loop {
                while next.batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => next.take(m),
                        Err(_) => break,
                    }
                }
                if !next.lazy || next.batch.len() >= MAX_BATCH {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => next.take(m),
                    Ok(None) | Err(_) => break,
                }
            }
            let Pending { batch, acks, .. } = next;
            // One call per node, at once (a node that hangs holds back no other node's
            // releases); if the cluster map was stale, one per slot.
            let store = &*self;
            let runs = store.by_node(batch, |r| &r.key).into_iter().map(|run| {
                let via = via.as_ref();
                async move {
                    if let Ok(-1) = store.release_call(via, &run).await {
                        store.topology_stale();
                        for run in store.by_slot(run, |r| &r.key) {
                            let _ = store.release_call(via, &run).await;
                        }
                    }
                }
            });
            futures_util::future::join_all(runs).await;
            for a in acks {
                let _ = a.send(());
            }
        }
    }
}
