//! A batch's life in Redis: creation, validation and loading, listing and results,
//! ending (expiry, cancel, completion) with its output files, and webhook events.

use super::*;

impl RedisBatches {
    /// End the pending requests of a batch with `code` error lines.
    pub(super) async fn end_pending(&self, id: &str, only: Option<&str>) -> StoreResult<u64> {
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

    /// Write and finalize a batch whose requests have all ended (one instance at a time).
    pub(super) async fn finalize(
        &self,
        id: &str,
        h: &HashMap<String, String>,
        lifetime: i64,
    ) -> StoreResult<()> {
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
        // The status now, not the caller's snapshot: another instance may have finished
        // the batch since (and released this lock); finalizing it again would rewrite its
        // output while clients read it.
        let status: Option<String> = self.q(cmd("HGET").arg(&bkey).arg("status")).await?;
        let status = status.unwrap_or_default();
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
            let row = FileRow::batch_output(fid.clone(), id, name, bytes, lifetime);
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
        p.cmd("ZADD")
            .arg(self.k("ended"))
            .arg(now())
            .arg(id)
            .ignore();
        p.cmd("DEL").arg(&lock).ignore();
        self.p(&p).await
    }

    pub(super) async fn create_batch(&self, b: &NewBatch<'_>) -> StoreResult<()> {
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

    pub(super) async fn list_batches(
        &self,
        consumer: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Batch>> {
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

    pub(super) async fn take_validations(&self) -> StoreResult<Vec<(String, String, String)>> {
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

    /// Start a batch whose requests were added ([`Self::add_requests`]): one work-queue
    /// entry per request, in input order, resumable after a crash (`loaded`).
    pub(super) async fn load_batch(
        &self,
        id: &str,
        model: Option<&str>,
        total: u64,
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
        // Running before the entries arrive, so no entry finds its batch not started;
        // `loading` marks a load a crash may interrupt (resumed from `loaded`).
        let r = self
            .cas(
                &bkey,
                "status",
                "validating",
                "in_progress",
                &[
                    ("in_progress_at", now().to_string()),
                    ("total", total.to_string()),
                    ("model", model.to_string()),
                    ("loading", "1".to_string()),
                ],
            )
            .await?;
        if r != "ok" && r != "in_progress" {
            return Ok(()); // cancelled meanwhile
        }
        let mut loaded: usize = self
            .q::<Option<usize>>(cmd("HGET").arg(&bkey).arg("loaded"))
            .await?
            .unwrap_or(0);
        loop {
            let cids: Vec<String> = self
                .q(cmd("LRANGE")
                    .arg(self.k(&format!("l:{id}")))
                    .arg(loaded)
                    .arg(loaded + 499))
                .await?;
            if cids.is_empty() {
                break;
            }
            let mut p = redis::pipe();
            p.atomic();
            for cid in &cids {
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
                .arg(cids.len())
                .ignore();
            self.p::<()>(&p).await?;
            loaded += cids.len();
        }
        let mut p = redis::pipe();
        p.cmd("HDEL").arg(&bkey).arg("loading").ignore();
        p.cmd("DEL").arg(self.k(&format!("v:{id}"))).ignore();
        self.p(&p).await
    }

    pub(super) async fn result_page(
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

    pub(super) async fn settle_batches(&self, lifetime: i64) -> StoreResult<Vec<String>> {
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
                self.finalize(&id, &h, lifetime).await?;
                ended.push(id);
            }
        }
        Ok(ended)
    }

    pub(super) async fn take_webhooks(&self) -> StoreResult<Vec<(String, String, String)>> {
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
}
