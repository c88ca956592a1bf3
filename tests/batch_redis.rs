//! Batches in Redis (`batch.store: redis`): two gateway instances on one real
//! `redis-server` share the Files and Batches API and dispatch one batch together, and a
//! SIGKILL of one in the middle of a 10,000-request batch loses and repeats nothing.

mod common;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const KEY: &str = "sk-batch";

fn config(redis: &Redis) -> String {
    format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: b, keys: ["{KEY}"]}}, {{name: other, keys: [sk-other]}}]
providers:
  - {{name: mock, kind: mock, mock: {{latency_ms: 5}}}}
  - {{name: broken, kind: mock, mock: {{failure: {{status: 400}}}}}}
models:
  - {{name: m, deployments: [{{provider: mock}}]}}
  - {{name: bad, deployments: [{{provider: broken}}]}}
limits: {{policy: redis, redis: {{url: "{}", timeout: 500ms}}, lease_ttl: 2s}}
batch: {{store: redis, concurrency: 32}}
"#,
        redis.url()
    )
}

fn upload(gw: &Gw, content: &str) -> Value {
    batches::upload(gw, KEY, content)
}

fn input(n: usize, model: impl Fn(usize) -> &'static str) -> String {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("c{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model(i), "messages": [{"role": "user", "content": "x"}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

fn batch(gw: &Gw, id: &str) -> Value {
    get(&gw.url(&format!("/v1/batches/{id}")), Some(KEY)).json()
}

fn wait_status(gw: &Gw, id: &str, want: &str, secs: u64) -> Value {
    batches::wait_status(gw, KEY, id, &[want], secs)
}

fn lines(gw: &Gw, file: &Value) -> Vec<Value> {
    batches::lines(gw, KEY, file)
}

fn completed_here(gw: &Gw) -> f64 {
    gw.metric("gateway_batch_requests_total", &[("outcome", "completed")])
        + gw.metric("gateway_batch_requests_total", &[("outcome", "failed")])
}

#[test]
fn two_instances_share_files_batches_and_the_work() {
    let redis = Redis::start();
    let a = Gw::start(&config(&redis));
    let b = Gw::start(&config(&redis));
    let f = upload(&a, &input(400, |i| if i % 10 == 9 { "bad" } else { "m" }));
    assert!(f["bytes"].as_u64().unwrap() > 0, "{f}");
    // The file uploaded to one instance is seen by the other, by its owner only.
    let seen = get(
        &b.url(&format!("/v1/files/{}", f["id"].as_str().unwrap())),
        Some(KEY),
    );
    assert_eq!(seen.status, 200, "{}", seen.body);
    let hidden = get(
        &b.url(&format!("/v1/files/{}", f["id"].as_str().unwrap())),
        Some("sk-other"),
    );
    assert_eq!(hidden.status, 404);
    let r = post(
        &b.url("/v1/batches"),
        Some(KEY),
        &json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                "completion_window": "24h"})
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let done = wait_status(&a, &id, "completed", 60);
    assert_eq!(
        done["request_counts"],
        json!({"total": 400, "completed": 360, "failed": 40})
    );
    let out = lines(&b, &done["output_file_id"]);
    let err = lines(&a, &done["error_file_id"]);
    assert_eq!((out.len(), err.len()), (360, 40));
    assert_eq!(out[0]["custom_id"], "c0", "output in input order");
    assert_eq!(err[0]["response"]["status_code"], 400);
    // Both instances ran part of it.
    let (ra, rb) = (completed_here(&a), completed_here(&b));
    assert_eq!(ra + rb, 400.0, "each request ran once: {ra} + {rb}");
    assert!(ra > 0.0 && rb > 0.0, "both dispatched: {ra} / {rb}");
    // Listing, one request, results as CSV: from either instance.
    let list = get(&a.url("/v1/batches?limit=1"), Some(KEY)).json();
    assert_eq!(list["data"][0]["id"], id.as_str());
    let one = get(&b.url(&format!("/v1/batches/{id}/requests/c3")), Some(KEY)).json();
    assert_eq!(one["status"], "completed", "{one}");
    let csv = get(
        &a.url(&format!("/v1/batches/{id}/results?format=csv")),
        Some(KEY),
    );
    assert_eq!(csv.body.lines().count(), 401);
}

#[test]
fn cancel_on_one_instance_ends_the_batch_everywhere() {
    let redis = Redis::start();
    let a = Gw::start(&config(&redis).replace("latency_ms: 5", "latency_ms: 200"));
    let b = Gw::start(&config(&redis).replace("latency_ms: 5", "latency_ms: 200"));
    let f = upload(&a, &input(500, |_| "m"));
    let id = batches::create(&a, KEY, &f)["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_status(&a, &id, "in_progress", 20);
    std::thread::sleep(Duration::from_millis(500));
    let r = post(&b.url(&format!("/v1/batches/{id}/cancel")), Some(KEY), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let done = wait_status(&a, &id, "cancelled", 30);
    let c = &done["request_counts"];
    assert_eq!(
        c["completed"].as_u64().unwrap() + c["failed"].as_u64().unwrap(),
        500,
        "{c}"
    );
    let err = lines(&b, &done["error_file_id"]);
    assert!(err.iter().any(|l| l["error"]["code"] == "batch_cancelled"));
    let r = post(&a.url(&format!("/v1/batches/{id}/cancel")), Some(KEY), "");
    assert_eq!(r.status, 400, "an ended batch cannot be cancelled");
}

#[test]
fn sigkill_of_one_instance_mid_batch_loses_and_repeats_nothing() {
    let redis = Redis::start();
    let mut a = Gw::start(&config(&redis));
    let b = Gw::start(&config(&redis));
    let n = 10_000;
    let f = upload(&a, &input(n, |_| "m"));
    let id = batches::create(&a, KEY, &f)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = batch(&b, &id)["request_counts"]["completed"]
            .as_u64()
            .unwrap_or(0);
        if done >= 3_000 {
            break;
        }
        assert!(Instant::now() < deadline, "batch too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A dies holding claimed requests; B takes them over after the lease; A comes back.
    let before = batch(&b, &id);
    assert_eq!(
        before["status"], "in_progress",
        "killed mid-batch: {before}"
    );
    let ran_by_a = completed_here(&a);
    a.kill_and_restart();
    eprintln!(
        "killed A after it ran {ran_by_a} requests, at {}",
        before["request_counts"]
    );
    let done = wait_status(&b, &id, "completed", 120);
    assert_eq!(
        done["request_counts"],
        json!({"total": n, "completed": n, "failed": 0})
    );
    let out = lines(&a, &done["output_file_id"]);
    let ids: HashSet<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (out.len(), ids.len()),
        (n, n),
        "every custom_id exactly once"
    );
    // What A held when it died was run by an instance that took it over: B, or A's new
    // process (it has a new name in the consumer group).
    wait_until("a log saying A's requests were taken over", || {
        a.logs().contains("taken over") || b.logs().contains("taken over")
    });
}
