//! Giving back what admitted requests held: conn leases and token reservations, many
//! requests' in one call of `lua-compat/release.lua` (per node on a cluster).

use super::*;

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
    /// `via` or the shared connection.
    pub(super) async fn release_loop(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<ReleaseMsg>,
        via: Option<Conn>,
    ) {
        while let Some((mut batch, ack)) = rx.recv().await {
            let mut acks: Vec<_> = ack.into_iter().collect();
            while batch.len() < 2000 {
                match rx.try_recv() {
                    Ok((more, ack)) => {
                        batch.extend(more);
                        acks.extend(ack);
                    }
                    Err(_) => break,
                }
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
