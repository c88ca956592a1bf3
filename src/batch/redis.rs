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
//! | `body:{batch}` `st:{batch}` `at:{batch}` `res:{batch}` | hashes | per custom_id: body, state, attempts, result line |
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

use super::backend::{
    now, now_ms, request_status, unrun_line, webhook_event, webhook_record, Backend, Claimed,
    FileRow, NewBatch, Queue, Request, StoreResult, CHUNK,
};
use crate::config::schema::{LimitPolicy, LimitsConfig};
use crate::limits::redis::Conn;
use async_trait::async_trait;
use bytes::Bytes;
use redis::{cmd, Script, Value as RV};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const GROUP: &str = "d";

/// Move a request from pending (or running, when taken over) to running; nil when it has
/// ended or its batch is not running (the entry is then only acknowledged).
const TAKE: &str = r"
if redis.call('HGET', KEYS[2], 'status') ~= 'in_progress' then return false end
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s ~= 'pending' and s ~= 'running' then return false end
redis.call('HSET', KEYS[1], ARGV[1], 'running')
return {redis.call('HGET', KEYS[4], ARGV[1]) or '', redis.call('HGET', KEYS[3], ARGV[1]) or '0'}
";

/// Write a result once: KEYS st, res, b, at, stream; ARGV cid, state, line, in, out, entry.
const FINISH: &str = r"
local s = redis.call('HGET', KEYS[1], ARGV[1])
if s == 'running' or s == 'pending' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  local counter = 'failed'
  if ARGV[2] == 'done' then counter = 'completed' end
  redis.call('HINCRBY', KEYS[3], counter, 1)
  redis.call('HINCRBY', KEYS[3], 'input_tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'output_tokens', ARGV[5])
  redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
end
if ARGV[6] ~= '' then redis.call('XACK', KEYS[5], 'd', ARGV[6]) end
return 1
";

/// Put a running request back: KEYS st, at, delayed, stream; ARGV cid, counts, due,
/// member, entry.
const RETRY: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == 'running' then
  redis.call('HSET', KEYS[1], ARGV[1], 'pending')
  if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
if ARGV[5] ~= '' then redis.call('XACK', KEYS[4], 'd', ARGV[5]) end
return 1
";

/// A due retry back on its stream, once: KEYS delayed, stream; ARGV member, batch, cid.
const REQUEUE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[2], 'c', ARGV[3])
end
return 1
";

/// End pending requests with error lines: KEYS st, res, b; ARGV (cid, line)…; returns n.
const END_PENDING: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == 'pending' then
    redis.call('HSET', KEYS[1], ARGV[i], 'failed')
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[3], 'failed', n) end
return n
";

/// Compare-and-set one hash field: KEYS h; ARGV field, allowed old values (comma-separated,
/// `~` for absent), new value, then field/value pairs to set too. Returns 'ok' or the old
/// value ('~' when absent).
const CAS: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1]) or '~'
for v in string.gmatch(ARGV[2], '[^,]+') do
  if v == old then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    return 'ok'
  end
end
return old
";

pub struct RedisBatches {
    policy: LimitPolicy,
    urls: Vec<String>,
    timeout: Duration,
    conn: OnceCell<Conn>,
    prefix: String,
    /// This instance's consumer name in the groups.
    me: String,
    lease: Duration,
    scratch: PathBuf,
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
}

