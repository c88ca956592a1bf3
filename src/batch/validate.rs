//! Validating a batch's input file, line by line, as OpenAI does (line-numbered errors,
//! up to 100), with memory bounded by the longest line allowed, not by the file:
//!
//! - the file is read in [`super::backend::CHUNK`]s; a line longer than `server.max_body_bytes` is not
//!   kept (its bytes are skipped up to its end) and fails with `line_too_large`;
//! - valid requests go to the store as they are found, in groups of [`GROUP`], as
//!   references to their place in the input file (the file is not copied); duplicate
//!   custom_ids are found by the store;
//! - a batch with any problem is failed and the requests already added are dropped.

use super::backend::{Backend, LineRef, NewRequest, StoreResult};
use super::execute;
use serde_json::{json, Value};

/// Requests added to the store at a time.
const GROUP: usize = 500;
/// Problems reported at most (OpenAI stops there too).
const MAX_PROBLEMS: usize = 100;

/// A validation problem of one input line.
fn problem(code: &str, message: &str, line: Option<u64>) -> Value {
    json!({"code": code, "message": message, "param": null, "line": line})
}

/// One line of the input file.
enum Line {
    Text(String),
    NotUtf8,
    /// Longer than the limit: its bytes were skipped.
    TooLarge,
}

/// The lines of a stored file with their place in it, read chunk by chunk.
struct Lines<'s> {
    store: &'s dyn Backend,
    id: &'s str,
    next_chunk: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    offset: u64,
    done: bool,
    max_line: usize,
    /// Skipping the rest of a line that is too long.
    skipping: bool,
}

impl Lines<'_> {
    /// The next line and where it lies (`None` at the end of the file).
    async fn next(&mut self) -> StoreResult<Option<(Line, LineRef)>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scanned..]) {
                let end = scanned + i;
                let at = LineRef {
                    start: self.offset,
                    len: end as u64,
                };
                let line = if std::mem::take(&mut self.skipping) || end > self.max_line {
                    Line::TooLarge
                } else {
                    utf8(&self.buf[..end])
                };
                self.buf.drain(..=end);
                self.offset += end as u64 + 1;
                return Ok(Some((line, at)));
            }
            scanned = self.buf.len();
            if self.buf.len() > self.max_line {
                // Too long: keep nothing of it, only count its bytes.
                self.skipping = true;
                self.offset += self.buf.len() as u64;
                self.buf.clear();
                scanned = 0;
            }
            if self.done {
                if self.buf.is_empty() && !self.skipping {
                    return Ok(None);
                }
                let at = LineRef {
                    start: self.offset,
                    len: self.buf.len() as u64,
                };
                let line = if std::mem::take(&mut self.skipping) || self.buf.len() > self.max_line {
                    Line::TooLarge
                } else {
                    utf8(&self.buf)
                };
                self.offset += self.buf.len() as u64;
                self.buf.clear();
                return Ok(Some((line, at)));
            }
            match self.store.file_chunk(self.id, self.next_chunk).await? {
                Some(c) => {
                    self.next_chunk += 1;
                    self.buf.extend_from_slice(&c);
                }
                None => self.done = true,
            }
        }
    }
}

fn utf8(b: &[u8]) -> Line {
    let b = b.strip_suffix(b"\r").unwrap_or(b);
    match std::str::from_utf8(b) {
        Ok(s) => Line::Text(s.to_string()),
        Err(_) => Line::NotUtf8,
    }
}

