//! The `redis` and `redis-cluster` policies: counters shared by every gateway instance.
//!
//! One admission is decided by `lua-compat/admit.lua`, which evaluates every group and
//! check atomically with Redis server time, so several gateways see one exact set of
//! counters and a request costs one round trip whatever the number of limits. Admissions
//! that arrive while a call is in flight share the next call ([`group`]).
//!
//! Concurrency slots and token reservations are *leases*: sorted-set members whose score
//! is their expiry. [`RedisStore::run`] (a background task) refreshes every live lease each
//! third of `lease_ttl` and sends releases in batches, so a request that ends gives its
//! slot back within one round trip, and a gateway that dies stops refreshing and its slots
//! expire after `lease_ttl` + `redis.timeout`.
//!
//! Why a running request's lease is not counted free by others: a lease's expiry is its
//! last refresh + `lease_ttl` + `redis.timeout` (the grace: the longest Redis itself may
//! hold a refresh back, a stall shorter than the timeout). Refreshes go every
//! `lease_ttl / 3`, one call per slot, all at once, each bounded by the timeout, so no
//! node's failure delays another node's refresh. `check` requires `lease_ttl ≥ 3 ×
//! redis.timeout`. So a live holder's lease expires only if its refreshes to that node
//! fail for more than two thirds of `lease_ttl`: an outage of that node (or of the path to
//! it) of that length, during which admissions that need the node are refused or decided
//! locally as `allow_degradation` says.
//!
//! Faults (connection refused, timeout, script error) mark the store down; it is probed
//! in the background and marked up when Redis answers again. While it is down the
//! [`super::limiter::Limiter`] decides with local counters or answers 503, as configured.
//!
//! On Redis Cluster a counter's hash tag names its entity (consumer, model, deployment,
//! group, keyed value), so unrelated counters spread over the nodes; an admission whose
//! keys span several slots is one call per slot ([`call`] says why it stays exact), and
//! releases, refreshes and syncs are sent per slot.

use super::admission::{
    Admitted, Budget, Check, Denied, Estimate, Hold, Quota, Rejection, Released, Ticket, TokenUsage,
};
use super::rules::{Rule, RuleKind};
use super::synced::SyncedCounts;
use crate::config::schema::{LimitPolicy, LimitsConfig};
use crate::limits::admission::Charge;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod admit;
mod call;
mod group;
mod hold;
mod lane;
mod leasable;
mod lease_hold;
mod leases;
/// A script of `lua-compat/` with `lua-compat/common.lua` in front.
macro_rules! with_common {
    ($file:literal) => {
        concat!(
            include_str!("../../lua-compat/common.lua"),
            include_str!(concat!("../../lua-compat/", $file))
        )
    };
}
mod release;
use release::{Release, ReleaseMsg};
mod store_conn;
mod store_metrics;
pub use store_metrics::RedisMetrics;
mod topology;
use call::{AdmitCall, CheckAnswer, LeaseOf};
use hold::{Held, RedisHold};
pub use store_conn::StoreConn;
use topology::Topology;

/// Each with `common.lua` (the key probe and giving back) in front.
const ADMIT_LUA: &str = with_common!("admit.lua");
const RELEASE_LUA: &str = with_common!("release.lua");
const REFRESH_LUA: &str = with_common!("refresh.lua");
const SYNC_LUA: &str = include_str!("../../lua-compat/sync.lua");
const LEASE_RETURN_LUA: &str = with_common!("lease_return.lua");

