//! Space in the Redis store: requests refer to their input file (`@start:len`) instead
//! of copying it, consumers' files are counted for the quota (`usage:{owner}`), and the
//! retention sweep deletes expired files (kept while a running batch reads them) and the
//! per-request hashes of batches ended long enough ago.

use super::*;
use crate::batch::backend::{body_of_line, LineRef};

impl RedisBatches {
    /// Bytes of a consumer's files.
    pub(super) async fn used(&self, consumer: Option<&str>) -> StoreResult<u64> {
        let n: Option<i64> = self
            .q(cmd("GET").arg(self.k(&format!("usage:{}", owner(consumer)))))
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Add requests of a batch in validation; returns the duplicate lines.
    pub(super) async fn add_rows(&self, id: &str, rows: &[NewRequest]) -> StoreResult<Vec<u64>> {
        let mut dups = Vec::new();
        for part in rows.chunks(500) {
            let mut inv = self.scripts.add_requests.prepare_invoke();
            inv.key(self.k(&format!("ln:{id}")))
                .key(self.k(&format!("body:{id}")))
                .key(self.k(&format!("st:{id}")))
                .key(self.k(&format!("l:{id}")));
            for r in part {
                inv.arg(&r.custom_id).arg(r.line).arg(r.at.encode());
            }
            let d: Vec<u64> = text(self.conn().await?.invoke(&inv).await)?;
            dups.extend(d);
        }
        Ok(dups)
    }

    /// Drop the per-request state of a batch (failed validation, or past retention).
    pub(super) async fn drop_requests(&self, id: &str) -> StoreResult<()> {
        let mut p = redis::pipe();
        for k in ["body", "ln", "st", "at", "res", "l"] {
            p.cmd("DEL").arg(self.k(&format!("{k}:{id}"))).ignore();
        }
        self.p(&p).await
    }

    /// Whether a batch that has not ended reads this file.
    pub(super) async fn input_in_use(&self, file: &str) -> StoreResult<bool> {
        let ids: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("active"))).await?;
        for id in ids {
            let input: Option<String> = self
                .q(cmd("HGET")
                    .arg(self.k(&format!("b:{id}")))
                    .arg("input_file_id"))
                .await?;
            if input.as_deref() == Some(file) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Forget a file: its metadata at once, its content unless a running batch reads it
    /// (then at a later sweep); its bytes leave the owner's usage.
    pub(super) async fn forget_file(&self, id: &str) -> StoreResult<()> {
        let (consumer, bytes): (Option<String>, Option<i64>) = self
            .q(cmd("HMGET")
                .arg(self.k(&format!("f:{id}")))
                .arg("consumer")
                .arg("bytes"))
            .await?;
        let keep_content = self.input_in_use(id).await?;
        let mut p = redis::pipe();
        p.cmd("DEL").arg(self.k(&format!("f:{id}"))).ignore();
        if keep_content {
            p.cmd("SADD").arg(self.k("orphans")).arg(id).ignore();
        } else {
            p.cmd("DEL").arg(self.k(&format!("fd:{id}"))).ignore();
        }
        let owner = owner(consumer.as_deref());
        p.cmd("ZREM")
            .arg(self.k(&format!("files:{owner}")))
            .arg(id)
            .ignore();
        p.cmd("ZREM").arg(self.k("fexp")).arg(id).ignore();
        p.cmd("DECRBY")
            .arg(self.k(&format!("usage:{owner}")))
            .arg(bytes.unwrap_or(0).max(0))
            .ignore();
        self.p(&p).await
    }

    /// The `body` of a request line, read from the input file's chunks.
    pub(super) async fn line_body(&self, file: &str, at: LineRef) -> StoreResult<Option<String>> {
        if at.len == 0 {
            return Ok(None);
        }
        let chunk = CHUNK as u64;
        let (first, last) = (at.start / chunk, (at.start + at.len - 1) / chunk);
        let parts: Vec<Vec<u8>> = self
            .q(cmd("LRANGE")
                .arg(self.k(&format!("fd:{file}")))
                .arg(first)
                .arg(last))
            .await?;
        let joined = parts.concat();
        let from = (at.start - first * chunk) as usize;
        let to = from + at.len as usize;
        Ok(joined.get(from..to).and_then(body_of_line))
    }

    /// The retention sweep (a bounded amount of work per call).
    pub(super) async fn sweep_space(&self, retention: i64) -> StoreResult<Swept> {
        let t = now();
        let mut swept = Swept::default();
        let expired: Vec<String> = self
            .q(cmd("ZRANGEBYSCORE")
                .arg(self.k("fexp"))
                .arg("-inf")
                .arg(t)
                .arg("LIMIT")
                .arg(0)
                .arg(200))
            .await?;
        for id in expired {
            if self.input_in_use(&id).await? {
                continue; // a running batch reads it: at a later sweep
            }
            let bytes: Option<u64> = self
                .q(cmd("HGET").arg(self.k(&format!("f:{id}"))).arg("bytes"))
                .await?;
            self.forget_file(&id).await?;
            swept.files += 1;
            swept.bytes += bytes.unwrap_or(0);
        }
        let orphans: Vec<String> = self.q(cmd("SMEMBERS").arg(self.k("orphans"))).await?;
        for id in orphans {
            if !self.input_in_use(&id).await? {
                let mut p = redis::pipe();
                p.cmd("DEL").arg(self.k(&format!("fd:{id}"))).ignore();
                p.cmd("SREM").arg(self.k("orphans")).arg(&id).ignore();
                self.p::<()>(&p).await?;
            }
        }
        let ended: Vec<String> = self
            .q(cmd("ZRANGEBYSCORE")
                .arg(self.k("ended"))
                .arg("-inf")
                .arg(t - retention)
                .arg("LIMIT")
                .arg(0)
                .arg(200))
            .await?;
        for id in ended {
            self.drop_requests(&id).await?;
            let _: () = self.q(cmd("ZREM").arg(self.k("ended")).arg(&id)).await?;
            swept.batches += 1;
        }
        Ok(swept)
    }
}
