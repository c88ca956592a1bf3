//! OpenAI's Files and Batches API on the proxy listener, so `client.files.*` and
//! `client.batches.*` of the official SDKs work unchanged. Each consumer sees only its own
//! files and batches. Uploads are written to disk as they arrive, then handed to the store;
//! file contents and results are sent in chunks, never held whole.

use super::{respond, RequestCtx};
use crate::batch::backend::{new_id, now, Backend, FileRow, NewBatch};
use crate::errors::GatewayError;
use crate::state::GatewayState;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use pingora::proxy::Session;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    UploadFile,
    ListFiles,
    GetFile(String),
    DeleteFile(String),
    FileContent(String),
    CreateBatch,
    ListBatches,
    GetBatch(String),
    CancelBatch(String),
    /// Inline-batch extras: every result as JSONL, JSON or CSV; one request; cancelling one.
    Results(String),
    GetRequest(String, String),
    CancelRequest(String, String),
}

impl Route {
    pub fn parse(method: &http::Method, path: &str) -> Option<Route> {
        use http::Method as M;
        let p = path.trim_end_matches('/');
        let seg: Vec<&str> = p.strip_prefix("/v1/")?.split('/').collect();
        let id = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        Some(match (method, seg.as_slice()) {
            (&M::POST, ["files"]) => Route::UploadFile,
            (&M::GET, ["files"]) => Route::ListFiles,
            (&M::GET, ["files", f]) => Route::GetFile(id(f)),
            (&M::DELETE, ["files", f]) => Route::DeleteFile(id(f)),
            (&M::GET, ["files", f, "content"]) => Route::FileContent(id(f)),
            (&M::POST, ["batches"]) => Route::CreateBatch,
            (&M::GET, ["batches"]) => Route::ListBatches,
            (&M::GET, ["batches", b]) => Route::GetBatch(id(b)),
            (&M::POST, ["batches", b, "cancel"]) => Route::CancelBatch(id(b)),
            (&M::GET, ["batches", b, "results"]) => Route::Results(id(b)),
            (&M::GET, ["batches", b, "requests", c]) => Route::GetRequest(id(b), id(c)),
            (&M::POST, ["batches", b, "requests", c, "cancel"]) => {
                Route::CancelRequest(id(b), id(c))
            }
            _ => return None,
        })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Route::UploadFile
            | Route::ListFiles
            | Route::GetFile(_)
            | Route::DeleteFile(_)
            | Route::FileContent(_) => "files",
            _ => "batches",
        }
    }
}

fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(format!("batch store: {e}"))
}

fn not_found(what: &str, id: &str) -> GatewayError {
    GatewayError::NotFound(format!("No such {what} object: {id}"))
}

/// The query string's parameters.
fn query(session: &Session) -> Vec<(String, String)> {
    session
        .req_header()
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let d = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn limit(q: &[(String, String)], default: usize, max: usize) -> Result<usize, GatewayError> {
    match param(q, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                GatewayError::bad_request(format!("limit must be 1..={max}"), Some("limit"))
            }),
    }
}

/// A page of a list, with `has_more` (SDK paging depends on it).
fn page(mut data: Vec<Value>, limit: usize) -> Value {
    let has_more = data.len() > limit;
    data.truncate(limit);
    json!({"object": "list", "first_id": data.first().map(|v| v["id"].clone()),
           "last_id": data.last().map(|v| v["id"].clone()), "has_more": has_more, "data": data})
}

