//! The `redis` and `redis-cluster` policies: counters shared by every gateway instance.
//!
//! One admission call is one `EVALSHA` of `lua-compat/admit.lua`, which evaluates every
//! group and check atomically with Redis server time, so several gateways see one exact
//! set of counters and a request costs one round trip whatever the number of limits.
//!
//! Concurrency slots and token reservations are *leases*: sorted-set members whose score
//! is their expiry. [`RedisStore::run`] (a background task) refreshes every live lease a
//! third of `lease_ttl` before it would expire and sends releases in batches, so a request
//! that ends gives its slot back within one round trip, and a gateway that dies stops
//! refreshing and its slots expire after `lease_ttl`.
//!
//! Faults (connection refused, timeout, script error) mark the store down; it is probed
//! in the background and marked up when Redis answers again. While it is down the
//! [`super::limiter::Limiter`] decides with local counters or answers 503, as configured.
//!
//! On Redis Cluster every key carries the hash tag `{<key_prefix>ai-rate-limiter}`, so the
//! keys of one admission call are in one slot and the script stays atomic. The cluster
//! gives failover, not sharding of the limiter's load.

use super::admission::{
    Admitted, Budget, Check, Denied, Hold, Quota, Rejection, Released, Ticket, TokenUsage,
};
use super::rules::RuleKind;
use super::synced::SyncedCounts;
use crate::config::schema::{LimitPolicy, LimitsConfig, TokenStrategy};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ADMIT_LUA: &str = include_str!("../../lua-compat/admit.lua");
const RELEASE_LUA: &str = include_str!("../../lua-compat/release.lua");
const REFRESH_LUA: &str = include_str!("../../lua-compat/refresh.lua");
const SYNC_LUA: &str = include_str!("../../lua-compat/sync.lua");

/// Metrics of the shared store.
#[derive(Clone)]
pub struct RedisMetrics {
    /// `gateway_redis_duration_seconds{op}`: one observation per round trip.
    pub duration: prometheus::HistogramVec,
    /// `gateway_redis_errors_total{op}`.
    pub errors: prometheus::IntCounterVec,
    /// `gateway_limiter_degraded`: 1 while Redis cannot be reached.
    pub degraded: prometheus::IntGauge,
}

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
                let client = redis::cluster::ClusterClient::builder(urls.to_vec())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?;
                client.get_async_connection().await.map(Conn::Cluster)
            }
            _ => match urls.first().map(|u| redis::Client::open(u.as_str())) {
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
            },
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

/// Releases of one request, and whom to tell when they are applied.
type ReleaseMsg = (Vec<Release>, Option<tokio::sync::oneshot::Sender<()>>);

/// One thing to give back: a conn lease or a token reservation (with the tokens used).
struct Release {
    kind: u8,
    key: String,
    zset: String,
    member: String,
    window_ms: u64,
    used: u64,
}

pub struct RedisStore {
    policy: LimitPolicy,
    urls: Vec<String>,
    conn: OnceLock<Conn>,
    admit: Script,
    release: Script,
    refresh: Script,
    sync: Script,
    ping: Script,
    /// `sync_interval`: count rules decided from local views, pushed periodically.
    synced: Option<SyncedCounts>,
    prefix: String,
    lease_ttl_ms: u64,
    timeout: Duration,
    instance: String,
    seq: AtomicU64,
    /// Live leases by ticket: (zset key, member) pairs to refresh.
    leases: Mutex<HashMap<u64, Vec<(String, String)>>>,
    releases: mpsc::UnboundedSender<ReleaseMsg>,
    release_rx: Mutex<Option<mpsc::UnboundedReceiver<ReleaseMsg>>>,
    up: AtomicBool,
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
        let prefix = match config.policy {
            LimitPolicy::RedisCluster => format!("{{{}ai-rate-limiter}}", r.key_prefix),
            _ => r.key_prefix.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.degraded.set(1); // until the first connection succeeds
        Arc::new(RedisStore {
            policy: config.policy,
            urls,
            conn: OnceLock::new(),
            admit: Script::new(ADMIT_LUA),
            release: Script::new(RELEASE_LUA),
            refresh: Script::new(REFRESH_LUA),
            sync: Script::new(SYNC_LUA),
            ping: Script::new("return 1"),
            synced: config
                .sync_interval
                .map(|i| SyncedCounts::new(i, config.local_max_keys, keys.clone())),
            prefix,
            lease_ttl_ms: config.lease_ttl.as_millis() as u64,
            timeout: r.timeout,
            instance: format!("{:016x}", rand::random::<u64>()),
            seq: AtomicU64::new(0),
            leases: Mutex::new(HashMap::new()),
            releases: tx,
            release_rx: Mutex::new(Some(rx)),
            up: AtomicBool::new(false),
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
        let started = Instant::now();
        let result: Result<RedisResult<T>, _> = match self.conn.get() {
            None => Ok(Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected yet",
            )))),
            Some(c) => tokio::time::timeout(self.timeout, c.invoke(inv)).await,
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

    /// The Redis key of a counter.
    pub(crate) fn key(&self, kind: &RuleKind, counter: &str) -> String {
        let kind = match kind {
            RuleKind::Req(_) => "limit_req:",
            RuleKind::Conn(_) => "limit_conn:",
            RuleKind::Count(_) => "plugin-limit-count:v1:",
            RuleKind::Tokens(..) => "plugin-ai-rate-limiting:v1:",
        };
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + counter.len());
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.extend(counter.chars().map(|c| if c == '\u{1f}' { ':' } else { c }));
        k
    }

