//! The batch priority class through the real gateway: a provider key limited to 10 req/s,
//! a 1,000-request batch running on it, and realtime traffic at 5 req/s. Realtime sees no
//! 429 caused by the batch; the batch uses the whole limit alone and the rest beside
//! realtime traffic. Under the local policy (limit-req bucket) and the Redis policy
//! (limit-count window, decided by `admit.lua`).

mod common;
use common::redis::Redis;
use common::*;
use std::time::{Duration, Instant};

const KEY: &str = "sk-prio";

fn gateway(limit: &str, limits_section: &str) -> Gw {
    Gw::start(&format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: batcher, keys: ["{KEY}"]}}, {{name: live, keys: [sk-live]}}]
providers:
  - {{name: mock, kind: mock}}
models:
  - name: p
    deployments: [{{provider: mock, limits: [{limit}]}}]
{limits_section}
"#
    ))
}

fn completed(gw: &Gw, id: &str) -> u64 {
    let b = get(&gw.url(&format!("/v1/batches/{id}")), Some(KEY)).json();
    b["request_counts"]["completed"].as_u64().unwrap_or(0)
}

/// Run the scenario; returns the batch's rate alone and beside realtime traffic.
fn realtime_beside_a_batch(gw: &Gw) -> (f64, f64) {
    let id = batches::create_inline(gw, KEY, &batches::chat_requests(1000, "b", "p"));
    // The batch alone: it may use the whole limit.
    std::thread::sleep(Duration::from_secs(1));
    let (a0, t0) = (completed(gw, &id), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let alone = (completed(gw, &id) - a0) as f64 / t0.elapsed().as_secs_f64();

    // Realtime at 5 req/s for 8 s beside it.
    let (b0, t1) = (completed(gw, &id), Instant::now());
    let mut statuses = Vec::new();
    for i in 0..40u32 {
        let due = t1 + Duration::from_millis(200) * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let r = post(
            &gw.url("/v1/chat/completions"),
            Some("sk-live"),
            &chat_body("p", "now", false),
        );
        statuses.push((i, r.status, r.body));
    }
    let beside = (completed(gw, &id) - b0) as f64 / t1.elapsed().as_secs_f64();
    let refused: Vec<_> = statuses.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "realtime requests refused beside the batch: {refused:?}"
    );
    let r = post(&gw.url(&format!("/v1/batches/{id}/cancel")), Some(KEY), "");
    assert_eq!(r.status, 200, "{}", r.body);
    eprintln!("batch alone {alone:.1} req/s, beside 5 req/s of realtime {beside:.1} req/s");
    (alone, beside)
}

#[test]
fn batch_yields_to_realtime_on_a_req_bucket() {
    let gw = gateway(
        "{name: key-rps, req: {rate: 10, burst: 5, nodelay: true}}",
        "",
    );
    let (alone, beside) = realtime_beside_a_batch(&gw);
    // The limit is 10 req/s: the batch takes it alone, the rest (5) beside realtime.
    assert!((8.0..=11.5).contains(&alone), "alone: {alone:.1} req/s");
    assert!((2.5..=6.0).contains(&beside), "beside: {beside:.1} req/s");
}

#[test]
fn batch_yields_to_realtime_on_a_shared_count_window() {
    let redis = Redis::start();
    let gw = gateway(
        "{name: key-rps, count: {count: 10, time_window: 1s}}",
        &format!(
            "limits: {{policy: redis, redis: {{url: \"{}\"}}}}",
            redis.url()
        ),
    );
    let (alone, beside) = realtime_beside_a_batch(&gw);
    assert!((8.0..=11.5).contains(&alone), "alone: {alone:.1} req/s");
    assert!((2.0..=6.0).contains(&beside), "beside: {beside:.1} req/s");
}