fn text<T>(r: redis::RedisResult<T>) -> StoreResult<T> {
    r.map_err(|e| format!("batch store (Redis): {e}"))
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
    pub fn new(limits: &LimitsConfig, scratch: PathBuf) -> Result<RedisBatches, String> {
        let r = &limits.redis;
        let urls = match limits.policy {
            LimitPolicy::RedisCluster => r.nodes.iter().map(|n| n.expose().to_string()).collect(),
            _ => r.url.iter().map(|u| u.expose().to_string()).collect(),
        };
        let prefix = match limits.policy {
            LimitPolicy::RedisCluster => format!("{{{}ai-rate-limiter-batch}}:", r.key_prefix),
            _ => format!("{}batch:", r.key_prefix),
        };
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("batch scratch dir {}: {e}", scratch.display()))?;
        Ok(RedisBatches {
            policy: limits.policy,
            urls,
            timeout: r.timeout.max(Duration::from_secs(5)),
            conn: OnceCell::new(),
            prefix,
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
            },
            inflight: Mutex::new(HashMap::new()),
            adopted: Mutex::new(VecDeque::new()),
            last_refresh: Mutex::new(Instant::now()),
        })
    }

    async fn conn(&self) -> StoreResult<&Conn> {
        self.conn
            .get_or_try_init(|| async {
                text(Conn::open(self.policy, &self.urls, self.timeout).await)
            })
            .await
    }

    fn k(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
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
        }
        p.cmd("ZADD")
            .arg(self.k(&format!("files:{}", owner(consumer))))
            .arg(f.created_at)
            .arg(&f.id)
            .ignore();
        self.p(&p).await
    }

    /// Write and finalize a batch whose requests have all ended (one instance at a time).
    async fn finalize(&self, id: &str, h: &HashMap<String, String>) -> StoreResult<()> {
        let lock = self.k(&format!("fin:{id}"));
        let got: Option<String> = self
            .q(cmd("SET")
                .arg(&lock)
                .arg(&self.me)
                .arg("NX")
                .arg("PX")
                .arg(120_000))
            .await?;
        if got.is_none() {
            return Ok(());
        }
        let bkey = self.k(&format!("b:{id}"));
        let status = h.get("status").cloned().unwrap_or_default();
        if status != "finalizing" {
            let r = self
                .cas(
                    &bkey,
                    "status",
                    "in_progress,cancelling,expiring",
                    "finalizing",
                    &[
                        ("ending", status.clone()),
                        ("finalizing_at", now().to_string()),
                    ],
                )
                .await?;
            if r != "ok" {
                let _: () = self.q(cmd("DEL").arg(&lock)).await?;
                return Ok(());
            }
        }
        let ending: Option<String> = self.q(cmd("HGET").arg(&bkey).arg("ending")).await?;
        let consumer = h.get("consumer").map(String::as_str);
        let hexpart = id.trim_start_matches("batch_");
        let names = [
            (
                format!("file-{hexpart}-output"),
                "done",
                "batch_output.jsonl",
            ),
            (
                format!("file-{hexpart}-errors"),
                "failed",
                "batch_errors.jsonl",
            ),
        ];
        let mut written: Vec<Option<String>> = Vec::new();
        for (fid, want, name) in &names {
            let data = self.k(&format!("fd:{fid}"));
            let _: () = self.q(cmd("DEL").arg(&data)).await?;
            let (mut buf, mut bytes, mut at) = (Vec::<u8>::new(), 0u64, 0isize);
            loop {
                let cids: Vec<String> = self
                    .q(cmd("LRANGE")
                        .arg(self.k(&format!("l:{id}")))
                        .arg(at)
                        .arg(at + 999))
                    .await?;
                if cids.is_empty() {
                    break;
                }
                at += cids.len() as isize;
                let mut p = redis::pipe();
                p.cmd("HMGET").arg(self.k(&format!("st:{id}"))).arg(&cids);
                p.cmd("HMGET").arg(self.k(&format!("res:{id}"))).arg(&cids);
                let (states, results): (Vec<Option<String>>, Vec<Option<String>>) =
                    self.p(&p).await?;
                for (s, r) in states.iter().zip(&results) {
                    if let (Some(s), Some(r)) = (s, r) {
                        if s == want {
                            buf.extend_from_slice(r.as_bytes());
                            buf.push(b'\n');
                        }
                    }
                }
                if buf.len() >= CHUNK {
                    bytes += buf.len() as u64;
                    let _: () = self
                        .q(cmd("RPUSH").arg(&data).arg(std::mem::take(&mut buf)))
                        .await?;
                }
            }
            if !buf.is_empty() {
                bytes += buf.len() as u64;
                let _: () = self.q(cmd("RPUSH").arg(&data).arg(buf)).await?;
            }
            if bytes == 0 {
                written.push(None);
                continue;
            }
            let row = FileRow {
                id: fid.clone(),
                purpose: "batch_output".into(),
                filename: format!("{id}_{name}"),
                bytes,
                created_at: now(),
                expires_at: Some(now() + 30 * 86_400),
            };
            self.put_file_meta(consumer, &row).await?;
            written.push(Some(fid.clone()));
        }
        let (final_status, stamp) = match ending.as_deref() {
            Some("cancelling") => ("cancelled", "cancelled_at"),
            Some("expiring") => ("expired", "expired_at"),
            _ => ("completed", "completed_at"),
        };
        let mut p = redis::pipe();
        p.cmd("HSET")
            .arg(&bkey)
            .arg("status")
            .arg(final_status)
            .arg(stamp)
            .arg(now())
            .ignore();
        for (field, fid) in ["output_file_id", "error_file_id"].iter().zip(&written) {
            if let Some(f) = fid {
                p.cmd("HSET").arg(&bkey).arg(*field).arg(f).ignore();
            }
        }
        p.cmd("SREM").arg(self.k("active")).arg(id).ignore();
        p.cmd("DEL").arg(&lock).ignore();
        self.p(&p).await
    }

    /// End the pending requests of a batch with `code` error lines.
    async fn end_pending(&self, id: &str, only: Option<&str>) -> StoreResult<u64> {
        let code = match only {
            Some(_) => "batch_cancelled",
            None => "",
        };
        let cids: Vec<String> = match only {
            Some(c) => vec![c.to_string()],
            None => {
                let all: Vec<(String, String)> = self
                    .q(cmd("HGETALL").arg(self.k(&format!("st:{id}"))))
                    .await?;
                all.into_iter()
                    .filter(|(_, s)| s == "pending")
                    .map(|(c, _)| c)
                    .collect()
            }
        };
        let status: Option<String> = self
            .q(cmd("HGET").arg(self.k(&format!("b:{id}"))).arg("ending"))
            .await?;
        let status: Option<String> = match status {
            Some(s) => Some(s),
            None => {
                self.q(cmd("HGET").arg(self.k(&format!("b:{id}"))).arg("status"))
                    .await?
            }
        };
        let code = if code.is_empty() {
            match status.as_deref() {
                Some("expiring") => "batch_expired",
                _ => "batch_cancelled",
            }
        } else {
            code
        };
        let mut n = 0;
        for part in cids.chunks(200) {
            let mut inv = self.scripts.end_pending.prepare_invoke();
            inv.key(self.k(&format!("st:{id}")))
                .key(self.k(&format!("res:{id}")))
                .key(self.k(&format!("b:{id}")));
            for c in part {
                inv.arg(c).arg(unrun_line(c, code));
            }
            let got: u64 = text(self.conn().await?.invoke(&inv).await)?;
            n += got;
        }
        Ok(n)
    }

    fn batch_object(h: &HashMap<String, String>) -> Value {
        let s = |k: &str| h.get(k).cloned();
        let i = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        let j = |k: &str| {
            h.get(k)
                .and_then(|v| serde_json::from_str::<Value>(v).ok())
                .unwrap_or(Value::Null)
        };
        let status = match s("status").as_deref() {
            Some("expiring") => "in_progress".to_string(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let (input, output) = (
            i("input_tokens").unwrap_or(0),
            i("output_tokens").unwrap_or(0),
        );
        json!({
            "id": s("id"), "object": "batch", "endpoint": s("endpoint"), "model": s("model"),
            "errors": j("errors"), "input_file_id": s("input_file_id"),
            "completion_window": s("completion_window"), "status": status,
            "output_file_id": s("output_file_id"), "error_file_id": s("error_file_id"),
            "created_at": i("created_at"), "in_progress_at": i("in_progress_at"),
            "expires_at": i("expires_at"), "finalizing_at": i("finalizing_at"),
            "completed_at": i("completed_at"), "failed_at": i("failed_at"),
            "expired_at": i("expired_at"), "cancelling_at": i("cancelling_at"),
            "cancelled_at": i("cancelled_at"),
            "request_counts": {"total": i("total").unwrap_or(0),
                               "completed": i("completed").unwrap_or(0),
                               "failed": i("failed").unwrap_or(0)},
            "usage": {"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": input + output},
            "metadata": j("metadata"),
            "webhook": match s("webhook_url") {
                Some(url) => {
                    let mut w = j("webhook");
                    if !w.is_object() {
                        w = json!({"delivered": 0, "failed": 0});
                    }
                    w["url"] = json!(url);
                    w
                }
                None => Value::Null,
            },
        })
    }

    /// Streams to read for `queue`.
    async fn queues(&self, queue: Queue<'_>) -> StoreResult<Vec<String>> {
        Ok(match queue {
            Queue::Model(m) => vec![m.to_string()],
            Queue::AllBut(but) => {
                let all: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("queues"))).await?;
                all.into_iter().filter(|m| !but.contains(m)).collect()
            }
        })
    }

    /// Turn a stream entry into a claimed request (or acknowledge it when its request has
    /// ended).
    async fn take(
        &self,
        model: &str,
        entry: String,
        batch: String,
        cid: String,
        batches: &mut HashMap<String, (Option<String>, String)>,
    ) -> StoreResult<Option<Claimed>> {
        let stream = self.queue_key(model);
        let mut inv = self.scripts.take.prepare_invoke();
        inv.key(self.k(&format!("st:{batch}")))
            .key(self.k(&format!("b:{batch}")))
            .key(self.k(&format!("at:{batch}")))
            .key(self.k(&format!("body:{batch}")))
            .arg(&cid);
        let got: Option<(String, String)> = text(self.conn().await?.invoke(&inv).await)?;
        let Some((body, attempts)) = got else {
            let _: i64 = self
                .q(cmd("XACK").arg(&stream).arg(GROUP).arg(&entry))
                .await?;
            return Ok(None);
        };
        if !batches.contains_key(&batch) {
            let (consumer, endpoint): (Option<String>, Option<String>) = self
                .q(cmd("HMGET")
                    .arg(self.k(&format!("b:{batch}")))
                    .arg("consumer")
                    .arg("endpoint"))
                .await?;
            batches.insert(batch.clone(), (consumer, endpoint.unwrap_or_default()));
        }
        let (consumer, endpoint) = batches.get(&batch).cloned().unwrap_or_default();
        Self::lock(&self.inflight).insert(entry.clone(), stream);
        Ok(Some(Claimed {
            batch_id: batch,
            custom_id: cid,
            consumer,
            endpoint,
            body,
            attempts: attempts.parse().unwrap_or(0),
            model: Some(model.to_string()).filter(|m| m != "-"),
            entry: Some(entry),
        }))
    }
}