/// A connection to Redis or to a Redis Cluster (also used by the batch store).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connect (single: lazily, reconnecting on its own) with `timeout` for connecting and
    /// for every answer.
    pub async fn open(
        policy: LimitPolicy,
        urls: &[String],
        timeout: Duration,
    ) -> RedisResult<Conn> {
        match policy {
            LimitPolicy::RedisCluster => {
                // One retry inside the client (a MOVED after a reshard is followed once):
                // more would let a node that hangs hold other calls behind its retries and
                // the slot-map refreshes they trigger (seen as leases on healthy nodes
                // expiring under load); the gateway decides what to do with a fault itself.
                let client = redis::cluster::ClusterClient::builder(urls.to_vec())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()?;
                client.get_async_connection().await.map(Conn::Cluster)
            }
            _ => Conn::single_lazy(urls, timeout),
        }
    }

    /// A connection to one Redis, made on first use (on the runtime that uses it) and
    /// remade by itself after a fault.
    pub fn single_lazy(urls: &[String], timeout: Duration) -> RedisResult<Conn> {
        match urls.first().map(|u| redis::Client::open(u.as_str())) {
            Some(Ok(client)) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, cfg).map(Conn::Single)
            }
            Some(Err(e)) => Err(e),
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no Redis URL",
            ))),
        }
    }

    /// Send one command.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    /// Send a pipeline.
    pub async fn pipe<T: redis::FromRedisValue>(&self, p: &redis::Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => p.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => p.query_async(&mut c.clone()).await,
        }
    }

    /// Run a script (loading it first if the server does not have it).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }
}

/// Why a call to Redis failed (the message never holds a URL or password).
#[derive(Debug, Clone)]
pub struct RedisFault(pub String);

pub struct RedisStore {
    policy: LimitPolicy,
    urls: Vec<String>,
    conn: OnceLock<Conn>,
    admit: Script,
    release: Script,
    refresh: Script,
    sync: Script,
    ping: Script,
    lease_return: Script,
    /// Quota leases of fixed-window counts (`limits.redis.quota_leases`; not with
    /// `sync_interval`), and whether they are still taken (not after shutdown began).
    quota_leases: Option<Mutex<crate::limits::lease::LeaseState>>,
    leasing: AtomicBool,
    lease_epoch: Instant,
    /// `sync_interval`: count rules decided from local views, pushed periodically.
    synced: Option<SyncedCounts>,
    prefix: String,
    lease_ttl_ms: u64,
    /// A lease's life in Redis past each refresh: `lease_ttl` + `redis.timeout`.
    lease_life_ms: u64,
    timeout: Duration,
    instance: String,
    seq: AtomicU64,
    /// Live leases by ticket: (zset key, member) pairs to refresh.
    leases: Mutex<HashMap<u64, Vec<(String, String)>>>,
    releases: mpsc::UnboundedSender<ReleaseMsg>,
    lazy: release::LazyReleases,
    /// Wakes requests waiting for another request's lease ask ([`Self::wait_for_lease`]).
    lease_answered: tokio::sync::Notify,
    release_rx: Mutex<Option<mpsc::UnboundedReceiver<ReleaseMsg>>>,
    /// Each worker thread's own connection and queues (the `redis` policy).
    lanes: thread_local::ThreadLocal<lane::Lane>,
    me: std::sync::Weak<RedisStore>,
    up: AtomicBool,
    /// Redis Cluster: which node owns which slot, as last read.
    topology: arc_swap::ArcSwap<Topology>,
    /// Wakes [`Self::run`] to read the cluster map again (a script found it stale).
    topology_stale: tokio::sync::Notify,
    /// Becomes true once the first connection attempt has an outcome.
    attempted: tokio::sync::watch::Sender<bool>,
    metrics: RedisMetrics,
}

