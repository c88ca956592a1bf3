//! The work queue: claiming stream entries, writing results once, retries, and keeping
//! claims alive or taking over those of instances that died.

use super::*;

impl RedisBatches {
    /// Turn a stream entry into a claimed request (or acknowledge it when its request has
    /// ended).
    pub(super) async fn take(
        &self,
        model: &str,
        entry: String,
        batch: String,
        cid: String,
        batches: &mut HashMap<String, (Option<String>, String, String)>,
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
            // Its request has ended: the entry is done with (and deleted, so the stream
            // does not grow with every request run).
            let mut p = redis::pipe();
            p.cmd("XACK").arg(&stream).arg(GROUP).arg(&entry).ignore();
            p.cmd("XDEL").arg(&stream).arg(&entry).ignore();
            self.p::<()>(&p).await?;
            return Ok(None);
        };
        if !batches.contains_key(&batch) {
            let (consumer, endpoint, input): (Option<String>, Option<String>, Option<String>) =
                self.q(cmd("HMGET")
                    .arg(self.k(&format!("b:{batch}")))
                    .arg("consumer")
                    .arg("endpoint")
                    .arg("input_file_id"))
                    .await?;
            batches.insert(
                batch.clone(),
                (
                    consumer,
                    endpoint.unwrap_or_default(),
                    input.unwrap_or_default(),
                ),
            );
        }
        let (consumer, endpoint, input) = batches.get(&batch).cloned().unwrap_or_default();
        // Requests refer to their line in the input file; an unreadable one runs as an
        // empty body (an error line, not a stall).
        let body = match crate::batch::backend::LineRef::decode(&body) {
            Some(at) => self.line_body(&input, at).await?.unwrap_or_default(),
            None => body,
        };
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

    /// Streams to read for `queue`.
    pub(super) async fn queues(&self, queue: Queue<'_>) -> StoreResult<Vec<String>> {
        Ok(match queue {
            Queue::Model(m) => vec![m.to_string()],
            Queue::AllBut(but) => {
                let all: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("queues"))).await?;
                all.into_iter().filter(|m| !but.contains(m)).collect()
            }
        })
    }

    pub(super) async fn claim_entries(
        &self,
        n: usize,
        queue: Queue<'_>,
    ) -> StoreResult<Vec<Claimed>> {
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

    pub(super) async fn write_result(
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

    pub(super) async fn requeue_later(
        &self,
        c: &Claimed,
        not_before_ms: i64,
        counts: bool,
    ) -> StoreResult<()> {
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

    pub(super) async fn keep_queues(&self) -> StoreResult<()> {
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
