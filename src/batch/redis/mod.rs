//! Batches in Redis (`batch.store: redis`, the default with a Redis limits policy), so
//! several gateway instances share the Files and Batches API and dispatch one batch
//! together.
//!
//! Keys (all under the limits' key prefix; one hash tag with Redis Cluster, so the scripts
//! stay atomic):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `f:{file}` / `fd:{file}` | hash / list | a file's metadata / its content in 1 MiB chunks |
//! | `files:{owner}` / `batches:{owner}` | zset | a consumer's files / batches by creation time |
//! | `b:{batch}` | hash | the batch object's fields and its counters |
//! | `l:{batch}` | list | custom_ids in input order (results and output files follow it) |
//! | `body:{batch}` `ln:{batch}` `st:{batch}` `at:{batch}` `res:{batch}` | hashes | per custom_id: where its line lies in the input file (`@start:len`, not a copy), its line number, state, attempts, result line |
//! | `usage:{owner}` | string | bytes of a consumer's files (the quota) |
//! | `fexp`, `ended` | zsets | files by expiry time, ended batches by end time (the retention sweep) |
//! | `q:{model}` | stream, group `d` | the work queue of a model: one entry per request to run |
//! | `delayed` | zset | retries by due time, put back on their stream when due |
//! | `active`, `hooks`, `queues` | sets | unfinished batches, batches owing a webhook, streams |
//!
//! A request is run once: an instance reads an entry with `XREADGROUP`, and a script moves
//! the request from `pending` to `running` (entries of requests already ended are only
//! acknowledged). Its result is written by a script that moves it on to `done` or `failed`
//! only from `running`, so a result line is written once per custom_id whatever happens.
//! Entries an instance holds are refreshed (`XCLAIM … JUSTID`) every `lease_ttl / 3`; when
//! an instance dies, its entries go idle and another instance takes them over with
//! `XAUTOCLAIM` after `lease_ttl`, and runs them.

mod files;
mod lifecycle;
mod space;
mod work;

use crate::batch::backend::{
    now, now_ms, request_status, unrun_line, webhook_event, webhook_record, Backend, Claimed,
    FileRow, NewBatch, NewRequest, Queue, StoreResult, Swept, CHUNK,
};
use crate::batch::model::{json_or_null, Batch, BatchStatus, Cancel};
use crate::config::schema::LimitsConfig;
use crate::limits::redis::{Conn, StoreConn};
use async_trait::async_trait;
use bytes::Bytes;
use redis::{cmd, Script, Value as RV};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const GROUP: &str = "d";

/// Move a request from pending (or running, when taken over) to running; nil when it has
/// ended or its batch is not running (the entry is then only acknowledged).
const TAKE: &str = include_str!("../../../lua-compat/batch/take.lua");

/// Write a result once: KEYS st, res, b, at, stream; ARGV cid, state, line, in, out, entry.
const FINISH: &str = include_str!("../../../lua-compat/batch/finish.lua");

/// Put a running request back: KEYS st, at, delayed, stream; ARGV cid, counts, due,
/// member, entry.
const RETRY: &str = include_str!("../../../lua-compat/batch/retry.lua");

/// A due retry back on its stream, once: KEYS delayed, stream; ARGV member, batch, cid.
const REQUEUE: &str = include_str!("../../../lua-compat/batch/requeue.lua");

/// End pending requests with error lines: KEYS st, res, b; ARGV (cid, line)…; returns n.
const END_PENDING: &str = include_str!("../../../lua-compat/batch/end_pending.lua");

/// Compare-and-set one hash field: KEYS h; ARGV field, allowed old values (comma-separated,
/// `~` for absent), new value, then field/value pairs to set too. Returns 'ok' or the old
/// value ('~' when absent).
const CAS: &str = include_str!("../../../lua-compat/batch/cas.lua");

/// Add requests in validation once each: KEYS ln, body, st, l; ARGV (cid, line, ref)…;
/// returns the duplicate lines.
const ADD_REQUESTS: &str = include_str!("../../../lua-compat/batch/add_requests.lua");

pub struct RedisBatches {
    redis: StoreConn,
    /// This instance's consumer name in the groups.
    me: String,
    lease: Duration,
    /// Uploads are written here before they go to Redis: a directory of this process's
    /// own (random name, owner-only), removed at shutdown.
    scratch: tempfile::TempDir,
    scripts: Scripts,
    /// Entries this instance holds (entry id → stream key), refreshed while they run.
    inflight: Mutex<HashMap<String, String>>,
    /// Entries taken over from dead instances, run before new ones.
    adopted: Mutex<VecDeque<(String, String, String, String)>>,
    last_refresh: Mutex<Instant>,
}