/// The problems of one parsed line, and its custom_id and model when it has a custom_id
/// (a line with other problems is still checked for a duplicate custom_id).
fn check_line(
    text: &str,
    n: u64,
    endpoint: &str,
    errors: &mut Vec<Value>,
) -> Option<(String, Option<String>)> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            errors.push(problem(
                "invalid_json_line",
                "This line is not parseable as valid JSON.",
                Some(n),
            ));
            return None;
        }
    };
    let Some(cid) = v["custom_id"].as_str().filter(|c| !c.is_empty()) else {
        errors.push(problem(
            "missing_required_parameter",
            "custom_id is required.",
            Some(n),
        ));
        return None;
    };
    if v["method"] != "POST" {
        errors.push(problem(
            "invalid_method",
            "Only POST is supported.",
            Some(n),
        ));
    }
    if v["url"] != endpoint {
        errors.push(problem(
            "invalid_url",
            "The url provided for this request does not match the batch endpoint.",
            Some(n),
        ));
    }
    if !v["body"].is_object() {
        errors.push(problem(
            "missing_required_parameter",
            "body must be an object.",
            Some(n),
        ));
    } else if v["body"]["stream"] == true {
        errors.push(problem(
            "invalid_request",
            "Streaming is not supported in batches.",
            Some(n),
        ));
    }
    Some((
        cid.to_string(),
        v["body"]["model"].as_str().map(str::to_string),
    ))
}

/// Check a batch's input file line by line; start it, or fail it with line-numbered
/// errors. `max_line`: the largest line (`server.max_body_bytes`).
pub async fn validate(
    store: &dyn Backend,
    id: &str,
    endpoint: &str,
    file_id: &str,
    max_line: usize,
) -> StoreResult<()> {
    let mut errors = Vec::new();
    let mut model: Option<String> = None;
    let mut total = 0u64;
    if execute::endpoint(endpoint).is_none() {
        errors.push(problem(
            "invalid_endpoint",
            "This endpoint is not supported for batches.",
            None,
        ));
    }
    if store.file_chunk(file_id, 0).await.is_err() {
        errors.push(problem(
            "file_not_found",
            "The input file does not exist.",
            None,
        ));
    } else {
        let mut lines = Lines {
            store,
            id: file_id,
            next_chunk: 0,
            buf: Vec::new(),
            offset: 0,
            done: false,
            max_line,
            skipping: false,
        };
        let mut group: Vec<NewRequest> = Vec::with_capacity(GROUP);
        let mut n = 0u64;
        while let Some((line, at)) = lines.next().await? {
            n += 1;
            match line {
                Line::TooLarge => errors.push(problem(
                    "line_too_large",
                    &format!("This line is larger than the {max_line} bytes a request may have (server.max_body_bytes)."),
                    Some(n),
                )),
                Line::NotUtf8 => errors.push(problem(
                    "invalid_json_line",
                    "This line is not valid UTF-8.",
                    Some(n),
                )),
                Line::Text(t) if t.trim().is_empty() => {}
                Line::Text(t) => {
                    if let Some((custom_id, m)) = check_line(&t, n, endpoint, &mut errors) {
                        if model.is_none() {
                            model = m;
                        }
                        total += 1;
                        group.push(NewRequest {
                            line: n,
                            custom_id,
                            at,
                        });
                    }
                }
            }
            if group.len() >= GROUP {
                add(store, id, &mut group, &mut errors).await?;
            }
            if errors.len() >= MAX_PROBLEMS {
                break;
            }
        }
        add(store, id, &mut group, &mut errors).await?;
    }
    if errors.is_empty() && total == 0 {
        errors.push(problem("empty_file", "The input file is empty.", None));
    }
    if !errors.is_empty() {
        errors.truncate(MAX_PROBLEMS);
        return store
            .fail_batch(id, &json!({"object": "list", "data": errors}))
            .await;
    }
    store.start_batch(id, model.as_deref(), total).await
}

/// Add a group of requests; their duplicate custom_ids become problems.
async fn add(
    store: &dyn Backend,
    id: &str,
    group: &mut Vec<NewRequest>,
    errors: &mut Vec<Value>,
) -> StoreResult<()> {
    if group.is_empty() {
        return Ok(());
    }
    for line in store.add_requests(id, group).await? {
        errors.push(problem("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.", Some(line)));
    }
    group.clear();
    Ok(())
}