/// `(entry id, batch, custom_id)` of stream entries in an `XREADGROUP`/`XAUTOCLAIM` answer.
fn entries(v: &RV) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let RV::Array(list) = v else {
        return out;
    };
    for e in list {
        let RV::Array(parts) = e else { continue };
        let (Some(id), Some(RV::Array(kv))) = (parts.first(), parts.get(1)) else {
            continue;
        };
        let s = |v: &RV| redis::from_redis_value::<String>(v.clone()).ok();
        let mut b = None;
        let mut c = None;
        for pair in kv.chunks(2) {
            if let [k, v] = pair {
                match s(k).as_deref() {
                    Some("b") => b = s(v),
                    Some("c") => c = s(v),
                    _ => {}
                }
            }
        }
        if let (Some(id), Some(b), Some(c)) = (s(id), b, c) {
            out.push((id, b, c));
        }
    }
    out
}

#[async_trait]
impl Backend for RedisBatches {
    async fn add_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
    ) -> StoreResult<()> {
        use std::io::Read;
        let data = self.k(&format!("fd:{}", f.id));
        let mut file = std::fs::File::open(content).map_err(|e| e.to_string())?;
        loop {
            let mut buf = Vec::with_capacity(CHUNK);
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .map_err(|e| e.to_string())?;
            if buf.is_empty() {
                break;
            }
            let _: () = self.q(cmd("RPUSH").arg(&data).arg(buf)).await?;
        }
        self.put_file_meta(consumer, f).await
    }

    async fn file(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<FileRow>> {
        let h = self.file_meta(id).await?;
        if h.is_empty() || h.get("consumer").map(String::as_str) != consumer {
            return Ok(None);
        }
        Ok(Some(FileRow {
            id: id.to_string(),
            purpose: h.get("purpose").cloned().unwrap_or_default(),
            filename: h.get("filename").cloned().unwrap_or_default(),
            bytes: h.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(0),
            created_at: h
                .get("created_at")
                .and_then(|b| b.parse().ok())
                .unwrap_or(0),
            expires_at: h.get("expires_at").and_then(|b| b.parse().ok()),
        }))
    }

    async fn files(
        &self,
        consumer: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
        asc: bool,
    ) -> StoreResult<Vec<FileRow>> {
        let key = self.k(&format!("files:{}", owner(consumer)));
        let mut ids: Vec<String> = self.q(cmd("ZRANGE").arg(&key).arg(0).arg(-1)).await?;
        if !asc {
            ids.reverse();
        }
        if let Some(a) = after {
            if let Some(p) = ids.iter().position(|i| i == a) {
                ids.drain(..=p);
            }
        }
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= limit {
                break;
            }
            if let Some(f) = self.file(consumer, &id).await? {
                if purpose.is_none_or(|p| p == f.purpose) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    async fn delete_file(&self, consumer: Option<&str>, id: &str) -> StoreResult<bool> {
        if self.file(consumer, id).await?.is_none() {
            return Ok(false);
        }
        let mut p = redis::pipe();
        p.cmd("DEL").arg(self.k(&format!("f:{id}"))).ignore();
        p.cmd("DEL").arg(self.k(&format!("fd:{id}"))).ignore();
        p.cmd("ZREM")
            .arg(self.k(&format!("files:{}", owner(consumer))))
            .arg(id)
            .ignore();
        self.p::<()>(&p).await?;
        Ok(true)
    }

    async fn file_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>> {
        if index == 0 {
            let exists: bool = self
                .q(cmd("EXISTS").arg(self.k(&format!("f:{id}"))))
                .await?;
            if !exists {
                return Err(format!("no file {id}"));
            }
        }
        let c: Option<Vec<u8>> = self
            .q(cmd("LINDEX").arg(self.k(&format!("fd:{id}"))).arg(index))
            .await?;
        Ok(c.map(Bytes::from))
    }

    fn scratch_dir(&self) -> &Path {
        &self.scratch
    }

    async fn add_batch(&self, b: &NewBatch<'_>) -> StoreResult<()> {
        let t = now();
        let key = self.k(&format!("b:{}", b.id));
        let mut p = redis::pipe();
        p.cmd("HSET")
            .arg(&key)
            .arg("id")
            .arg(b.id)
            .arg("endpoint")
            .arg(b.endpoint)
            .arg("input_file_id")
            .arg(b.input_file_id)
            .arg("completion_window")
            .arg(&b.window.0)
            .arg("status")
            .arg("validating")
            .arg("created_at")
            .arg(t)
            .arg("expires_at")
            .arg(t + b.window.1)
            .arg("metadata")
            .arg(b.metadata.to_string())
            .ignore();
        if let Some(c) = b.consumer {
            p.cmd("HSET").arg(&key).arg("consumer").arg(c).ignore();
        }
        if let Some((url, every)) = b.webhook {
            p.cmd("HSET")
                .arg(&key)
                .arg("webhook_url")
                .arg(url)
                .arg("webhook_every")
                .arg(every)
                .ignore();
            p.cmd("SADD").arg(self.k("hooks")).arg(b.id).ignore();
        }
        p.cmd("ZADD")
            .arg(self.k(&format!("batches:{}", owner(b.consumer))))
            .arg(t)
            .arg(b.id)
            .ignore();
        p.cmd("SADD").arg(self.k("active")).arg(b.id).ignore();
        self.p(&p).await
    }

    async fn batch(&self, consumer: Option<&str>, id: &str) -> StoreResult<Option<Value>> {
        Ok(self
            .owned(consumer, id)
            .await?
            .map(|h| Self::batch_object(&h)))
    }

    async fn batch_any(&self, id: &str) -> StoreResult<Option<Value>> {
        let h: Vec<(String, String)> = self
            .q(cmd("HGETALL").arg(self.k(&format!("b:{id}"))))
            .await?;
        let h = fields(h);
        Ok((!h.is_empty()).then(|| Self::batch_object(&h)))
    }

    async fn batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Value>> {
        let key = self.k(&format!("batches:{}", owner(consumer)));
        let start: isize = match after {
            Some(a) => {
                let r: Option<isize> = self.q(cmd("ZREVRANK").arg(&key).arg(a)).await?;
                r.map_or(0, |r| r + 1)
            }
            None => 0,
        };
        let ids: Vec<String> = self
            .q(cmd("ZREVRANGE")
                .arg(&key)
                .arg(start)
                .arg(start + limit as isize - 1))
            .await?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(b) = self.batch(consumer, &id).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn cancel(&self, consumer: Option<&str>, id: &str) -> StoreResult<Result<(), String>> {
        if self.owned(consumer, id).await?.is_none() {
            return Ok(Err(String::new()));
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
        Ok(if r == "ok" { Ok(()) } else { Err(r) })
    }

    async fn validating(&self) -> StoreResult<Vec<(String, String, String)>> {
        let ids: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("active"))).await?;
        let mut out = Vec::new();
        for id in ids {
            let (status, loading, endpoint, file): (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = self
                .q(cmd("HMGET")
                    .arg(self.k(&format!("b:{id}")))
                    .arg("status")
                    .arg("loading")
                    .arg("endpoint")
                    .arg("input_file_id"))
                .await?;
            // A batch being validated, or one whose loading a crash interrupted.
            let wanted = status.as_deref() == Some("validating") || loading.is_some();
            if !wanted {
                continue;
            }
            let lock: Option<String> = self
                .q(cmd("SET")
                    .arg(self.k(&format!("v:{id}")))
                    .arg(&self.me)
                    .arg("NX")
                    .arg("PX")
                    .arg(120_000))
                .await?;
            if lock.is_some() {
                out.push((id, endpoint.unwrap_or_default(), file.unwrap_or_default()));
            }
        }
        Ok(out)
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
        self.p(&p).await
    }

    async fn start_batch(
        &self,
        id: &str,
        model: Option<&str>,
        requests: &[Request],
    ) -> StoreResult<()> {
        let bkey = self.k(&format!("b:{id}"));
        let model = model.unwrap_or("-");
        let stream = self.queue_key(model);
        let created: redis::RedisResult<()> = self
            .conn()
            .await?
            .query(
                cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return text(Err(e));
            }
        }
        let _: () = self.q(cmd("SADD").arg(self.k("queues")).arg(model)).await?;
        // Running before the requests arrive, so no entry finds its batch not started;
        // `loading` marks a load a crash may interrupt (resumed from `loaded`).
        let r = self
            .cas(
                &bkey,
                "status",
                "validating",
                "in_progress",
                &[
                    ("in_progress_at", now().to_string()),
                    ("total", requests.len().to_string()),
                    ("model", model.to_string()),
                    ("loading", "1".to_string()),
                ],
            )
            .await?;
        if r != "ok" && r != "in_progress" {
            return Ok(()); // cancelled meanwhile
        }
        let loaded: Option<usize> = self.q(cmd("HGET").arg(&bkey).arg("loaded")).await?;
        for part in requests[loaded.unwrap_or(0).min(requests.len())..].chunks(500) {
            let mut p = redis::pipe();
            p.atomic();
            let cids: Vec<&str> = part.iter().map(|r| r.1.as_str()).collect();
            p.cmd("RPUSH")
                .arg(self.k(&format!("l:{id}")))
                .arg(&cids)
                .ignore();
            for (_, cid, body) in part {
                p.cmd("HSET")
                    .arg(self.k(&format!("body:{id}")))
                    .arg(cid)
                    .arg(body)
                    .ignore();
                p.cmd("HSETNX")
                    .arg(self.k(&format!("st:{id}")))
                    .arg(cid)
                    .arg("pending")
                    .ignore();
                p.cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("b")
                    .arg(id)
                    .arg("c")
                    .arg(cid)
                    .ignore();
            }
            p.cmd("HINCRBY")
                .arg(&bkey)
                .arg("loaded")
                .arg(part.len())
                .ignore();
            self.p::<()>(&p).await?;
        }
        let mut p = redis::pipe();
        p.cmd("HDEL").arg(&bkey).arg("loading").ignore();
        p.cmd("DEL").arg(self.k(&format!("v:{id}"))).ignore();
        self.p(&p).await
    }

    async fn claim(&self, n: usize, queue: Queue<'_>) -> StoreResult<Vec<Claimed>> {
        let mut out = Vec::new();
        let mut batches = HashMap::new();
        let streams = self.queues(queue).await?;
        // Entries taken over from dead instances first.
        loop {
            if out.len() >= n {
                return Ok(out);
            }
            let next = {
                let mut adopted = Self::lock(&self.adopted);
                let at = adopted.iter().position(|(m, ..)| streams.contains(m));
                at.and_then(|i| adopted.remove(i))
            };
            let Some((model, entry, b, c)) = next else {
                break;
            };
            if let Some(x) = self.take(&model, entry, b, c, &mut batches).await? {
                out.push(x);
            }
        }
        for model in streams {
            let want = n - out.len();
            if want == 0 {
                break;
            }
            let v: RV = self
                .q(cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.me)
                    .arg("COUNT")
                    .arg(want)
                    .arg("STREAMS")
                    .arg(self.queue_key(&model))
                    .arg(">"))
                .await?;
            // [[stream, [entries…]]]
            let list = match v {
                RV::Array(streams) => streams
                    .into_iter()
                    .filter_map(|s| match s {
                        RV::Array(mut kv) if kv.len() == 2 => kv.pop(),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            for es in list {
                for (entry, b, c) in entries(&es) {
                    if let Some(x) = self.take(&model, entry, b, c, &mut batches).await? {
                        out.push(x);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn finish(
        &self,
        c: &Claimed,
        ok: bool,
        line: &Value,
        tokens: (u64, u64),
    ) -> StoreResult<()> {
        let id = &c.batch_id;
        let stream = self.queue_key(c.model.as_deref().unwrap_or("-"));
        let mut inv = self.scripts.finish.prepare_invoke();
        inv.key(self.k(&format!("st:{id}")))
            .key(self.k(&format!("res:{id}")))
            .key(self.k(&format!("b:{id}")))
            .key(self.k(&format!("at:{id}")))
            .key(&stream)
            .arg(&c.custom_id)
            .arg(if ok { "done" } else { "failed" })
            .arg(line.to_string())
            .arg(tokens.0)
            .arg(tokens.1)
            .arg(c.entry.as_deref().unwrap_or(""));
        let _: i64 = text(self.conn().await?.invoke(&inv).await)?;
        if let Some(e) = &c.entry {
            Self::lock(&self.inflight).remove(e);
        }
        Ok(())
    }

    async fn retry(&self, c: &Claimed, not_before_ms: i64, counts: bool) -> StoreResult<()> {
        let id = &c.batch_id;
        let model = c.model.as_deref().unwrap_or("-");
        let stream = self.queue_key(model);
        let mut inv = self.scripts.retry.prepare_invoke();
        inv.key(self.k(&format!("st:{id}")))
            .key(self.k(&format!("at:{id}")))
            .key(self.k("delayed"))
            .key(&stream)
            .arg(&c.custom_id)
            .arg(u8::from(counts))
            .arg(not_before_ms)
            .arg(format!("{model}\u{1f}{id}\u{1f}{}", c.custom_id))
            .arg(c.entry.as_deref().unwrap_or(""));
        let _: i64 = text(self.conn().await?.invoke(&inv).await)?;
        if let Some(e) = &c.entry {
            Self::lock(&self.inflight).remove(e);
        }
        Ok(())
    }

    async fn results(
        &self,
        consumer: Option<&str>,
        id: &str,
        after_line: i64,
        limit: usize,
    ) -> StoreResult<Option<Vec<(i64, String)>>> {
        if self.owned(consumer, id).await?.is_none() {
            return Ok(None);
        }
        // The cursor is the position in the input order; requests not ended are skipped.
        let mut out = Vec::new();
        let mut at = after_line.max(0) as isize;
        while out.len() < limit {
            let cids: Vec<String> = self
                .q(cmd("LRANGE")
                    .arg(self.k(&format!("l:{id}")))
                    .arg(at)
                    .arg(at + limit as isize - 1))
                .await?;
            if cids.is_empty() {
                break;
            }
            let res: Vec<Option<String>> = self
                .q(cmd("HMGET").arg(self.k(&format!("res:{id}"))).arg(&cids))
                .await?;
            for (i, r) in res.into_iter().enumerate() {
                if let Some(r) = r {
                    if out.len() < limit {
                        out.push((at as i64 + i as i64 + 1, r));
                    }
                }
            }
            at += cids.len() as isize;
        }
        Ok(Some(out))
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

    async fn overview(&self, limit: usize) -> StoreResult<Vec<Value>> {
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

    async fn settle(&self) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("active"))).await?;
        let mut ended = Vec::new();
        for id in ids {
            let bkey = self.k(&format!("b:{id}"));
            let h: Vec<(String, String)> = self.q(cmd("HGETALL").arg(&bkey)).await?;
            let mut h = fields(h);
            let num = |h: &HashMap<String, String>, k: &str| {
                h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0)
            };
            let status = h.get("status").cloned().unwrap_or_default();
            if status == "in_progress" && num(&h, "expires_at") <= now() {
                let r = self
                    .cas(&bkey, "status", "in_progress", "expiring", &[])
                    .await?;
                if r == "ok" {
                    h.insert("status".into(), "expiring".into());
                }
            }
            let status = h.get("status").cloned().unwrap_or_default();
            if matches!(status.as_str(), "cancelling" | "expiring") {
                self.end_pending(&id, None).await?;
                let fresh: Vec<(String, String)> = self.q(cmd("HGETALL").arg(&bkey)).await?;
                h = fields(fresh);
            }
            let status = h.get("status").cloned().unwrap_or_default();
            let loading = h.contains_key("loading");
            let all_ended = num(&h, "completed") + num(&h, "failed") >= num(&h, "total");
            let ready = match status.as_str() {
                "in_progress" | "cancelling" | "expiring" => all_ended && !loading,
                "finalizing" => true,
                _ => false,
            };
            if ready {
                self.finalize(&id, &h).await?;
                ended.push(id);
            }
        }
        Ok(ended)
    }

    async fn maintain(&self) -> StoreResult<()> {
        // Retries that are due go back on their streams.
        let due: Vec<String> = self
            .q(cmd("ZRANGEBYSCORE")
                .arg(self.k("delayed"))
                .arg("-inf")
                .arg(now_ms())
                .arg("LIMIT")
                .arg(0)
                .arg(500))
            .await?;
        for m in due {
            let mut parts = m.splitn(3, '\u{1f}');
            let (Some(model), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next()) else {
                let _: i64 = self.q(cmd("ZREM").arg(self.k("delayed")).arg(&m)).await?;
                continue;
            };
            let mut inv = self.scripts.requeue.prepare_invoke();
            inv.key(self.k("delayed"))
                .key(self.queue_key(model))
                .arg(&m)
                .arg(b)
                .arg(c);
            let _: i64 = text(self.conn().await?.invoke(&inv).await)?;
        }
        // Every lease/3: keep this instance's entries alive, adopt those of dead ones.
        let every = (self.lease / 3).max(Duration::from_millis(200));
        {
            let mut last = Self::lock(&self.last_refresh);
            if last.elapsed() < every {
                return Ok(());
            }
            *last = Instant::now();
        }
        let held: Vec<(String, String)> = Self::lock(&self.inflight)
            .iter()
            .map(|(e, s)| (e.clone(), s.clone()))
            .collect();
        let mut by_stream: HashMap<String, Vec<String>> = HashMap::new();
        for (e, s) in held {
            by_stream.entry(s).or_default().push(e);
        }
        for (stream, ids) in by_stream {
            let _: RV = self
                .q(cmd("XCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&self.me)
                    .arg(0)
                    .arg(&ids)
                    .arg("JUSTID"))
                .await?;
        }
        let models: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("queues"))).await?;
        for model in models {
            let v: RV = self
                .q(cmd("XAUTOCLAIM")
                    .arg(self.queue_key(&model))
                    .arg(GROUP)
                    .arg(&self.me)
                    .arg(self.lease.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(200))
                .await?;
            // [next cursor, [entries…], [deleted ids…]]
            if let RV::Array(parts) = v {
                if let Some(list) = parts.get(1) {
                    let taken = entries(list);
                    if !taken.is_empty() {
                        tracing::warn!(
                            model = %model,
                            requests = taken.len(),
                            "batch requests of an instance that stopped are taken over"
                        );
                    }
                    let mut adopted = Self::lock(&self.adopted);
                    for (e, b, c) in taken {
                        adopted.push_back((model.clone(), e, b, c));
                    }
                }
            }
        }
        Ok(())
    }

    async fn webhooks_due(&self) -> StoreResult<Vec<(String, String, String)>> {
        let ids: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("hooks"))).await?;
        let mut due = Vec::new();
        for id in ids {
            let bkey = self.k(&format!("b:{id}"));
            let h: Vec<(String, String)> = self.q(cmd("HGETALL").arg(&bkey)).await?;
            let h = fields(h);
            let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let (Some(url), Some(status)) = (h.get("webhook_url"), h.get("status")) else {
                let _: i64 = self.q(cmd("SREM").arg(self.k("hooks")).arg(&id)).await?;
                continue;
            };
            let notified = num("webhook_notified");
            let ended = num("completed") + num("failed");
            let Some((event, step)) =
                webhook_event(status, num("webhook_every"), notified, num("total"), ended)
            else {
                continue;
            };
            // Each event is taken by one instance.
            let taken = if event == "batch.progress" {
                let from = if notified == 0 {
                    "~,0".to_string()
                } else {
                    notified.to_string()
                };
                self.cas(&bkey, "webhook_notified", &from, &step.to_string(), &[])
                    .await?
            } else {
                let r = self.cas(&bkey, "webhook_done", "~,0", "1", &[]).await?;
                let _: i64 = self.q(cmd("SREM").arg(self.k("hooks")).arg(&id)).await?;
                r
            };
            if taken == "ok" {
                due.push((id, url.clone(), event));
            }
        }
        Ok(due)
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
