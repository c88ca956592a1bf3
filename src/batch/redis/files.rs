//! Files in Redis: metadata in a hash, content in a list of 1 MiB chunks.

use super::*;

impl RedisBatches {
    pub(super) async fn store_file(
        &self,
        consumer: Option<&str>,
        f: &FileRow,
        content: &Path,
    ) -> StoreResult<()> {
        use tokio::io::AsyncReadExt;
        let data = self.k(&format!("fd:{}", f.id));
        let mut file = tokio::fs::File::open(content)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let mut buf = Vec::with_capacity(CHUNK);
            (&mut file)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            if buf.is_empty() {
                break;
            }
            let _: () = self.q(cmd("RPUSH").arg(&data).arg(buf)).await?;
        }
        self.put_file_meta(consumer, f).await
    }

    pub(super) async fn find_file(
        &self,
        consumer: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<FileRow>> {
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

    pub(super) async fn list_files(
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

    pub(super) async fn remove_file(&self, consumer: Option<&str>, id: &str) -> StoreResult<bool> {
        if self.file(consumer, id).await?.is_none() {
            return Ok(false);
        }
        self.forget_file(id).await?;
        Ok(true)
    }

    pub(super) async fn read_chunk(&self, id: &str, index: u64) -> StoreResult<Option<Bytes>> {
        if index == 0 {
            let exists: bool = self
                .q(cmd("EXISTS").arg(self.k(&format!("f:{id}"))))
                .await?;
            if !exists {
                return Err(crate::batch::backend::StoreError::Other(format!(
                    "no file {id}"
                )));
            }
        }
        let c: Option<Vec<u8>> = self
            .q(cmd("LINDEX").arg(self.k(&format!("fd:{id}"))).arg(index))
            .await?;
        Ok(c.map(Bytes::from))
    }
}