pub async fn serve(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: Route,
) -> Result<(), GatewayError> {
    let store = state.batch.as_deref().ok_or_else(|| {
        GatewayError::NotFound("The batch module is disabled (batch.enabled).".into())
    })?;
    let consumer = ctx.consumer.clone();
    let who = consumer.as_deref();
    let q = query(session);
    let answer = match route {
        Route::UploadFile => upload(state, store, session, who).await?,
        Route::ListFiles => {
            let n = limit(&q, 10_000, 10_000)?;
            let asc = param(&q, "order") == Some("asc");
            let rows = store
                .files(who, param(&q, "purpose"), param(&q, "after"), n + 1, asc)
                .await
                .map_err(internal)?;
            page(rows.iter().map(FileRow::object).collect(), n)
        }
        Route::GetFile(id) => store
            .file(who, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("File", &id))?
            .object(),
        Route::DeleteFile(id) => {
            if !store.delete_file(who, &id).await.map_err(internal)? {
                return Err(not_found("File", &id));
            }
            json!({"id": id, "object": "file", "deleted": true})
        }
        Route::FileContent(id) => {
            let f = store
                .file(who, &id)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found("File", &id))?;
            return send_file(session, ctx, store, &f).await;
        }
        Route::CreateBatch => {
            let max = state.runtime.load().config.server.max_body_bytes;
            let body = crate::proxy::body::read_body(session, max).await?;
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| GatewayError::bad_request("The body must be a JSON object.", None))?;
            let endpoint = v["endpoint"].as_str().ok_or_else(|| {
                GatewayError::bad_request(
                    "Missing required parameter: 'endpoint'.",
                    Some("endpoint"),
                )
            })?;
            // An inline batch brings its requests; they become its input file.
            let inline = match v["requests"].as_array() {
                Some(requests) => Some(inline_file(state, store, who, endpoint, requests).await?),
                None => None,
            };
            let input = match (&inline, v["input_file_id"].as_str()) {
                (Some(id), _) => id.as_str(),
                (None, Some(id)) => id,
                (None, None) => {
                    return Err(GatewayError::bad_request(
                        "Missing required parameter: 'input_file_id' (or 'requests').",
                        Some("input_file_id"),
                    ))
                }
            };
            let window = completion_window(&v["completion_window"], inline.is_some())?;
            if crate::batch::execute::endpoint(endpoint).is_none() {
                return Err(GatewayError::bad_request(
                    format!("Unsupported endpoint '{endpoint}': use /v1/chat/completions, /v1/completions or /v1/embeddings."),
                    Some("endpoint"),
                ));
            }
            store
                .file(who, input)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found("File", input))?;
            let webhook = match v["webhook_url"].as_str() {
                None => None,
                Some(url) => {
                    // Only public addresses (or networks the operator opened): a consumer
                    // must not make the gateway probe its own network.
                    let policy = crate::egress::EgressPolicy::new(
                        &state.runtime.load().config.batch.webhook_allow_networks,
                    );
                    let checked = match policy.parse(url) {
                        Ok(base) => policy.resolve(&base).await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    checked.map_err(|e| GatewayError::BadRequest {
                        message: e.to_string(),
                        param: Some("webhook_url"),
                        code: Some("invalid_webhook_url"),
                    })?;
                    let every = v["webhook_progress_percent"].as_u64().unwrap_or(0);
                    if every > 99 {
                        return Err(GatewayError::bad_request(
                            "webhook_progress_percent must be 1..=99 (or 0 for none).",
                            Some("webhook_progress_percent"),
                        ));
                    }
                    Some((url, every as u32))
                }
            };
            let id = new_id("batch_");
            store
                .add_batch(&NewBatch {
                    id: &id,
                    consumer: who,
                    endpoint,
                    input_file_id: input,
                    metadata: &v["metadata"],
                    webhook,
                    window,
                })
                .await
                .map_err(internal)?;
            store
                .batch(who, &id)
                .await
                .map_err(internal)?
                .unwrap_or(Value::Null)
        }
        Route::ListBatches => {
            let n = limit(&q, 20, 100)?;
            let rows = store
                .batches(who, param(&q, "after"), n + 1)
                .await
                .map_err(internal)?;
            page(rows, n)
        }
        Route::GetBatch(id) => store
            .batch(who, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("Batch", &id))?,
        Route::CancelBatch(id) => {
            match store.cancel(who, &id).await.map_err(internal)? {
                Ok(()) => {}
                Err(s) if s.is_empty() => return Err(not_found("Batch", &id)),
                Err(s) => {
                    return Err(GatewayError::bad_request(
                        format!("Cannot cancel a batch with status '{s}'."),
                        None,
                    ))
                }
            }
            store
                .batch(who, &id)
                .await
                .map_err(internal)?
                .unwrap_or(Value::Null)
        }
        Route::Results(id) => {
            let format = param(&q, "format").unwrap_or("jsonl").to_string();
            if !matches!(format.as_str(), "jsonl" | "json" | "csv") {
                return Err(GatewayError::bad_request(
                    "format must be jsonl, json or csv.",
                    Some("format"),
                ));
            }
            store
                .results(who, &id, 0, 1)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found("Batch", &id))?;
            return send_results(store, session, ctx, who, &id, &format).await;
        }
        Route::GetRequest(id, cid) => store
            .request(who, &id, &cid)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("Batch request", &cid))?,
        Route::CancelRequest(id, cid) => {
            match store
                .cancel_request(who, &id, &cid)
                .await
                .map_err(internal)?
            {
                None => return Err(not_found("Batch", &id)),
                Some(false) => {
                    return Err(GatewayError::bad_request(
                        "Only a request that has not started can be cancelled.",
                        None,
                    ))
                }
                Some(true) => {}
            }
            store
                .request(who, &id, &cid)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found("Batch request", &cid))?
        }
    };
    respond::json(session, ctx, &answer).await;
    Ok(())
}

