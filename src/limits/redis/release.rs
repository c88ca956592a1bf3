//! Giving back what admitted requests held: conn leases and token reservations, many
//! requests' in one call of `lua-compat/release.lua` (per node on a cluster).

use super::*;

/// How long token blocks given back may wait for a call to ride.
pub(super) const LAZY_MS: u64 = 100;

/// Releases per call at most.
const MAX_BATCH: usize = 2000;

/// Waiting token blocks one admission call takes along at most.
const MAX_RIDE: usize = 256;

/// Releases to send at once, and whom to tell when they are applied.
pub(super) struct ReleaseMsg {
    releases: Vec<Release>,
    ack: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ReleaseMsg {
    /// Releases sent at once (a request's own, or waited for).
    pub(super) fn now(
        releases: Vec<Release>,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Self {
        ReleaseMsg { releases, ack }
    }
}

/// Token blocks this instance gives back, by the node of their keys (0 on one Redis).
/// Nobody waits for them, so they wait up to [`LAZY_MS`] to ride a call going to their
/// node anyway: the next admission call ([`RedisStore::riding`]) or release call. A busy
/// fleet returns a token block per key and second, and each call's fixed cost (most of it
/// Redis entering the script with cold caches) is most of Redis's work.
#[derive(Default)]
pub(super) struct LazyReleases {
    waiting: Mutex<HashMap<u32, Vec<Release>>>,
    /// Wakes [`RedisStore::flush_lazy`] when the first block starts to wait.
    first: tokio::sync::Notify,
}

impl LazyReleases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Vec<Release>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` blocks waiting for `node`.
    fn take(&self, node: u32, max: usize) -> Vec<Release> {
        let mut waiting = self.lock();
        let Some(list) = waiting.get_mut(&node) else {
            return Vec::new();
        };
        let taken = list.split_off(list.len().saturating_sub(max));
        if list.is_empty() {
            waiting.remove(&node);
        }
        taken
    }

    /// Everything waiting.
    pub(super) fn take_all(&self) -> Vec<Release> {
        self.lock().drain().flat_map(|(_, list)| list).collect()
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
        let out = self.call_via(via, "release", &inv).await;
        let blocks = run.iter().filter(|r| r.member.contains("#t|")).count() as u64;
        if blocks > 0 && matches!(out, Ok(1)) {
            let returned = self.metrics.blocks_returned.with_label_values(&["release"]);
            returned.inc_by(blocks);
        }
        out
    }

    /// The node a release waits for (0: every call of one Redis goes to it).
    fn lazy_node(&self, key: &str) -> u32 {
        match self.policy {
            LimitPolicy::RedisCluster => self.node_of(key),
            _ => 0,
        }
    }

    /// Give back quota leases nobody waits for: token blocks wait (see
    /// [`LazyReleases`]); slots and rate shares go at once (what they give back, another
    /// instance may need at once).
    pub(super) fn give_back_later(&self, back: Vec<Release>) {
        let (blocks, now): (Vec<Release>, Vec<Release>) =
            back.into_iter().partition(|r| r.kind == 4);
        if !now.is_empty() {
            self.send_release(ReleaseMsg::now(now, None));
        }
        if blocks.is_empty() {
            return;
        }
        let mut waiting = self.lazy.lock();
        let first = waiting.is_empty();
        for r in blocks {
            waiting.entry(self.lazy_node(&r.key)).or_default().push(r);
        }
        let full = waiting.values().map(Vec::len).sum::<usize>() >= MAX_BATCH;
        drop(waiting);
        if full {
            self.send_release(ReleaseMsg::now(self.lazy.take_all(), None));
        } else if first {
            self.lazy.first.notify_one();
        }
    }

    /// The waiting token blocks an admission call to the node of `key` takes along.
    pub(super) fn riding(&self, key: &str) -> Vec<Release> {
        self.lazy.take(self.lazy_node(key), MAX_RIDE)
    }

    /// Send what still waits [`LAZY_MS`] after the first block began to wait.
    pub(super) async fn flush_lazy(self: Arc<Self>) {
        loop {
            self.lazy.first.notified().await;
            tokio::time::sleep(Duration::from_millis(LAZY_MS)).await;
            let all = self.lazy.take_all();
            if !all.is_empty() {
                let _ = self.releases.send(ReleaseMsg::now(all, None));
            }
        }
    }

    /// Send releases as they come, everything queued meanwhile in one call (per node), on
    /// `via` or the shared connection, with the token blocks waiting for those nodes.
    pub(super) async fn release_loop(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<ReleaseMsg>,
        via: Option<Conn>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = first.releases;
            let mut acks: Vec<_> = first.ack.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        batch.extend(m.releases);
                        acks.extend(m.ack);
                    }
                    Err(_) => break,
                }
            }
            let mut nodes: Vec<u32> = batch.iter().map(|r| self.lazy_node(&r.key)).collect();
            nodes.sort_unstable();
            nodes.dedup();
            for n in nodes {
                batch.extend(self.lazy.take(n, MAX_BATCH));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block(key: &str, i: usize) -> Release {
        Release {
            kind: 4,
            key: key.to_string(),
            zset: format!("{key}:r"),
            member: format!("L{i}#t|10"),
            window_ms: 60_000,
            used: 1,
        }
    }

    #[test]
    fn a_call_takes_at_most_its_share_of_its_node_and_leaves_the_rest() {
        let lazy = LazyReleases::default();
        lazy.lock()
            .insert(1, (0..5).map(|i| block("a", i)).collect());
        lazy.lock().insert(2, vec![block("b", 9)]);
        assert_eq!(lazy.take(1, 3).len(), 3);
        assert!(lazy.take(3, 3).is_empty(), "no node 3");
        assert_eq!(lazy.take(1, 3).len(), 2);
        assert!(!lazy.lock().contains_key(&1), "an empty node is forgotten");
        assert_eq!(lazy.take_all().len(), 1);
        assert!(lazy.take_all().is_empty());
    }
}
