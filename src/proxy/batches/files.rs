//! Files of the batch API: multipart uploads written to disk as they arrive (bounded by
//! `batch.max_file_bytes` and the consumer's quota), inline batches' input files, and file
//! contents sent in chunks.

use super::*;
use tokio::io::AsyncWriteExt;

/// Write an inline batch's requests as its input file; returns the file id.
pub(super) async fn inline_file(
    state: &AppState,
    store: &dyn Backend,
    who: Option<&str>,
    endpoint: &str,
    requests: &[Value],
) -> Result<String, GatewayError> {
    let (quota, lifetime) = space(state);
    let id = new_id("file-");
    let path = store.scratch_dir().join(&id);
    let _scratch = Scratch(path.clone());
    // The requests are in memory already (a request body, bounded): one async write.
    let mut content = Vec::new();
    for r in requests {
        let line = json!({"custom_id": r["custom_id"], "method": "POST", "url": endpoint,
                          "body": r["body"]});
        serde_json::to_writer(&mut content, &line).map_err(internal)?;
        content.push(b'\n');
    }
    let bytes = content.len() as u64;
    let mut out = tokio::fs::OpenOptions::from(crate::owner_only::file_options())
        .open(&path)
        .await
        .map_err(internal)?;
    out.write_all(&content).await.map_err(internal)?;
    out.flush().await.map_err(internal)?;
    let row = FileRow {
        id: id.clone(),
        purpose: "batch".into(),
        filename: "inline.jsonl".into(),
        bytes,
        created_at: now(),
        expires_at: Some(now() + lifetime),
    };
    let added = store
        .add_file(who, &row, &path, quota)
        .await
        .map_err(internal);
    if !added? {
        return Err(storage_full(quota));
    }
    Ok(id)
}

/// `batch.consumer_quota_bytes` and `batch.retention` (seconds) of the current config.
pub(super) fn space(state: &AppState) -> (u64, i64) {
    let rt = state.runtime.load();
    let b = &rt.config.batch;
    (b.consumer_quota_bytes, b.retention.as_secs() as i64)
}

/// The answer to an upload past the consumer's storage quota (OpenAI's storage limit).
pub(super) fn storage_full(quota: u64) -> GatewayError {
    GatewayError::bad_request(
        format!("You have exceeded your file storage quota. Each consumer is limited to {quota} bytes of files. Please delete old files or attempt with a smaller file size."),
        None,
    )
}

/// `POST /v1/files`: a multipart upload written to disk as it arrives.
pub(super) async fn upload(
    state: &AppState,
    store: &dyn Backend,
    session: &mut Session,
    who: Option<&str>,
) -> Result<Value, GatewayError> {
    let max = state.runtime.load().config.batch.max_file_bytes;
    let (quota, lifetime) = space(state);
    // Refused as soon as the upload cannot fit (checked again, atomically, when stored).
    let room = quota.saturating_sub(store.usage(who).await.map_err(internal)?);
    let ct = session
        .req_header()
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let boundary = multer::parse_boundary(&ct)
        .map_err(|_| GatewayError::bad_request("Expected a multipart/form-data body.", None))?;
    let body = futures_util::stream::unfold(&mut *session, |s| async move {
        match s.read_request_body().await {
            Ok(Some(b)) => Some((Ok::<Bytes, std::io::Error>(b), s)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), s)),
        }
    });
    let mut form = multer::Multipart::new(body, boundary);
    let bad = |m: &str| GatewayError::bad_request(m.to_string(), None);
    let mut purpose = None;
    let mut file: Option<FileRow> = None;
    let mut scratch: Option<Scratch> = None;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| bad(&format!("malformed multipart body: {e}")))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(field.text().await.map_err(|e| bad(&e.to_string()))?);
            }
            Some("file") => {
                let id = new_id("file-");
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                let path = store.scratch_dir().join(&id);
                scratch = Some(Scratch(path.clone()));
                let mut out = tokio::fs::OpenOptions::from(crate::owner_only::file_options())
                    .open(&path)
                    .await
                    .map_err(internal)?;
                let mut bytes = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(|e| bad(&e.to_string()))? {
                    bytes += chunk.len() as u64;
                    // (The scratch file goes when `scratch` is dropped.)
                    if bytes > room {
                        return Err(storage_full(quota));
                    }
                    if bytes > max {
                        return Err(GatewayError::PayloadTooLarge {
                            limit: max as usize,
                        });
                    }
                    out.write_all(&chunk).await.map_err(internal)?;
                }
                out.flush().await.map_err(internal)?;
                file = Some(FileRow {
                    id,
                    purpose: String::new(),
                    filename,
                    bytes,
                    created_at: now(),
                    expires_at: None,
                });
            }
            _ => {} // expires_after[...] and anything else
        }
    }
    let purpose = purpose.ok_or_else(|| {
        GatewayError::bad_request("Missing required parameter: 'purpose'.", Some("purpose"))
    })?;
    let mut file = file.ok_or_else(|| {
        GatewayError::bad_request("Missing required parameter: 'file'.", Some("file"))
    })?;
    if purpose == "batch" {
        file.expires_at = Some(file.created_at + lifetime);
    }
    file.purpose = purpose;
    if let Some(tmp) = &scratch {
        if !store
            .add_file(who, &file, &tmp.0, quota)
            .await
            .map_err(internal)?
        {
            return Err(storage_full(quota));
        }
    }
    Ok(file.object())
}

/// An upload's scratch file, removed however the upload ends (off the async threads;
/// after a successful upload the store has moved it and there is nothing to remove).
pub(super) struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.0);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || std::fs::remove_file(path))),
            Err(_) => drop(std::fs::remove_file(path)),
        }
    }
}

/// Send a stored file's bytes, chunk by chunk from the store.
/// One chunk of a file, read again (up to three times, 100 and then 200 ms apart) when
/// the store fails: once the head is sent, a failed read can only cut the body short,
/// and a store that hiccups under load (a Redis call past its timeout) usually answers
/// the next read.
async fn file_chunk(
    store: &dyn Backend,
    id: &str,
    index: u64,
) -> Result<Option<Bytes>, GatewayError> {
    let mut wait = std::time::Duration::from_millis(100);
    for _ in 0..2 {
        match store.file_chunk(id, index).await {
            Ok(chunk) => return Ok(chunk),
            Err(e) => {
                tracing::warn!(error = %e, file = id, index, "reading a file chunk failed, trying again")
            }
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    store.file_chunk(id, index).await.map_err(internal)
}

pub(super) async fn send_file(
    session: &mut Session,
    ctx: &mut RequestCtx,
    store: &dyn Backend,
    f: &FileRow,
) -> Result<(), GatewayError> {
    let mut h = respond::header(200, "application/octet-stream", ctx);
    let _ = h.insert_header("content-length", f.bytes.to_string());
    ctx.status = 200;
    if session
        .write_response_header(Box::new(h), f.bytes == 0)
        .await
        .is_err()
    {
        ctx.status = 499;
        return Ok(());
    }
    let mut index = 0;
    while let Some(chunk) = file_chunk(store, &f.id, index).await? {
        index += 1;
        if session
            .write_response_body(Some(chunk), false)
            .await
            .is_err()
        {
            ctx.status = 499;
            return Ok(());
        }
    }
    let _ = session.write_response_body(None, true).await;
    Ok(())
}
