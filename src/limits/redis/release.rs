//! Giving back what admitted requests held: conn leases and token reservations, many
//! requests' in one call of `lua-compat/release.lua` (per node on a cluster).

use super::*;
use std::collections::VecDeque;
use tokio::time::Instant;

/// How long token blocks and rate shares given back may wait for a call to ride.
pub(super) const LAZY_MS: u64 = 100;

/// Releases per call at most.
const MAX_BATCH: usize = 2000;

/// Waiting releases one admission call takes along at most.
const MAX_RIDE: usize = 256;

/// One thing to give back: a conn lease or a token reservation (with the tokens used).
pub(super) struct Release {
    pub(super) kind: u8,
    pub(super) key: String,
    pub(super) zset: String,
    pub(super) member: String,
    pub(super) window_ms: u64,
    pub(super) used: u64,
}

impl Release {
    /// `release.lua`'s kinds: a rate share, a conn lease or slot, tokens.
    pub(super) const SHARE: u8 = 1;
    pub(super) const CONN: u8 = 2;
    pub(super) const TOKENS: u8 = 4;

    /// A token block (a quota lease's, or a request's own reservation inside one).
    pub(super) fn is_token_block(&self) -> bool {
        self.kind == Self::TOKENS && self.member.contains("#t|")
    }

    /// What nobody waits for once given back, so it may wait to ride another call: token
    /// blocks and rate shares (a conn slot is a request another instance may be waiting to
    /// run).
    pub(super) fn may_wait(&self) -> bool {
        self.kind == Self::SHARE || self.is_token_block()
    }
}

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

/// Token blocks and rate shares this instance gives back, by the node of their keys (0 on
/// one Redis). Nobody waits for them, so they wait up to [`LAZY_MS`] to ride a call going
/// to their node anyway: the next admission call ([`RedisStore::riding`]) or release call.
/// A busy fleet returns a token block and a rate share per key and second or so, and each
/// call's fixed cost (most of it Redis entering the script with cold caches) is most of
/// Redis's work.
#[derive(Default)]
pub(super) struct LazyReleases {
    /// Per node, oldest first, each with when it began to wait.
    waiting: Mutex<HashMap<u32, VecDeque<(Instant, Release)>>>,
    /// Wakes [`RedisStore::flush_lazy`] when the first release starts to wait.
    first: tokio::sync::Notify,
}

