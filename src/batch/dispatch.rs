//! The dispatcher: a background service that validates new batches, runs their requests
//! through [`super::execute`] (at most `batch.concurrency` at a time, and per model at
//! most its `batch.model_concurrency`; both read every round, so a reload changes them),
//! retried with backoff honouring `retry-after`, and ends batches (completed, cancelled, expired) with their
//! output and error files.

use super::backend::{now_ms, Backend, Claimed, Queue};
use super::execute::{self, Outcome};
use crate::state::GatewayState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Dispatcher {
    pub state: Arc<GatewayState>,
    pub store: Arc<dyn Backend>,
    running: Arc<Running>,
}

/// Batch requests running now: in all, and per model.
#[derive(Default)]
struct Running {
    counts: Mutex<(usize, HashMap<String, usize>)>,
    /// Woken when a request ends, so its place is filled at once.
    freed: tokio::sync::Notify,
}

/// One running request's place in [`Running`]; given back when dropped.
struct Slot {
    running: Arc<Running>,
    model: Option<String>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn total(&self) -> usize {
        self.lock().0
    }

    fn of(&self, model: &str) -> usize {
        self.lock().1.get(model).copied().unwrap_or(0)
    }

    fn take(self: &Arc<Self>, model: Option<String>) -> Slot {
        let mut c = self.lock();
        c.0 += 1;
        if let Some(m) = &model {
            *c.1.entry(m.clone()).or_default() += 1;
        }
        Slot {
            running: self.clone(),
            model,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.running.lock();
        c.0 = c.0.saturating_sub(1);
        if let Some(m) = &self.model {
            if let Some(n) = c.1.get_mut(m) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.1.remove(m);
                }
            }
        }
        self.running.freed.notify_one();
    }
}

impl Dispatcher {
    pub fn new(state: Arc<GatewayState>, store: Arc<dyn Backend>) -> Dispatcher {
        Dispatcher {
            state,
            store,
            running: Arc::default(),
        }
    }
}

#[async_trait]
impl BackgroundService for Dispatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut upkeep = std::time::Instant::now();
        loop {
            if upkeep.elapsed() >= Duration::from_millis(50) {
                if let Err(e) = self.upkeep().await {
                    tracing::error!(error = %e, "batch dispatcher");
                }
                upkeep = std::time::Instant::now();
            }
            if let Err(e) = self.dispatch().await {
                tracing::error!(error = %e, "batch dispatcher");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = self.running.freed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Dispatcher {
    /// Validate new batches, end finished ones, send due webhooks, update the metrics.
    async fn upkeep(&self) -> Result<(), String> {
        let store = &*self.store;
        store.maintain().await?;
        for (id, endpoint, file) in store.validating().await? {
            validate(store, &id, &endpoint, &file).await?;
        }
        store.settle().await?;
        for (id, url, event) in store.webhooks_due().await? {
            super::webhook::deliver(self.state.clone(), self.store.clone(), id, url, event);
        }
        if let Ok(n) = store.pending().await {
            self.state.metrics.batch_queue.set(n);
            self.state.realtime.set_active(n > 0);
        }
        Ok(())
    }

    /// Fill the free places with due requests.
    async fn dispatch(&self) -> Result<(), String> {
        let store = &self.store;
        // Read each round: concurrency changes apply at the next reload.
        let cfg = self.state.runtime.load().config.batch.clone();
        let mut free = cfg.concurrency.saturating_sub(self.running.total());
        let capped: Vec<String> = cfg.model_concurrency.keys().cloned().collect();
        for (model, cap) in &cfg.model_concurrency {
            let room = cap.saturating_sub(self.running.of(model)).min(free);
            if room > 0 {
                let claimed = store.claim(room, Queue::Model(model)).await?;
                free -= self.spawn(claimed, cfg.max_attempts);
            }
        }
        if free > 0 {
            let claimed = store.claim(free, Queue::AllBut(&capped)).await?;
            self.spawn(claimed, cfg.max_attempts);
        }
        Ok(())
    }

    /// Run claimed requests, each in its own task; returns how many.
    fn spawn(&self, claimed: Vec<Claimed>, max_attempts: u32) -> usize {
        let n = claimed.len();
        for c in claimed {
            let slot = self.running.take(c.model.clone());
            let gauge = self
                .state
                .metrics
                .batch_running
                .with_label_values(&[c.model.as_deref().unwrap_or("-")]);
            gauge.inc();
            let (state, store) = (self.state.clone(), self.store.clone());
            tokio::spawn(async move {
                let outcome = execute::execute(&state, &c, max_attempts).await;
                let label = match &outcome {
                    Outcome::Done { ok: true, .. } => "completed",
                    Outcome::Done { ok: false, .. } => "failed",
                    Outcome::Retry { counts: true, .. } => "retried",
                    Outcome::Retry { counts: false, .. } => "waited",
                };
                state
                    .metrics
                    .batch_requests
                    .with_label_values(&[label])
                    .inc();
                let written = match outcome {
                    Outcome::Done { ok, line, tokens } => store.finish(&c, ok, &line, tokens).await,
                    Outcome::Retry { after_ms, counts } => {
                        store.retry(&c, now_ms() + after_ms as i64, counts).await
                    }
                };
                if let Err(e) = written {
                    tracing::error!(error = %e, batch = %c.batch_id, "writing a batch result");
                }
                drop(slot);
                gauge.dec();
            });
        }
        n
    }
}

/// A validation problem of one input line.
fn problem(code: &str, message: &str, line: Option<u64>) -> Value {
    json!({"code": code, "message": message, "param": null, "line": line})
}

/// The lines of a stored file, read chunk by chunk (`None` at its end; `Err` for a line
/// that is not UTF-8, with the reading going on).
struct Lines<'s> {
    store: &'s dyn Backend,
    id: &'s str,
    next_chunk: u64,
    buf: Vec<u8>,
    done: bool,
}

impl Lines<'_> {
    async fn next(&mut self) -> Result<Option<Result<String, ()>>, String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(Some(utf8(&line[..end])));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(utf8(&line)));
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