    /// Evaluate one admission call in Redis (see `lua-compat/admit.lua`).
    pub async fn admit(
        self: &Arc<Self>,
        required: &[Check<'_>],
        alternatives: &[Vec<Check<'_>>],
        estimate_tokens: u64,
    ) -> Result<Result<Admitted, Denied>, RedisFault> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let lease = format!("{}:{seq}", self.instance);
        let groups: Vec<&[Check<'_>]> = std::iter::once(required)
            .chain(alternatives.iter().map(Vec::as_slice))
            .collect();
        let mut inv = self.admit.prepare_invoke();
        inv.arg(&lease)
            .arg(self.lease_ttl_ms)
            .arg(estimate_tokens)
            .arg(groups.len());
        for g in &groups {
            inv.arg(g.len());
        }
        let mut keys = Vec::new();
        for c in groups.iter().flat_map(|g| g.iter()) {
            let key = self.key(&c.rule.kind, &c.key);
            let second = match c.rule.kind {
                RuleKind::Tokens(..) => format!("{key}:r"),
                _ => key.clone(),
            };
            match c.rule.kind {
                RuleKind::Req(l) => inv.arg(1).arg(l.rate).arg(l.burst).arg(u8::from(l.nodelay)),
                RuleKind::Conn(l) => inv
                    .arg(2)
                    .arg(l.conn)
                    .arg(l.burst)
                    .arg(l.default_conn_delay_ms),
                RuleKind::Count(l) => inv.arg(3).arg(l.count).arg(l.window_ms).arg(0),
                RuleKind::Tokens(l, _) => inv.arg(4).arg(l.limit).arg(l.window_ms).arg(0),
            };
            inv.arg(c.yield_to.unwrap_or(-1.0));
            inv.key(&key).key(&second);
            keys.push((key, second));
        }
        let out: Vec<i64> = self.call("admit", &inv).await?;
        let bad = || RedisFault("unexpected answer from admit.lua".into());
        let n_groups = groups.len();
        let checks_total: usize = groups.iter().map(|g| g.len()).sum();
        let answer = AdmitAnswer::decode(&out, n_groups, checks_total).ok_or_else(bad)?;
        let chosen = answer.chosen;
        let delay_ms = answer.delay_ms;
        // Quotas of a group, in the order the local store reports them (tokens, count).
        let quotas_of = |g: usize, base: usize| -> Vec<Quota> {
            let mut q = Vec::new();
            for want_tokens in [true, false] {
                for (i, c) in groups[g].iter().enumerate() {
                    let CheckAnswer {
                        remaining: Some(remaining),
                        reset_ms,
                    } = answer.checks[base + i]
                    else {
                        continue;
                    };
                    let (budget, limit, header) = match c.rule.kind {
                        RuleKind::Tokens(l, _) if want_tokens => (Budget::Tokens, l.limit, false),
                        RuleKind::Count(l) if !want_tokens => {
                            (Budget::Requests, l.count, c.rule.answer.quota_header)
                        }
                        _ => continue,
                    };
                    q.push(Quota {
                        budget,
                        limit,
                        remaining,
                        reset_ms,
                        apisix_header: header,
                    });
                }
            }
            q
        };
        let mut bases = Vec::with_capacity(n_groups);
        let mut b = 0;
        for g in &groups {
            bases.push(b);
            b += g.len();
        }
        let rejection = |g: usize| -> Result<Rejection, RedisFault> {
            let verdict = &answer.groups[g];
            let c = verdict
                .rejected_by
                .and_then(|i| groups[g].get(i))
                .ok_or_else(bad)?;
            Ok(Rejection {
                rule: c.rule.id.clone(),
                budget: match c.rule.kind {
                    RuleKind::Conn(_) => Budget::Concurrency,
                    RuleKind::Tokens(..) => Budget::Tokens,
                    _ => Budget::Requests,
                },
                retry_after_ms: verdict.retry_after_ms,
                quotas: quotas_of(g, bases[g]),
                alternative: g.checked_sub(1),
            })
        };
        if !answer.groups[0].passed {
            return Ok(Err(Denied::Limited(rejection(0)?)));
        }
        let mut quotas = quotas_of(0, 0);
        if chosen > 0 {
            quotas.extend(quotas_of(chosen, bases[chosen]));
        }
        // What the admitted groups hold: their conn leases and token reservations.
        let mut hold = RedisHold {
            store: self.clone(),
            seq,
            held: Vec::new(),
        };
        let admitted: &[usize] = if chosen > 0 { &[0, chosen] } else { &[0] };
        for &g in admitted {
            for (i, c) in groups[g].iter().enumerate() {
                let (key, zset) = &keys[bases[g] + i];
                let (kind, member, window_ms, tokens, strategy) = match c.rule.kind {
                    RuleKind::Conn(_) => (2, lease.clone(), 0, 0, TokenStrategy::TotalTokens),
                    RuleKind::Tokens(l, strategy) => {
                        let tokens = estimate_tokens.min(l.limit);
                        let member = format!("{lease}|{tokens}");
                        (4, member, l.window_ms, tokens, strategy)
                    }
                    _ => continue,
                };
                hold.held.push(Held {
                    alternative: g > 0,
                    kind,
                    key: key.clone(),
                    zset: zset.clone(),
                    member,
                    window_ms,
                    tokens,
                    strategy,
                });
            }
        }
        if !hold.held.is_empty() {
            let live = hold
                .held
                .iter()
                .map(|h| (h.zset.clone(), h.member.clone()))
                .collect();
            self.lock_leases().insert(seq, live);
        }
        let ticket = Ticket {
            delay_ms,
            quotas,
            hold: Some(Box::new(hold)),
        };
        if n_groups > 1 && chosen == 0 {
            // Every alternative rejected: report the one that frees first; the required
            // group's part stays held by the caller.
            let mut best: Option<Rejection> = None;
            for g in 1..n_groups {
                let r = rejection(g)?;
                if best
                    .as_ref()
                    .is_none_or(|b| r.retry_after_ms < b.retry_after_ms)
                {
                    best = Some(r);
                }
            }
            let best = best.ok_or_else(bad)?;
            return Ok(Err(Denied::NoAlternative(best, Box::new(ticket))));
        }
        let mut skipped = Vec::new();
        for g in 1..chosen {
            skipped.push(rejection(g)?.rule);
        }
        Ok(Ok(Admitted {
            skipped,
            ticket,
            choice: if n_groups > 1 { Some(chosen - 1) } else { None },
        }))
    }

    /// How much of each scope-wide rule is in use now, read from Redis (for the status
    /// page): in the rule's unit (bucket excess in requests, slots, requests or tokens of
    /// the window). One pipelined round trip.
    pub async fn usage(&self, rules: &[&super::rules::Rule]) -> Result<Vec<f64>, RedisFault> {
        let conn = self
            .conn
            .get()
            .ok_or_else(|| RedisFault("not connected yet".into()))?;
        let mut p = redis::pipe();
        p.cmd("TIME");
        for r in rules {
            let key = self.key(&r.kind, &r.id);
            match r.kind {
                RuleKind::Req(_) => p.cmd("HMGET").arg(&key).arg("excess").arg("last"),
                RuleKind::Conn(_) => p.cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES"),
                RuleKind::Count(_) => p.cmd("GET").arg(&key),
                RuleKind::Tokens(..) => p.cmd("HMGET").arg(&key).arg("c").arg("e"),
            };
            if let RuleKind::Tokens(..) = r.kind {
                p.cmd("ZRANGE")
                    .arg(format!("{key}:r"))
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES");
            }
        }
        let out: Vec<redis::Value> = tokio::time::timeout(self.timeout, conn.pipe(&p))
            .await
            .map_err(|_| RedisFault("no answer".into()))?
            .map_err(|e| RedisFault(e.to_string()))?;
        let mut it = out.into_iter();
        let (secs, micros): (i64, i64) = it
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .ok_or_else(|| RedisFault("TIME".into()))?;
        let now = (secs * 1000 + micros / 1000) as f64;
        let num = |v: Option<redis::Value>| -> Option<f64> {
            v.and_then(|v| redis::from_redis_value::<Option<String>>(v).ok().flatten())
                .and_then(|s| s.parse().ok())
        };
        // (member, score) pairs still live at `now`.
        let live = |v: Option<redis::Value>| -> Vec<(String, f64)> {
            v.and_then(|v| redis::from_redis_value::<Vec<(String, f64)>>(v).ok())
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, score)| *score > now)
                .collect()
        };
        // The two fields of an HMGET, as numbers.
        let two = |v: Option<redis::Value>| -> (Option<f64>, Option<f64>) {
            let pair: Vec<Option<String>> = v
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            let get = |i: usize| {
                pair.get(i)
                    .cloned()
                    .flatten()
                    .and_then(|s| s.parse::<f64>().ok())
            };
            (get(0), get(1))
        };
        let mut used = Vec::with_capacity(rules.len());
        for r in rules {
            let u = match r.kind {
                RuleKind::Req(l) => match two(it.next()) {
                    (Some(e), Some(last)) => {
                        (e - l.rate * 1000.0 * (now - last).max(0.0) / 1000.0).max(0.0) / 1000.0
                    }
                    _ => 0.0,
                },
                RuleKind::Conn(_) => live(it.next()).len() as f64,
                RuleKind::Count(_) => num(it.next()).unwrap_or(0.0),
                RuleKind::Tokens(..) => {
                    let committed = match two(it.next()) {
                        (Some(c), Some(end)) if end > now => c,
                        _ => 0.0,
                    };
                    let reserved: f64 = live(it.next())
                        .iter()
                        .filter_map(|(m, _)| m.rsplit('|').next()?.parse::<f64>().ok())
                        .sum();
                    committed + reserved
                }
            };
            used.push(u);
        }
        Ok(used)
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
            tokio::spawn(self.clone().release_loop(rx));
        }
        let every = Duration::from_millis((self.lease_ttl_ms / 3).max(100));
        let mut refresh = tokio::time::interval(every);
        let mut probe = tokio::time::interval(Duration::from_millis(250));
        let sync_every = self.synced.as_ref().map_or(3_600_000, |s| s.interval_ms());
        let mut sync = tokio::time::interval(Duration::from_millis(sync_every));
        loop {
            tokio::select! {
                _ = refresh.tick() => self.refresh_leases().await,
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

    async fn refresh_leases(&self) {
        let live: Vec<(String, String)> = self.lock_leases().values().flatten().cloned().collect();
        if live.is_empty() {
            return;
        }
        let mut inv = self.refresh.prepare_invoke();
        inv.arg(self.lease_ttl_ms);
        for (zset, member) in &live {
            inv.key(zset).arg(member);
        }
        let _ = self.call::<i64>("refresh", &inv).await;
    }

    /// Fetch the shared totals of delayed-sync counters this gateway has not seen yet.
    pub(crate) async fn fetch_counts(&self, keys: &[(String, u64)]) -> Result<(), RedisFault> {
        let Some(synced) = &self.synced else {
            return Ok(());
        };
        let mut inv = self.sync.prepare_invoke();
        for (key, window_ms) in keys {
            inv.key(key).arg(0).arg(*window_ms);
        }
        let out: Vec<i64> = self.call("sync", &inv).await?;
        for ((key, window_ms), v) in keys.iter().zip(out.chunks(2)) {
            if let [consumed, pttl] = v {
                synced.seed(key, *window_ms, *consumed, *pttl);
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
        let mut inv = self.sync.prepare_invoke();
        for p in &pushes {
            inv.key(&p.key).arg(p.delta).arg(p.window_ms);
        }
        if let Ok(out) = self.call::<Vec<i64>>("sync", &inv).await {
            for (p, v) in pushes.iter().zip(out.chunks(2)) {
                if let [consumed, pttl] = v {
                    synced.synced(p, *consumed, *pttl);
                }
            }
        }
    }

    /// Send releases as they come, everything queued meanwhile in one call.
    async fn release_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<ReleaseMsg>) {
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
            let mut inv = self.release.prepare_invoke();
            inv.arg(batch.len());
            for r in &batch {
                inv.arg(r.kind)
                    .arg(&r.member)
                    .arg(r.window_ms)
                    .arg(r.used)
                    .key(&r.key)
                    .key(&r.zset);
            }
            // On failure the leases expire by themselves after lease_ttl.
            let _ = self.call::<i64>("release", &inv).await;
            for a in acks {
                let _ = a.send(());
            }
        }
    }
}

/// One lease an admitted request holds in Redis.
struct Held {
    /// Part of the chosen alternative (not the required group).
    alternative: bool,
    kind: u8,
    key: String,
    zset: String,
    member: String,
    window_ms: u64,
    tokens: u64,
    strategy: TokenStrategy,
}

/// `admit.lua`'s answer, decoded: `{chosen, delay_ms, (passed, rejecting check,
/// retry_after_ms) per group, (remaining, reset_ms) per check}`.
struct AdmitAnswer {
    /// The alternative admitted (1-based; 0: none, or no alternatives).
    chosen: usize,
    delay_ms: u64,
    groups: Vec<GroupAnswer>,
    checks: Vec<CheckAnswer>,
}

/// One group's verdict.
struct GroupAnswer {
    passed: bool,
    /// The check that refused it (0-based), when it did not pass.
    rejected_by: Option<usize>,
    retry_after_ms: u64,
}

/// One check's quota, when it has one (count and token rules).
#[derive(Clone, Copy)]
struct CheckAnswer {
    remaining: Option<u64>,
    reset_ms: u64,
}

impl AdmitAnswer {
    /// Decode the flat array; `None` when its shape is not the expected one.
    fn decode(out: &[i64], n_groups: usize, n_checks: usize) -> Option<AdmitAnswer> {
        if out.len() != 2 + 3 * n_groups + 2 * n_checks {
            return None;
        }
        let groups = out[2..2 + 3 * n_groups]
            .chunks_exact(3)
            .map(|g| GroupAnswer {
                passed: g[0] != 0,
                rejected_by: usize::try_from(g[1]).ok().and_then(|i| i.checked_sub(1)),
                retry_after_ms: g[2].max(1) as u64,
            })
            .collect();
        let checks = out[2 + 3 * n_groups..]
            .chunks_exact(2)
            .map(|c| CheckAnswer {
                remaining: u64::try_from(c[0]).ok(),
                reset_ms: c[1].max(0) as u64,
            })
            .collect();
        let chosen = usize::try_from(out[0])
            .ok()
            .filter(|c| *c < n_groups.max(1))?;
        Some(AdmitAnswer {
            chosen,
            delay_ms: out[1].max(0) as u64,
            groups,
            checks,
        })
    }
}

/// The leases an admitted request holds in Redis; given back when finished or dropped.
pub struct RedisHold {
    store: Arc<RedisStore>,
    seq: u64,
    held: Vec<Held>,
}

impl Hold for RedisHold {
    fn finish(mut self: Box<Self>, usage: Option<TokenUsage>) -> Option<Released> {
        let held = std::mem::take(&mut self.held);
        self.give_back(held, usage, true)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn release_choice(&mut self) {
        let (alt, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.alternative);
        self.held = keep;
        if !alt.is_empty() {
            let live = self
                .held
                .iter()
                .map(|h| (h.zset.clone(), h.member.clone()))
                .collect();
            self.store.lock_leases().insert(self.seq, live);
            self.give_back(alt, None, false);
        }
    }
}

impl RedisHold {
    /// Send releases for `held`; `finished` charges usage and asks for an acknowledgement.
    fn give_back(
        &mut self,
        held: Vec<Held>,
        usage: Option<TokenUsage>,
        finished: bool,
    ) -> Option<Released> {
        if held.is_empty() {
            return None;
        }
        if self.held.is_empty() {
            self.store.lock_leases().remove(&self.seq);
        }
        let releases = held
            .into_iter()
            .map(|h| {
                let used = match (finished, usage) {
                    (false, _) => 0,
                    (true, Some(u)) => u.cost(h.strategy),
                    (true, None) => h.tokens,
                };
                Release {
                    kind: h.kind,
                    key: h.key,
                    zset: h.zset,
                    member: h.member,
                    window_ms: h.window_ms,
                    used,
                }
            })
            .collect();
        let (tx, rx) = if finished {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // The receiver lives as long as the process; if it is gone the leases expire.
        let _ = self.store.releases.send((releases, tx));
        rx
    }
}

impl Drop for RedisHold {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.give_back(held, None, false);
    }
}