struct Scripts {
    take: Script,
    finish: Script,
    retry: Script,
    requeue: Script,
    end_pending: Script,
    cas: Script,
    add_requests: Script,
}

fn text<T>(r: redis::RedisResult<T>) -> StoreResult<T> {
    r.map_err(Into::into)
}

/// The owner part of per-consumer keys.
fn owner(consumer: Option<&str>) -> String {
    consumer.map_or_else(|| "~".to_string(), |c| format!("c:{c}"))
}

/// Hash fields as a map.
fn fields(v: Vec<(String, String)>) -> HashMap<String, String> {
    v.into_iter().collect()
}

impl RedisBatches {
    pub fn new(limits: &LimitsConfig) -> Result<RedisBatches, String> {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::Builder::new()
            .prefix("ai-rate-limiter-batch-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| format!("batch scratch dir: {e}"))?;
        Ok(RedisBatches {
            redis: StoreConn::new(limits, "batch"),
            me: format!("gw-{:016x}", rand::random::<u64>()),
            lease: limits.lease_ttl,
            scratch,
            scripts: Scripts {
                take: Script::new(TAKE),
                finish: Script::new(FINISH),
                retry: Script::new(RETRY),
                requeue: Script::new(REQUEUE),
                end_pending: Script::new(END_PENDING),
                cas: Script::new(CAS),
                add_requests: Script::new(ADD_REQUESTS),
            },
            inflight: Mutex::new(HashMap::new()),
            adopted: Mutex::new(VecDeque::new()),
            last_refresh: Mutex::new(Instant::now()),
        })
    }

    async fn conn(&self) -> StoreResult<&Conn> {
        text(self.redis.get().await)
    }

    fn k(&self, rest: &str) -> String {
        self.redis.key(rest)
    }

    async fn q<T: redis::FromRedisValue>(&self, c: &redis::Cmd) -> StoreResult<T> {
        text(self.conn().await?.query(c).await)
    }

    async fn p<T: redis::FromRedisValue>(&self, p: &redis::Pipeline) -> StoreResult<T> {
        text(self.conn().await?.pipe(p).await)
    }

    async fn cas(
        &self,
        key: &str,
        field: &str,
        from: &str,
        to: &str,
        also: &[(&str, String)],
    ) -> StoreResult<String> {
        let mut inv = self.scripts.cas.prepare_invoke();
        inv.key(key).arg(field).arg(from).arg(to);
        for (f, v) in also {
            inv.arg(*f).arg(v);
        }
        text(self.conn().await?.invoke(&inv).await)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The batch hash, if `consumer` owns it (`None` for `Some` consumer checks nothing).
    async fn owned(
        &self,
        consumer: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<HashMap<String, String>>> {
        let h: Vec<(String, String)> = self
            .q(cmd("HGETALL").arg(self.k(&format!("b:{id}"))))
            .await?;
        let h = fields(h);
        if h.is_empty() || h.get("consumer").map(String::as_str) != consumer {
            return Ok(None);
        }
        Ok(Some(h))
    }

    async fn file_meta(&self, id: &str) -> StoreResult<HashMap<String, String>> {
        let h: Vec<(String, String)> = self
            .q(cmd("HGETALL").arg(self.k(&format!("f:{id}"))))
            .await?;
        Ok(fields(h))
    }

    fn queue_key(&self, model: &str) -> String {
        self.k(&format!("q:{model}"))
    }

    /// Write a file's metadata and index it.
    async fn put_file_meta(&self, consumer: Option<&str>, f: &FileRow) -> StoreResult<()> {
        let mut p = redis::pipe();
        let key = self.k(&format!("f:{}", f.id));
        p.cmd("HSET")
            .arg(&key)
            .arg("purpose")
            .arg(&f.purpose)
            .arg("filename")
            .arg(&f.filename)
            .arg("bytes")
            .arg(f.bytes)
            .arg("created_at")
            .arg(f.created_at)
            .ignore();
        if let Some(c) = consumer {
            p.cmd("HSET").arg(&key).arg("consumer").arg(c).ignore();
        }
        if let Some(e) = f.expires_at {
            p.cmd("HSET").arg(&key).arg("expires_at").arg(e).ignore();
            p.cmd("ZADD").arg(self.k("fexp")).arg(e).arg(&f.id).ignore();
        }
        p.cmd("INCRBY")
            .arg(self.k(&format!("usage:{}", owner(consumer))))
            .arg(f.bytes)
            .ignore();
        p.cmd("ZADD")
            .arg(self.k(&format!("files:{}", owner(consumer))))
            .arg(f.created_at)
            .arg(&f.id)
            .ignore();
        self.p(&p).await
    }

    /// A batch from its hash (`None` when its status is unknown: not a batch).
    fn batch_object(h: &HashMap<String, String>) -> Option<Batch> {
        let s = |k: &str| h.get(k).cloned();
        let i = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        let j = |k: &str| json_or_null(h.get(k).map(String::as_str));
        Some(Batch {
            id: s("id")?,
            endpoint: s("endpoint").unwrap_or_default(),
            model: s("model"),
            errors: j("errors"),
            input_file_id: s("input_file_id").unwrap_or_default(),
            completion_window: s("completion_window").unwrap_or_default(),
            status: BatchStatus::parse(h.get("status")?)?,
            output_file_id: s("output_file_id"),
            error_file_id: s("error_file_id"),
            created_at: i("created_at"),
            in_progress_at: i("in_progress_at"),
            expires_at: i("expires_at"),
            finalizing_at: i("finalizing_at"),
            completed_at: i("completed_at"),
            failed_at: i("failed_at"),
            expired_at: i("expired_at"),
            cancelling_at: i("cancelling_at"),
            cancelled_at: i("cancelled_at"),
            total: i("total").unwrap_or(0),
            completed: i("completed").unwrap_or(0),
            failed: i("failed").unwrap_or(0),
            input_tokens: i("input_tokens").unwrap_or(0),
            output_tokens: i("output_tokens").unwrap_or(0),
            metadata: j("metadata"),
            webhook: s("webhook_url").map(|url| (url, j("webhook"))),
        })
    }
}

#[async_trait]
impl Backend for RedisBatches {
    async fn add_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
        quota: u64,
    ) -> StoreResult<bool> {
        if self.used(consumer).await?.saturating_add(f.bytes) > quota {
            return Ok(false);
        }
        self.store_file(consumer, f, content).await?;
        Ok(true)
    }

    async fn usage(&self, consumer: Option<&str>) -> StoreResult<u64> {
        self.used(consumer).await
    }

    async fn file(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<FileRow>> {
        self.find_file(consumer, id).await
    }

    async fn files(
        &self,
        consumer: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> StoreResult<Vec<FileRow>> {
        self.list_files(consumer, purpose, after, limit, asc).await
    }

    async fn delete_file(&self, consumer: Option<&str>, id: &str) -> StoreResult<bool> {
        self.remove_file(consumer, id).await
    }

    async fn file_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>> {
        self.read_chunk(id, index).await
    }

    fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }
    fn private_scratch(&self) -> Option<&Path> {
        Some(self.scratch.path())
    }

    async fn add_batch(&self, b: &NewBatch<'_>) -> StoreResult<()> {
        self.create_batch(b).await
    }

    async fn batch(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<Batch>> {
        Ok(self
            .owned(consumer, id)
            .await?
            .and_then(|h| Self::batch_object(&h)))
    }

    async fn batch_any(&self, id: &str) -> StoreResult<Option<Batch>> {
        let h: Vec<(String, String)> = self
            .q(cmd("HGETALL").arg(self.k(&format!("b:{id}"))))
            .await?;
        let h = fields(h);
        Ok(Self::batch_object(&h))
    }

    async fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Batch>> {
        self.list_batches(consumer, after, limit).await
    }

    async fn cancel(&self, consumer: Option<&str>, id: &str) -> StoreResult<Cancel> {
        if self.owned(consumer, id).await?.is_none() {
            return Ok(Cancel::NotFound);
        }
        let r = self
            .cas(
                &self.k(&format!("b:{id}")),
                "status",
                "validating,in_progress",
                "cancelling",
                &[("cancelling_at", now().to_string())],
            )
            .await?;
        Ok(match r.as_str() {
            "ok" => Cancel::Requested,
            other => Cancel::Refused(BatchStatus::shown(other)),
        })
    }

    async fn validating(&self) -> StoreResult<Vec<(String, String, String)>> {
        self.take_validations().await
    }

    async fn fail_batch(&self, id: &str, errors: &Value) -> StoreResult<()> {
        self.cas(
            &self.k(&format!("b:{id}")),
            "status",
            "validating",
            "failed",
            &[
                ("failed_at", now().to_string()),
                ("errors", errors.to_string()),
            ],
        )
        .await?;
        let mut p = redis::pipe();
        p.cmd("SREM").arg(self.k("active")).arg(id).ignore();
        p.cmd("DEL").arg(self.k(&format!("v:{id}"))).ignore();
        self.p::<()>(&p).await?;
        self.drop_requests(id).await
    }

    async fn add_requests(&self, id: &str, rows: &[NewRequest]) -> StoreResult<Vec<u64>> {
        self.add_rows(id, rows).await
    }

    async fn start_batch(&self, id: &str, model: Option<&str>, total: u64) -> StoreResult<()> {
        self.load_batch(id, model, total).await
    }

    async fn sweep(&self, retention_secs: i64) -> StoreResult<Swept> {
        self.sweep_space(retention_secs).await
    }

    async fn claim(&self, n: usize, queue: Queue<'_>) -> StoreResult<Vec<Claimed>> {
        self.claim_entries(n, queue).await
    }

    async fn finish(
        &self,
        c: &Claimed,
        ok: bool,
        line: &Value,
        tokens: (u64, u64),
    ) -> StoreResult<()> {
        self.write_result(c, ok, line, tokens).await
    }

    async fn retry(&self, c: &Claimed, not_before_ms: i64, counts: bool) -> StoreResult<()> {
        self.requeue_later(c, not_before_ms, counts).await
    }

    async fn results(
        &self,
        consumer: Option<&str>,
        id: &str,
        after_line: i64,
        limit: usize,
    ) -> StoreResult<Option<Vec<(i64, String)>>> {
        self.result_page(consumer, id, after_line, limit).await
    }

    async fn request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<Value>> {
        if self.owned(consumer, id).await?.is_none() {
            return Ok(None);
        }
        let mut p = redis::pipe();
        p.cmd("HGET")
            .arg(self.k(&format!("st:{id}")))
            .arg(custom_id);
        p.cmd("HGET")
            .arg(self.k(&format!("at:{id}")))
            .arg(custom_id);
        p.cmd("HGET")
            .arg(self.k(&format!("res:{id}")))
            .arg(custom_id);
        let (state, attempts, result): (Option<String>, Option<i64>, Option<String>) =
            self.p(&p).await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let result: Value = result
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let status = request_status(&state, &result);
        Ok(Some(
            json!({"object": "batch.request", "custom_id": custom_id, "status": status,
                       "attempts": attempts.unwrap_or(0), "result": result}),
        ))
    }

    async fn cancel_request(
        &self,
        consumer: Option<&str>,
        id: &str,
        custom_id: &str,
    ) -> StoreResult<Option<bool>> {
        if self.owned(consumer, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.end_pending(id, Some(custom_id)).await? > 0))
    }

    async fn overview(&self, limit: usize) -> StoreResult<Vec<Batch>> {
        let ids: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("active"))).await?;
        let mut out = Vec::new();
        for id in ids.iter().take(limit) {
            if let Some(b) = self.batch_any(id).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn pending(&self) -> StoreResult<i64> {
        let ids: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("active"))).await?;
        let mut n = 0;
        for id in ids {
            let (t, c, f): (Option<i64>, Option<i64>, Option<i64>) = self
                .q(cmd("HMGET")
                    .arg(self.k(&format!("b:{id}")))
                    .arg("total")
                    .arg("completed")
                    .arg("failed"))
                .await?;
            n += (t.unwrap_or(0) - c.unwrap_or(0) - f.unwrap_or(0)).max(0);
        }
        Ok(n)
    }

    async fn settle(&self, file_lifetime_secs: i64) -> StoreResult<Vec<String>> {
        self.settle_batches(file_lifetime_secs).await
    }

    async fn maintain(&self) -> StoreResult<()> {
        self.keep_queues().await
    }

    async fn webhooks_due(&self) -> StoreResult<Vec<(String, String, String)>> {
        self.take_webhooks().await
    }

    async fn webhook_delivered(
        &self,
        id: &str,
        event: &str,
        status: Option<u16>,
        attempts: u32,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let bkey = self.k(&format!("b:{id}"));
        let old: Option<String> = self.q(cmd("HGET").arg(&bkey).arg("webhook")).await?;
        let w = webhook_record(old.as_deref(), event, status, attempts, error);
        self.q(cmd("HSET").arg(&bkey).arg("webhook").arg(w)).await
    }
}
