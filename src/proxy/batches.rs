//! OpenAI's Files and Batches API on the proxy listener, so `client.files.*` and
//! `client.batches.*` of the official SDKs work unchanged. Each consumer sees only its own
//! files and batches. Uploads are written to disk as they arrive, then handed to the store;
//! file contents and results are sent in chunks, never held whole.

use super::{respond, RequestCtx};
use crate::batch::backend::{new_id, now, Backend, Batch, Cancel, FileRow, NewBatch};
use crate::errors::GatewayError;
use crate::state::AppState;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use pingora::proxy::Session;
use serde_json::{json, Value};
mod files;
mod results;
use files::{inline_file, send_file, upload};
use results::send_results;

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

    /// The route's path template (`http.route` in traces).
    pub fn template(&self) -> &'static str {
        match self {
            Route::UploadFile | Route::ListFiles => "/v1/files",
            Route::GetFile(_) | Route::DeleteFile(_) => "/v1/files/{file_id}",
            Route::FileContent(_) => "/v1/files/{file_id}/content",
            Route::CreateBatch | Route::ListBatches => "/v1/batches",
            Route::GetBatch(_) => "/v1/batches/{batch_id}",
            Route::CancelBatch(_) => "/v1/batches/{batch_id}/cancel",
            Route::Results(_) => "/v1/batches/{batch_id}/results",
            Route::GetRequest(..) => "/v1/batches/{batch_id}/requests/{custom_id}",
            Route::CancelRequest(..) => "/v1/batches/{batch_id}/requests/{custom_id}/cancel",
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
pub(super) fn query(session: &Session) -> Vec<(String, String)> {
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

pub(super) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub(super) fn limit(
    q: &[(String, String)],
    default: usize,
    max: usize,
) -> Result<usize, GatewayError> {
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
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: Route,
) -> Result<(), GatewayError> {
    let store = state.batch.as_deref().ok_or_else(|| {
        GatewayError::NotFound("The batch module is disabled (batch.enabled).".into())
    })?;
    if matches!(route, Route::UploadFile | Route::CreateBatch) {
        store.ready().await.map_err(internal)?; // a store made on first use is made now
    }
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
                    format!("Unsupported endpoint '{endpoint}': use /v1/chat/completions, /v1/completions, /v1/embeddings or /v1/responses."),
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
            crate::batch::dispatch::wake();
            store
                .batch(who, &id)
                .await
                .map_err(internal)?
                .map_or(Value::Null, |b| b.object())
        }
        Route::ListBatches => {
            let n = limit(&q, 20, 100)?;
            let rows = store
                .batches(who, param(&q, "after"), n + 1)
                .await
                .map_err(internal)?;
            page(rows.iter().map(Batch::object).collect(), n)
        }
        Route::GetBatch(id) => store
            .batch(who, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("Batch", &id))?
            .object(),
        Route::CancelBatch(id) => {
            match store.cancel(who, &id).await.map_err(internal)? {
                Cancel::Requested => {}
                Cancel::NotFound => return Err(not_found("Batch", &id)),
                Cancel::Refused(s) => {
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
                .map_or(Value::Null, |b| b.object())
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
