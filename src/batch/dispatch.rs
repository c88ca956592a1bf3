//! The dispatcher: a background service that validates new batches, runs their requests
//! through [`super::execute`] (at most `batch.concurrency` at a time, and per model at
//! most its `batch.model_concurrency`; both read every round, so a reload changes them),
//! retried with backoff honouring `retry-after`, and ends batches (completed, cancelled, expired) with their
//! output and error files.

use super::backend::{now_ms, Backend, Claimed, Queue, StoreResult};
use super::execute::{self, Outcome};
use crate::gateway::GatewayState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Dispatcher {
    pub state: Arc<GatewayState>,
    pub store: Arc<dyn Backend>,
    running: Arc<Running>,
    /// When the retention sweep last ran.
    last_sweep: Mutex<std::time::Instant>,
}

/// The pause between two rounds while there is work (and the shortest).
const BUSY_PAUSE_MS: u64 = 50;
/// The longest pause while there is none: each idle round doubles it up to this. Every
/// instance of a fleet polls the shared store, so an idle fleet costs Redis a few commands
/// per instance and second, not a hundred; a batch created on another instance starts
/// within this, one created here at once ([`wake`]).
const IDLE_PAUSE_MS: u64 = 1000;

/// Woken when a batch is created on this instance, so an idle dispatcher starts it at once.
static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A batch was created here: end the dispatcher's idle pause.
pub fn wake() {
    WAKE.notify_one();
}

/// The pause after `idle` rounds in a row found nothing to do.
fn pause(idle: u32) -> Duration {
    let ms = BUSY_PAUSE_MS.saturating_mul(1 << idle.min(8));
    Duration::from_millis(ms.min(IDLE_PAUSE_MS))
}

/// How often the retention sweep runs: every minute, or more often for a short retention.
fn sweep_every(retention_secs: i64) -> Duration {
    Duration::from_secs((retention_secs / 2).clamp(1, 60) as u64)
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
            last_sweep: Mutex::new(std::time::Instant::now()),
        }
    }
}

#[async_trait]
impl BackgroundService for Dispatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut upkeep = std::time::Instant::now();
        let mut idle = 0;
        loop {
            // Work is anything validating, queued or running; an error counts as work (the
            // next round retries soon).
            let mut busy = self.running.total() > 0;
            if upkeep.elapsed() >= Duration::from_millis(BUSY_PAUSE_MS) {
                match self.upkeep().await {
                    Ok(work) => busy |= work,
                    Err(e) => {
                        busy = true;
                        tracing::error!(error = %e, "batch dispatcher");
                    }
                }
                upkeep = std::time::Instant::now();
            }
            match self.dispatch().await {
                Ok(claimed) => busy |= claimed > 0,
                Err(e) => {
                    busy = true;
                    tracing::error!(error = %e, "batch dispatcher");
                }
            }
            idle = if busy { 0 } else { idle + 1 };
            tokio::select! {
                _ = tokio::time::sleep(pause(idle)) => {}
                _ = self.running.freed.notified() => {}
                _ = WAKE.notified() => idle = 0,
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Dispatcher {
    /// Validate new batches, end finished ones, send due webhooks, update the metrics;
    /// whether there was work (a batch validating, a request queued, a webhook due).
    async fn upkeep(&self) -> StoreResult<bool> {
        let store = &*self.store;
        store.maintain().await?;
        let (max_line, retention) = {
            let rt = self.state.runtime.load();
            (
                rt.config.server.max_body_bytes,
                rt.config.batch.retention.as_secs() as i64,
            )
        };
        let validating = store.validating().await?;
        let mut work = !validating.is_empty();
        for (id, endpoint, file) in validating {
            super::validate::validate(store, &id, &endpoint, &file, max_line).await?;
        }
        store.settle(retention).await?;
        if self
            .last_sweep
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
            >= sweep_every(retention)
        {
            match store.sweep(retention).await {
                Ok(s) if s != Default::default() => tracing::info!(
                    files = s.files,
                    bytes = s.bytes,
                    batches = s.batches,
                    "batch retention: deleted expired files and ended batches' requests"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "batch retention sweep"),
            }
            if let Ok(mut t) = self.last_sweep.lock() {
                *t = std::time::Instant::now();
            }
        }
        for (id, url, event) in store.webhooks_due().await? {
            work = true;
            super::webhook::deliver(self.state.clone(), self.store.clone(), id, url, event);
        }
        match store.pending().await {
            Ok(n) => {
                self.state.metrics.batch_queue.set(n);
                self.state.realtime.set_active(n > 0);
                work |= n > 0;
            }
            Err(_) => work = true,
        }
        Ok(work)
    }

    /// Fill the free places with due requests.
    /// (How many requests it claimed.)
    async fn dispatch(&self) -> StoreResult<usize> {
        let store = &self.store;
        // Read each round: concurrency changes apply at the next reload.
        let cfg = self.state.runtime.load().config.batch.clone();
        let mut free = cfg.concurrency.saturating_sub(self.running.total());
        let mut started = 0;
        let capped: Vec<String> = cfg.model_concurrency.keys().cloned().collect();
        for (model, cap) in &cfg.model_concurrency {
            let room = cap.saturating_sub(self.running.of(model)).min(free);
            if room > 0 {
                let claimed = store.claim(room, Queue::Model(model)).await?;
                let n = self.spawn(claimed, cfg.max_attempts);
                free -= n;
                started += n;
            }
        }
        if free > 0 {
            let claimed = store.claim(free, Queue::AllBut(&capped)).await?;
            started += self.spawn(claimed, cfg.max_attempts);
        }
        Ok(started)
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

#[cfg(test)]
mod tests {
    use super::pause;
    use std::time::Duration;

    #[test]
    fn an_idle_dispatcher_polls_less_and_less_down_to_once_a_second() {
        let ms = |idle| pause(idle).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(4)], [50, 100, 200, 800]);
        assert_eq!(pause(5), Duration::from_secs(1));
        assert_eq!(pause(u32::MAX), Duration::from_secs(1));
    }
}