impl RedisStore {
    /// A store for `config` (policy `redis` or `redis-cluster`). Connects in [`Self::run`].
    /// `keys`: the gauge of counters held in memory (the synced views count there).
    pub fn new(
        config: &LimitsConfig,
        metrics: RedisMetrics,
        keys: prometheus::IntGauge,
    ) -> Arc<RedisStore> {
        let r = &config.redis;
        let urls = match config.policy {
            LimitPolicy::RedisCluster => r.nodes.iter().map(|n| n.expose().to_string()).collect(),
            _ => r.url.iter().map(|u| u.expose().to_string()).collect(),
        };
        let prefix = r.key_prefix.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.degraded.set(1); // until the first connection succeeds
        Arc::new_cyclic(|me| RedisStore {
            lanes: thread_local::ThreadLocal::new(),
            me: me.clone(),
            policy: config.policy,
            urls,
            conn: OnceLock::new(),
            admit: Script::new(ADMIT_LUA),
            release: Script::new(RELEASE_LUA),
            refresh: Script::new(REFRESH_LUA),
            sync: Script::new(SYNC_LUA),
            lease_return: Script::new(LEASE_RETURN_LUA),
            quota_leases: (r.quota_leases && config.sync_interval.is_none())
                .then(|| Mutex::new(crate::limits::lease::LeaseState::new(config.local_max_keys))),
            leasing: AtomicBool::new(true),
            lease_epoch: Instant::now(),
            ping: Script::new("return 1"),
            synced: config
                .sync_interval
                .map(|i| SyncedCounts::new(i, config.local_max_keys, keys.clone())),
            prefix,
            lease_ttl_ms: config.lease_ttl.as_millis() as u64,
            lease_life_ms: (config.lease_ttl + r.timeout).as_millis() as u64,
            timeout: r.timeout,
            instance: format!("{:016x}", rand::random::<u64>()),
            seq: AtomicU64::new(0),
            leases: Mutex::new(HashMap::new()),
            releases: tx,
            lazy: Default::default(),
            lease_answered: tokio::sync::Notify::new(),
            release_rx: Mutex::new(Some(rx)),
            up: AtomicBool::new(false),
            topology: Default::default(),
            topology_stale: tokio::sync::Notify::new(),
            attempted: tokio::sync::watch::Sender::new(false),
            metrics,
        })
    }

    /// Whether Redis answered the last call.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Right after start (or a graceful upgrade) the first connection is still being made:
    /// wait for it (at most the Redis timeout) rather than answer as if Redis were down.
    pub async fn first_connection(&self) {
        if *self.attempted.borrow() {
            return;
        }
        let mut rx = self.attempted.subscribe();
        let _ = tokio::time::timeout(self.timeout, rx.wait_for(|done| *done)).await;
    }

