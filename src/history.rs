//! The last 15 minutes of traffic, in memory, for the status page's charts: one slot per
//! 5 seconds (180 slots), each with the totals and the same figures per model and per
//! consumer — requests, requests refused (429), queue waits, tokens, spend and a latency
//! histogram ([`latency`]: log-linear, so the plotted p95 is within 3.2% of the true one).
//!
//! Bounded: 180 slots, and per slot at most [`MAX_KEYS`] models and consumers (names from
//! the config; beyond that they add up under `other`). Each request takes one short lock
//! when it ends; the page reads the whole ring at most once a second.

mod latency;

use latency::Latency;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Seconds per slot.
pub const STEP_S: u64 = 5;
/// Slots kept: 15 minutes.
pub const SLOTS: usize = 180;
/// Models (and consumers) told apart per slot.
pub const MAX_KEYS: usize = 64;

/// One request, as it ended.
#[derive(Debug, Clone, Default)]
pub struct Sample<'a> {
    pub model: Option<&'a Arc<str>>,
    pub consumer: Option<&'a Arc<str>>,
    pub status: u16,
    pub latency: Duration,
    pub tokens: u64,
    pub spend_usd: f64,
    /// How long it waited in a limit queue, if it did.
    pub queue_wait: Option<Duration>,
    /// A batch request: its tokens and spend count, not its requests or latency (those are
    /// realtime traffic's).
    pub batch: bool,
}

#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    rejected: u64,
    queued: u64,
    queue_wait_ms: u64,
    tokens: u64,
    spend_usd: f64,
    latency: Latency,
}

impl Counts {
    fn add(&mut self, s: &Sample<'_>) {
        self.tokens += s.tokens;
        self.spend_usd += s.spend_usd;
        if s.batch {
            return;
        }
        self.requests += 1;
        if s.status == 429 {
            self.rejected += 1;
        }
        if let Some(w) = s.queue_wait {
            self.queued += 1;
            self.queue_wait_ms += w.as_millis() as u64;
        }
        self.latency
            .add(u64::try_from(s.latency.as_millis()).unwrap_or(u64::MAX));
    }

    /// The 95th percentile latency in ms (see [`Latency::percentile`]), if any request.
    fn p95_ms(&self) -> Option<u64> {
        self.latency.percentile(95)
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Unix seconds of its start (a multiple of [`STEP_S`]).
    start: u64,
    total: Counts,
    models: BTreeMap<Arc<str>, Counts>,
    consumers: BTreeMap<Arc<str>, Counts>,
}

fn add_keyed(map: &mut BTreeMap<Arc<str>, Counts>, key: Option<&Arc<str>>, s: &Sample<'_>) {
    let Some(k) = key else { return };
    if !map.contains_key(k) && map.len() >= MAX_KEYS {
        map.entry(Arc::from("other")).or_default().add(s);
        return;
    }
    map.entry(k.clone()).or_default().add(s);
}

/// The ring of slots.
#[derive(Default)]
pub struct History {
    ring: Mutex<VecDeque<Slot>>,
}

impl History {
    /// Count a request that ended at `now` (unix seconds).
    pub fn record_at(&self, now: u64, s: &Sample<'_>) {
        let start = now - now % STEP_S;
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.back().is_none_or(|b| b.start < start) {
            ring.push_back(Slot {
                start,
                ..Slot::default()
            });
            while ring.len() > SLOTS {
                ring.pop_front();
            }
        }
        // A request that ended in an earlier slot than the newest (a clock step) joins the
        // newest.
        let Some(slot) = ring.back_mut() else { return };
        slot.total.add(s);
        add_keyed(&mut slot.models, s.model, s);
        add_keyed(&mut slot.consumers, s.consumer, s);
    }

    /// Count a request that ended now.
    pub fn record(&self, s: &Sample<'_>) {
        self.record_at(unix_now(), s);
    }

    /// The series of the last 15 minutes at `now`: one point per slot, oldest first, empty
    /// slots as zeros. Per slot: `requests_per_s`, `rejected_per_s`, `queued_per_s`,
    /// `queue_wait_ms` (mean), `tokens_per_min`, `spend_usd` (in the slot), `p95_ms`
    /// (null without requests); for the totals, each model and each consumer.
    pub fn series_at(&self, now: u64) -> Value {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let last = now - now % STEP_S;
        let first = last.saturating_sub(STEP_S * (SLOTS as u64 - 1));
        let slots: Vec<Option<&Slot>> = (0..SLOTS as u64)
            .map(|i| last.checked_sub((SLOTS as u64 - 1 - i) * STEP_S))
            .map(|t| t.and_then(|t| ring.iter().find(|s| s.start == t)))
            .collect();
        // The newest slot is still filling: its rates are over the seconds it has had.
        let secs = |i: usize| {
            if i + 1 == SLOTS {
                (now - last + 1).min(STEP_S) as f64
            } else {
                STEP_S as f64
            }
        };
        let series = |pick: &dyn Fn(&Slot) -> Option<&Counts>| -> Value {
            let mut out: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for (i, slot) in slots.iter().enumerate() {
                let c = slot.and_then(pick);
                let c = c.cloned().unwrap_or_default();
                let per_s = |n: u64| round(n as f64 / secs(i), 3);
                let wait = (c.queued > 0).then(|| c.queue_wait_ms / c.queued);
                out.entry("requests_per_s")
                    .or_default()
                    .push(json!(per_s(c.requests)));
                out.entry("rejected_per_s")
                    .or_default()
                    .push(json!(per_s(c.rejected)));
                out.entry("queued_per_s")
                    .or_default()
                    .push(json!(per_s(c.queued)));
                out.entry("queue_wait_ms").or_default().push(json!(wait));
                out.entry("tokens_per_min")
                    .or_default()
                    .push(json!(round(c.tokens as f64 * 60.0 / secs(i), 1)));
                out.entry("spend_usd")
                    .or_default()
                    .push(json!(round(c.spend_usd, 6)));
                out.entry("p95_ms").or_default().push(json!(c.p95_ms()));
            }
            json!(out)
        };
        let keys = |pick: &dyn Fn(&Slot) -> Vec<Arc<str>>| -> Vec<Arc<str>> {
            let mut all: Vec<Arc<str>> = slots.iter().flatten().flat_map(|s| pick(s)).collect();
            all.sort();
            all.dedup();
            all
        };
        let mut models = Map::new();
        for k in keys(&|s| s.models.keys().cloned().collect()) {
            models.insert(k.to_string(), series(&|s: &Slot| s.models.get(&k)));
        }
        let mut consumers = Map::new();
        for k in keys(&|s| s.consumers.keys().cloned().collect()) {
            consumers.insert(k.to_string(), series(&|s: &Slot| s.consumers.get(&k)));
        }
        json!({
            "step_s": STEP_S,
            "start": first,
            "total": series(&|s: &Slot| Some(&s.total)),
            "models": models,
            "consumers": consumers,
        })
    }