impl LazyReleases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, VecDeque<(Instant, Release)>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` releases waiting for `node`, the oldest first.
    fn take(&self, node: u32, max: usize) -> Vec<Release> {
        let mut waiting = self.lock();
        let Some(list) = waiting.get_mut(&node) else {
            return Vec::new();
        };
        let n = max.min(list.len());
        let taken = list.drain(..n).map(|(_, r)| r).collect();
        if list.is_empty() {
            waiting.remove(&node);
        }
        taken
    }

    /// Everything that has waited [`LAZY_MS`] at `now` (no call to its node came).
    fn take_due(&self, now: Instant) -> Vec<Release> {
        let mut waiting = self.lock();
        let mut due = Vec::new();
        for list in waiting.values_mut() {
            while list
                .front()
                .is_some_and(|(since, _)| now >= *since + Duration::from_millis(LAZY_MS))
            {
                due.extend(list.pop_front().map(|(_, r)| r));
            }
        }
        waiting.retain(|_, list| !list.is_empty());
        due
    }

    /// When the oldest release waiting began to wait.
    fn oldest(&self) -> Option<Instant> {
        let waiting = self.lock();
        waiting
            .values()
            .filter_map(|l| l.front().map(|(t, _)| *t))
            .min()
    }

    /// Everything waiting.
    pub(super) fn take_all(&self) -> Vec<Release> {
        self.lock()
            .drain()
            .flat_map(|(_, list)| list.into_iter().map(|(_, r)| r))
            .collect()
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
        let blocks = run.iter().filter(|r| r.is_token_block()).count() as u64;
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

    /// Give back quota leases nobody waits for: those that [may wait](Release::may_wait)
    /// wait (see [`LazyReleases`]; until they are back, Redis counts them as still held:
    /// what waiting costs is that no instance can use them for up to [`LAZY_MS`]); the
    /// others go at once.
    pub(super) fn give_back_later(&self, back: Vec<Release>) {
        let (later, now): (Vec<Release>, Vec<Release>) =
            back.into_iter().partition(Release::may_wait);
        if !now.is_empty() {
            self.send_release(ReleaseMsg::now(now, None));
        }
        if later.is_empty() {
            return;
        }
        let mut waiting = self.lazy.lock();
        let first = waiting.is_empty();
        let now = Instant::now();
        for r in later {
            let node = waiting.entry(self.lazy_node(&r.key)).or_default();
            node.push_back((now, r));
        }
        let full = waiting.values().map(VecDeque::len).sum::<usize>() >= MAX_BATCH;
        drop(waiting);
        if full {
            self.send_release(ReleaseMsg::now(self.lazy.take_all(), None));
        } else if first {
            self.lazy.first.notify_one();
        }
    }

    /// The waiting token blocks and rate shares an admission call to the node of `key`
    /// takes along.
    pub(super) fn riding(&self, key: &str) -> Vec<Release> {
        self.lazy.take(self.lazy_node(key), MAX_RIDE)
    }

    /// Send each release that has waited [`LAZY_MS`] (the others may still ride a call to
    /// their node).
    pub(super) async fn flush_lazy(self: Arc<Self>) {
        loop {
            let Some(oldest) = self.lazy.oldest() else {
                self.lazy.first.notified().await;
                continue;
            };
            tokio::time::sleep_until(oldest + Duration::from_millis(LAZY_MS)).await;
            let due = self.lazy.take_due(Instant::now());
            if !due.is_empty() {
                let _ = self.releases.send(ReleaseMsg::now(due, None));
            }
        }
    }

    /// Send releases as they come, everything queued meanwhile in one call (per node), on
    /// `via` or the shared connection, with the releases waiting for those nodes.
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
            kind: Release::TOKENS,
            key: key.to_string(),
            zset: format!("{key}:r"),
            member: format!("L{i}#t|10"),
            window_ms: 60_000,
            used: 1,
        }
    }

    fn waiting(lazy: &LazyReleases, node: u32, since: Instant, releases: Vec<Release>) {
        let mut w = lazy.lock();
        w.entry(node)
            .or_default()
            .extend(releases.into_iter().map(|r| (since, r)));
    }

    #[test]
    fn a_call_takes_at_most_its_share_of_its_node_and_leaves_the_rest() {
        let lazy = LazyReleases::default();
        let t = Instant::now();
        waiting(&lazy, 1, t, (0..5).map(|i| block("a", i)).collect());
        waiting(&lazy, 2, t, vec![block("b", 9)]);
        let first = lazy.take(1, 3);
        assert_eq!(first.len(), 3);
        assert_eq!(first[0].member, "L0#t|10", "the oldest first");
        assert!(lazy.take(3, 3).is_empty(), "no node 3");
        assert_eq!(lazy.take(1, 3).len(), 2);
        assert!(!lazy.lock().contains_key(&1), "an empty node is forgotten");
        assert_eq!(lazy.take_all().len(), 1);
        assert!(lazy.take_all().is_empty());
    }

    #[test]
    fn only_what_waited_long_enough_is_sent_on_its_own() {
        let lazy = LazyReleases::default();
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        assert_eq!(lazy.oldest(), None);
        waiting(&lazy, 1, t, vec![block("a", 0)]);
        waiting(&lazy, 1, ms(60), vec![block("a", 1)]);
        waiting(&lazy, 2, ms(30), vec![block("b", 2)]);
        assert_eq!(lazy.oldest(), Some(t));
        assert!(lazy.take_due(ms(LAZY_MS - 1)).is_empty());
        let due = lazy.take_due(ms(LAZY_MS));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].member, "L0#t|10");
        assert_eq!(lazy.oldest(), Some(ms(30)), "node 2's is the oldest left");
        let due = lazy.take_due(ms(LAZY_MS + 60));
        assert_eq!(due.len(), 2);
        assert_eq!(lazy.oldest(), None);
        assert!(lazy.lock().is_empty(), "empty nodes are forgotten");
    }
}