/// Write an inline batch's requests as its input file; returns the file id.
async fn inline_file(
    state: &GatewayState,
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
    tokio::fs::write(&path, content).await.map_err(internal)?;
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
fn space(state: &GatewayState) -> (u64, i64) {
    let rt = state.runtime.load();
    let b = &rt.config.batch;
    (b.consumer_quota_bytes, b.retention.as_secs() as i64)
}

/// The answer to an upload past the consumer's storage quota (OpenAI's storage limit).
fn storage_full(quota: u64) -> GatewayError {
    GatewayError::bad_request(
        format!("You have exceeded your file storage quota. Each consumer is limited to {quota} bytes of files. Please delete old files or attempt with a smaller file size."),
        None,
    )
}

/// One CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A result line as a CSV row: custom_id, status, content, tokens, error.
fn csv_row(line: &Value) -> String {
    let resp = &line["response"];
    let body = &resp["body"];
    let status = resp["status_code"]
        .as_u64()
        .map(|s| s.to_string())
        .or_else(|| line["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    let choice = &body["choices"][0];
    let content = choice["message"]["content"]
        .as_str()
        .or(choice["text"].as_str())
        .map(str::to_string)
        .or_else(|| {
            let e = body["data"][0]["embedding"].as_array()?;
            Some(format!("[{} floats]", e.len()))
        })
        .unwrap_or_default();
    let tokens = |k: &str| {
        body["usage"][k]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_default()
    };
    let error = body["error"]["message"]
        .as_str()
        .or(line["error"]["message"].as_str())
        .unwrap_or("");
    [
        csv_field(line["custom_id"].as_str().unwrap_or("")),
        csv_field(&status),
        csv_field(&content),
        tokens("prompt_tokens"),
        tokens("completion_tokens"),
        tokens("total_tokens"),
        csv_field(error),
    ]
    .join(",")
}

/// Send every result of a batch, page by page from the store (never all in memory).
async fn send_results(
    store: &dyn Backend,
    session: &mut Session,
    ctx: &mut RequestCtx,
    who: Option<&str>,
    id: &str,
    format: &str,
) -> Result<(), GatewayError> {
    let content_type = match format {
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        _ => "application/jsonl",
    };
    let h = respond::header(200, content_type, ctx);
    ctx.status = 200;
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_err()
    {
        ctx.status = 499;
        return Ok(());
    }
    let mut chunk = String::new();
    match format {
        "csv" => chunk.push_str(
            "custom_id,status,content,prompt_tokens,completion_tokens,total_tokens,error\n",
        ),
        "json" => chunk.push_str("{\"object\":\"list\",\"data\":["),
        _ => {}
    }
    let (mut after, mut first) = (0, true);
    loop {
        let page = store
            .results(who, id, after, 1000)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        for (line, text) in &page {
            after = *line;
            match format {
                "csv" => {
                    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                    chunk.push_str(&csv_row(&v));
                    chunk.push('\n');
                }
                "json" => {
                    if !first {
                        chunk.push(',');
                    }
                    chunk.push_str(text);
                }
                _ => {
                    chunk.push_str(text);
                    chunk.push('\n');
                }
            }
            first = false;
        }
        let last = page.len() < 1000;
        if last && format == "json" {
            chunk.push_str("]}");
        }
        let bytes = Bytes::from(std::mem::take(&mut chunk));
        if !bytes.is_empty()
            && session
                .write_response_body(Some(bytes), false)
                .await
                .is_err()
        {
            ctx.status = 499;
            return Ok(());
        }
        if last {
            break;
        }
    }
    let _ = session.write_response_body(None, true).await;
    Ok(())
}

/// `POST /v1/files`: a multipart upload written to disk as it arrives.
async fn upload(
    state: &GatewayState,
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
                let mut out = tokio::fs::File::create(&path).await.map_err(internal)?;
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
struct Scratch(std::path::PathBuf);

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
async fn send_file(
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
    while let Some(chunk) = store.file_chunk(&f.id, index).await.map_err(internal)? {
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

/// A batch's completion window: `24h` (OpenAI's only value); inline batches, an extension,
/// may also give a shorter one (`"90s"`, `"30m"`, …) and default to `24h`.
fn completion_window(v: &Value, inline: bool) -> Result<(String, i64), GatewayError> {
    let bad = |m: &str| Err(GatewayError::bad_request(m, Some("completion_window")));
    match (v.as_str(), inline) {
        (Some("24h"), _) => Ok(("24h".into(), 86_400)),
        (None, true) if v.is_null() => Ok(("24h".into(), 86_400)),
        (Some(w), true) => match humantime::parse_duration(w) {
            Ok(d) if d.as_secs() >= 1 && d.as_secs() <= 86_400 => {
                Ok((w.into(), d.as_secs() as i64))
            }
            _ => bad("completion_window must be a duration from 1s to 24h (e.g. '30m')."),
        },
        _ => bad("completion_window must be '24h'."),
    }
}