fn utf8(b: &[u8]) -> Result<String, ()> {
    let b = b.strip_suffix(b"\r").unwrap_or(b);
    String::from_utf8(b.to_vec()).map_err(|_| ())
}

/// Check a batch's input file line by line; start it, or fail it with line-numbered errors.
async fn validate(
    store: &dyn Backend,
    id: &str,
    endpoint: &str,
    file_id: &str,
) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut requests = Vec::new();
    let mut seen = HashSet::new();
    let mut model: Option<String> = None;
    if execute::endpoint(endpoint).is_none() {
        errors.push(problem(
            "invalid_endpoint",
            "This endpoint is not supported for batches.",
            None,
        ));
    }
    let mut lines = Lines {
        store,
        id: file_id,
        next_chunk: 0,
        buf: Vec::new(),
        done: false,
    };
    let exists = store.file_chunk(file_id, 0).await.is_ok();
    match exists {
        false => errors.push(problem(
            "file_not_found",
            "The input file does not exist.",
            None,
        )),
        true => {
            let mut n = 0u64;
            while let Some(text) = lines.next().await? {
                n += 1;
                let Ok(text) = text else {
                    errors.push(problem(
                        "invalid_json_line",
                        "This line is not valid UTF-8.",
                        Some(n),
                    ));
                    continue;
                };
                if text.trim().is_empty() {
                    continue;
                }
                let v: Value = match serde_json::from_str(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        errors.push(problem(
                            "invalid_json_line",
                            "This line is not parseable as valid JSON.",
                            Some(n),
                        ));
                        continue;
                    }
                };
                let Some(cid) = v["custom_id"].as_str().filter(|c| !c.is_empty()) else {
                    errors.push(problem(
                        "missing_required_parameter",
                        "custom_id is required.",
                        Some(n),
                    ));
                    continue;
                };
                if !seen.insert(cid.to_string()) {
                    errors.push(problem("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.", Some(n)));
                }
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
                if model.is_none() {
                    model = v["body"]["model"].as_str().map(str::to_string);
                }
                requests.push((n, cid.to_string(), v["body"].to_string()));
                if errors.len() >= 100 {
                    break;
                }
            }
        }
    }
    if errors.is_empty() && requests.is_empty() {
        errors.push(problem("empty_file", "The input file is empty.", None));
    }
    if !errors.is_empty() {
        return store
            .fail_batch(id, &json!({"object": "list", "data": errors}))
            .await;
    }
    store.start_batch(id, model.as_deref(), &requests).await
}