    /// [`Self::series_at`] now.
    pub fn series(&self) -> Value {
        self.series_at(unix_now())
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(model: &'a Arc<str>, consumer: &'a Arc<str>, ms: u64) -> Sample<'a> {
        Sample {
            model: Some(model),
            consumer: Some(consumer),
            status: 200,
            latency: Duration::from_millis(ms),
            tokens: 30,
            spend_usd: 0.001,
            ..Sample::default()
        }
    }

    #[test]
    fn slots_add_up_and_fall_off_after_fifteen_minutes() {
        let h = History::default();
        let (m, a, b): (Arc<str>, Arc<str>, Arc<str>) =
            ("gpt".into(), "alice".into(), "bob".into());
        let t0 = 1_000_000; // a multiple of 5
        for i in 0..10 {
            h.record_at(t0, &sample(&m, if i % 2 == 0 { &a } else { &b }, 40));
        }
        h.record_at(
            t0 + 1,
            &Sample {
                status: 429,
                ..sample(&m, &a, 1)
            },
        );
        h.record_at(
            t0 + 2,
            &Sample {
                queue_wait: Some(Duration::from_millis(300)),
                ..sample(&m, &a, 400)
            },
        );
        // A batch request adds its tokens and spend only.
        h.record_at(
            t0 + 3,
            &Sample {
                batch: true,
                ..sample(&m, &a, 9000)
            },
        );
        let s = h.series_at(t0 + 4);
        let total = &s["total"];
        let last = |k: &str| total[k][SLOTS - 1].clone();
        assert_eq!(last("requests_per_s"), json!(12.0 / 5.0));
        assert_eq!(last("rejected_per_s"), json!(0.2));
        assert_eq!(last("queue_wait_ms"), json!(300));
        assert_eq!(last("tokens_per_min"), json!(13.0 * 30.0 * 60.0 / 5.0));
        assert_eq!(last("spend_usd"), json!(0.013));
        // 10 of 12 at 40 ms, one at 1, one at 400: p95 is 400, reported as the middle of
        // its bucket (400–415 ms): 408, 2% off.
        assert_eq!(last("p95_ms"), json!(408));
        assert_eq!(total["p95_ms"][0], Value::Null, "an empty slot");
        assert_eq!(
            s["consumers"]["bob"]["requests_per_s"][SLOTS - 1],
            json!(1.0)
        );
        assert_eq!(s["models"]["gpt"]["requests_per_s"][SLOTS - 1], json!(2.4));
        // Half-way through a slot its rate is over the seconds it has had.
        let h2 = History::default();
        h2.record_at(t0 + 1, &sample(&m, &a, 1));
        assert_eq!(
            h2.series_at(t0 + 1)["total"]["requests_per_s"][SLOTS - 1],
            json!(0.5)
        );
        // Fifteen minutes later the slot has left the window, and the ring its memory.
        for i in 1..=SLOTS as u64 {
            h.record_at(t0 + i * STEP_S, &sample(&m, &a, 1));
        }
        assert_eq!(h.ring.lock().unwrap().len(), SLOTS);
        let s = h.series_at(t0 + SLOTS as u64 * STEP_S);
        assert_eq!(s["start"], json!(t0 + STEP_S));
        assert!(s["consumers"].get("bob").is_none(), "bob's slot is gone");
    }

    #[test]
    fn keys_are_bounded_per_slot() {
        let h = History::default();
        let m: Arc<str> = "m".into();
        let names: Vec<Arc<str>> = (0..MAX_KEYS + 10).map(|i| format!("c{i}").into()).collect();
        for c in &names {
            h.record_at(5, &sample(&m, c, 1));
        }
        let s = h.series_at(5);
        let consumers = s["consumers"].as_object().unwrap();
        assert_eq!(consumers.len(), MAX_KEYS + 1);
        assert_eq!(consumers["other"]["requests_per_s"][SLOTS - 1], json!(10.0));
    }
}