    fn mark(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.degraded.set(i64::from(!up));
            if up {
                tracing::info!("Redis is reachable: limits are shared across instances again");
            } else {
                tracing::error!(error = why, "Redis is unreachable: limiter degraded");
            }
        }
    }

    /// Run one Redis call with the timeout, recording its round trip and any fault.
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisFault> {
        self.call_via(None, op, inv).await
    }

    /// [`Self::call`] on `via` (a worker thread's own connection) or the shared one.
    async fn call_via<T: redis::FromRedisValue>(
        &self,
        via: Option<&Conn>,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisFault> {
        let started = Instant::now();
        let result: Result<RedisResult<T>, _> = match via.or(self.conn.get()) {
            None => Ok(Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected yet",
            )))),
            Some(c) => {
                tokio::time::timeout(self.timeout, async {
                    match c.invoke(inv).await {
                        // A connection that Redis dropped (a restart, a failover) answers
                        // its next call with the drop and reconnects in the background:
                        // one more try on the new connection, so that a worker thread
                        // whose connection sat idle through an outage does not decide by
                        // local counters while Redis is back. A script whose answer was
                        // lost may run twice; that only over-counts (it fails closed).
                        Err(e) if e.is_unrecoverable_error() => c.invoke(inv).await,
                        other => other,
                    }
                })
                .await
            }
        };
        self.metrics
            .duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        let fault = match result {
            Ok(Ok(v)) => {
                self.mark(true, "");
                return Ok(v);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.metrics.errors.with_label_values(&[op]).inc();
        self.mark(false, &fault);
        Err(RedisFault(fault))
    }

    /// The delayed-sync counters, when `sync_interval` is set.
    pub fn synced(&self) -> Option<&SyncedCounts> {
        self.synced.as_ref()
    }

    /// The Redis key of a counter: APISIX's prefix for the algorithm, then the counter.
    /// On Redis Cluster the key starts with the hash tag
    /// `{<key_prefix>ai-rate-limiter:<entity><resolved key>}` (see [`Rule::entity`]): the
    /// counters of one consumer, model, deployment, group or keyed value share a slot, and
    /// unrelated ones land on different slots, so the limiter's load spreads over the nodes.
    pub(crate) fn key(&self, rule: &Rule, kind: &RuleKind, counter: &str) -> String {
        let kind = match kind {
            RuleKind::Req(_) => "limit_req:",
            RuleKind::Conn(_) => "limit_conn:",
            // A sliding window's state is a hash, never the fixed window's counter.
            RuleKind::Count(l) if l.sliding => "plugin-limit-count:sliding:",
            RuleKind::Count(_) => "plugin-limit-count:v1:",
            RuleKind::Tokens(..) => "plugin-ai-rate-limiting:v1:",
            // The gateway's own (APISIX has no spend limits).
            RuleKind::Spend(_) => "ai-rate-limiter-spend:v1:",
        };
        let unit = |c: char| if c == '\u{1f}' { ':' } else { c };
        let mut k =
            String::with_capacity(2 * self.prefix.len() + kind.len() + 2 * counter.len() + 20);
        if self.policy == LimitPolicy::RedisCluster {
            // The counter is the rule's id and, for a keyed rule, its resolved key.
            let resolved = counter.strip_prefix(&*rule.id).unwrap_or("");
            k.push('{');
            k.push_str(&self.prefix);
            k.push_str("ai-rate-limiter:");
            k.extend(rule.entity.chars().chain(resolved.chars()).map(unit));
            k.push('}');
        }
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.extend(counter.chars().map(unit));
        k
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<(String, String)>>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The background work of the store: connect, refresh leases, send releases, probe
    /// while down. Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        self.connect().await;
        let rx = self
            .release_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(self.clone().release_loop(rx, None));
            tokio::spawn(self.clone().flush_lazy());
        }
        let every = Duration::from_millis((self.lease_ttl_ms / 3).max(100));
        let mut refresh = tokio::time::interval(every);
        let mut probe = tokio::time::interval(Duration::from_millis(250));
        let sync_every = self.synced.as_ref().map_or(3_600_000, |s| s.interval_ms());
        let mut sync = tokio::time::interval(Duration::from_millis(sync_every));
        loop {
            tokio::select! {
                _ = refresh.tick() => {
                    // At once, not one after the other: a hung node answering the map
                    // query must not delay the refreshes the other nodes would answer.
                    tokio::join!(self.read_topology(), self.refresh_leases());
                    self.tidy_leases().await;
                }
                _ = self.topology_stale.notified() => self.read_topology().await,
                _ = sync.tick() => self.sync_counts().await,
                _ = probe.tick() => {
                    if !self.is_up() {
                        let _ = self.call::<i64>("ping", &self.ping.prepare_invoke()).await;
                    }
                }
            }
        }
    }

    async fn connect(&self) {
        loop {
            let conn = Conn::open(self.policy, &self.urls, self.timeout).await;
            match conn {
                Ok(c) => {
                    let _ = self.conn.set(c);
                    self.load_scripts().await;
                    self.read_topology().await;
                    // Marks the store up (or down) before the first request decides.
                    let _ = self.call::<i64>("ping", &self.ping.prepare_invoke()).await;
                    self.attempted.send_replace(true);
                    return;
                }
                Err(e) => {
                    self.mark(false, "");
                    self.attempted.send_replace(true);
                    tracing::warn!(error = %e.category(), "cannot connect to Redis yet, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Load the scripts ahead of the first request (EVALSHA would load them on demand,
    /// at the cost of two more round trips for that request).
    async fn load_scripts(&self) {
        let Some(conn) = self.conn.get() else { return };
        for script in [
            &self.admit,
            &self.release,
            &self.refresh,
            &self.sync,
            &self.ping,
            &self.lease_return,
        ] {
            let loaded = match conn.clone() {
                Conn::Single(mut c) => script.prepare_invoke().load_async(&mut c).await,
                Conn::Cluster(mut c) => script.prepare_invoke().load_async(&mut c).await,
            };
            if let Err(e) = loaded {
                tracing::warn!(error = %e, "loading a limiter script into Redis failed; it is loaded on first use");
            }
        }
    }

    /// Redis Cluster: read which node owns which slot (`CLUSTER SLOTS`).
    async fn read_topology(&self) {
        if self.policy != LimitPolicy::RedisCluster {
            return;
        }
        let Some(conn) = self.conn.get() else { return };
        let read = tokio::time::timeout(
            self.timeout,
            conn.query::<redis::Value>(&redis::cmd("CLUSTER").arg("SLOTS").to_owned()),
        )
        .await;
        match read
            .ok()
            .and_then(Result::ok)
            .as_ref()
            .and_then(Topology::parse)
        {
            Some(map) => self.topology.store(Arc::new(map)),
            None => tracing::debug!("could not read the Redis Cluster map; calls go per slot"),
        }
    }

    /// A script found a key on another node than the map said: read it again soon.
    fn topology_stale(&self) {
        self.topology_stale.notify_one();
    }

    async fn refresh_leases(&self) {
        let mut live: Vec<(String, String)> =
            self.lock_leases().values().flatten().cloned().collect();
        live.extend(self.lease_members());
        if live.is_empty() {
            return;
        }
        // One call per node (per slot if the cluster map was stale), all at once, each
        // bounded: a node that does not answer delays no other node's refresh.
        let deadline = self
            .timeout
            .min(Duration::from_millis(self.lease_ttl_ms / 3));
        let calls = self
            .by_node(live, |(zset, _)| zset)
            .into_iter()
            .map(|run| async move {
                let once = |run: &[(String, String)]| {
                    let mut inv = self.refresh.prepare_invoke();
                    inv.arg(self.lease_life_ms).arg(run.len());
                    for (_, member) in run {
                        inv.arg(member);
                    }
                    let keys = run.iter().map(|(zset, _)| zset.as_str());
                    call::push_keys(self.policy == LimitPolicy::RedisCluster, &mut inv, keys);
                    async move {
                        tokio::time::timeout(deadline, self.call::<i64>("refresh", &inv))
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                };
                if once(&run).await == Some(-1) {
                    self.topology_stale();
                    let slots = self.by_slot(run, |(zset, _)| zset);
                    futures_util::future::join_all(slots.iter().map(|run| once(run))).await;
                }
            });
        futures_util::future::join_all(calls).await;
    }

    /// Fetch the shared totals of delayed-sync counters this gateway has not seen yet.
    pub(crate) async fn fetch_counts(&self, keys: &[(String, u64)]) -> Result<(), RedisFault> {
        let Some(synced) = &self.synced else {
            return Ok(());
        };
        for run in self.by_slot(keys.iter().collect(), |(key, _)| key) {
            let mut inv = self.sync.prepare_invoke();
            for (key, window_ms) in &run {
                inv.key(key).arg(0).arg(*window_ms);
            }
            let out: Vec<i64> = self.call("sync", &inv).await?;
            for ((key, window_ms), v) in run.iter().zip(out.chunks(2)) {
                if let [consumed, pttl] = v {
                    synced.seed(key, *window_ms, *consumed, *pttl);
                }
            }
        }
        Ok(())
    }

    /// Push the deltas of the delayed-sync counters and take in the shared totals.
    async fn sync_counts(&self) {
        let Some(synced) = &self.synced else { return };
        let pushes = synced.pushes();
        if pushes.is_empty() || !self.is_up() {
            return;
        }
        for run in self.by_slot(pushes.iter().collect(), |p| &p.key) {
            let mut inv = self.sync.prepare_invoke();
            for p in &run {
                inv.key(&p.key).arg(p.delta).arg(p.window_ms);
            }
            if let Ok(out) = self.call::<Vec<i64>>("sync", &inv).await {
                for (p, v) in run.iter().zip(out.chunks(2)) {
                    if let [consumed, pttl] = v {
                        synced.synced(p, *consumed, *pttl);
                    }
                }
            }
        }
    }
}
