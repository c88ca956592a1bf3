//! Batch resources are bounded, against the real binary and its SQLite store: a line over
//! `server.max_body_bytes` fails validation, creating batches does not copy their input
//! file, consumers are held to a storage quota, the retention sweep gives the space back,
//! and validation memory does not grow with the file.

mod common;
use common::batches::{create, try_upload, upload, wait_status};
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "sk-space";

fn yaml(data: &Path, extra: &str) -> String {
    redis_yaml(data, extra, None)
}

/// With `redis`, batches live in Redis (`batch.store: redis`).
fn redis_yaml(data: &Path, extra: &str, redis: Option<&Redis>) -> String {
    let max_body = if extra.contains("quota") {
        4_000_000
    } else {
        65_536
    };
    let (limits, store) = match redis {
        Some(r) => (
            format!("limits: {{policy: redis, redis: {{url: \"{}\"}}}}", r.url()),
            ", store: redis",
        ),
        None => (String::new(), ""),
    };
    format!(
        r#"
{limits}
server: {{max_body_bytes: {max_body}}}
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: mock, kind: mock, mock: {{completion_tokens: 2}}}}
  - {{name: hold, kind: mock, mock: {{latency_ms: 60000}}}}
models:
  - {{name: m, deployments: [{{provider: mock}}]}}
  - {{name: hold, deployments: [{{provider: hold}}]}}
batch: {{data_dir: "{}", concurrency: 16{store}{extra}}}
"#,
        data.display()
    )
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        du(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `n` request lines of about `size` bytes each for `model`.
fn input(n: usize, size: usize, model: &str) -> String {
    let pad = "x".repeat(size.saturating_sub(120));
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": model, "max_tokens": 2,
                            "messages": [{"role": "user", "content": pad}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_line_over_max_body_bytes_fails_validation_with_its_line_number() {
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&yaml(data.path(), ""));
    let big = input(1, 200 * 1024, "m");
    let content = format!(
        "{}{big}{}",
        input(1, 200, "m"),
        input(1, 200, "m").replace("r0", "r2")
    );
    let f = upload(&gw, KEY, &content);
    let b = create(&gw, KEY, &f);
    let failed = wait_status(&gw, KEY, b["id"].as_str().unwrap(), &["failed"], 20);
    let errors = failed["errors"]["data"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{failed}");
    assert_eq!(errors[0]["code"], "line_too_large");
    assert_eq!(errors[0]["line"], 2);
}

#[test]
fn creating_batches_does_not_copy_their_input_file() {
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&yaml(data.path(), ""));
    // 10,000 requests of 4 KiB (a modest prompt) on a model that does not answer during
    // the test.
    let content = input(10_000, 4096, "hold");
    let f = upload(&gw, KEY, &content);
    let before = du(data.path());
    let ids: Vec<String> = (0..3)
        .map(|_| create(&gw, KEY, &f)["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        let b = wait_status(&gw, KEY, id, &["in_progress"], 60);
        assert_eq!(b["request_counts"]["total"], 10_000);
    }
    let added = du(data.path()) - before;
    let per_request = added / 30_000;
    eprintln!(
        "input file {} bytes; 3 batches on it added {added} bytes to the data dir ({per_request} bytes a request, {:.1}% of one copy each)",
        content.len(),
        added as f64 / 3.0 / content.len() as f64 * 100.0
    );
    // A request's row (ids, state, where its line is), not its 4 KiB line.
    assert!(
        per_request < 400,
        "three batches added {added} bytes for a {} byte input",
        content.len()
    );
    // The requests really are readable from the input file: one runs (and holds).
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric("gateway_batch_running", &[("model", "hold")]) < 1.0 {
        assert!(Instant::now() < deadline, "nothing dispatched");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_consumer_over_its_storage_quota_is_refused_like_openai() {
    quota(None);
}

#[test]
fn a_consumer_over_its_storage_quota_is_refused_with_the_redis_store() {
    quota(Some(&Redis::start()));
}

fn quota(redis: Option<&Redis>) {
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&redis_yaml(
        data.path(),
        ", consumer_quota_bytes: 3000000",
        redis,
    ));
    let two_mb = input(2000, 1000, "m");
    let first = upload(&gw, KEY, &two_mb);
    assert!(first["id"].is_string(), "{first}");
    // The second would pass the quota: 400 invalid_request_error, as OpenAI's storage limit.
    let r = try_upload(&gw, KEY, &two_mb);
    assert_eq!(r.status, 400, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded your file storage quota"),
        "{e}"
    );
    // Nothing of the refused upload stays on disk (its scratch file is removed off the
    // async threads, just after the answer: allow it a moment).
    if redis.is_none() {
        let scratch = data.path().join("files").join("uploading");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_dir(&scratch).unwrap().count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    }
    // Inline batches count too.
    let requests: Vec<Value> = (0..1500)
        .map(|i| json!({"custom_id": format!("i{i}"), "body": {"model": "m", "messages": [{"role": "user", "content": "y".repeat(900)}]}}))
        .collect();
    let r = post(
        &gw.url("/v1/batches"),
        Some(KEY),
        &json!({"endpoint": "/v1/chat/completions", "requests": requests}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Deleting gives the room back.
    let d = agent()
        .delete(&gw.url(&format!("/v1/files/{}", first["id"].as_str().unwrap())))
        .set("authorization", &format!("Bearer {KEY}"))
        .call()
        .unwrap();
    assert_eq!(d.status(), 200);
    assert!(upload(&gw, KEY, &two_mb)["id"].is_string());
}

#[test]
fn the_retention_sweep_gives_the_space_back() {
    retention(None);
}

#[test]
fn the_retention_sweep_gives_the_space_back_with_the_redis_store() {
    retention(Some(&Redis::start()));
}

/// Bytes of the data dir, or of every key in Redis (`MEMORY USAGE`).
fn used(data: &Path, redis: Option<&Redis>) -> u64 {
    let Some(r) = redis else {
        return du(data);
    };
    let keys = r.cmd(&["KEYS", "*"]).unwrap_or_default();
    keys.lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$') && !l.is_empty())
        .filter_map(|k| {
            r.cmd(&["MEMORY", "USAGE", k, "SAMPLES", "0"])?
                .trim()
                .trim_start_matches(':')
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn retention(redis: Option<&Redis>) {
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&redis_yaml(data.path(), ", retention: 4s", redis));
    let used = || used(data.path(), redis);
    let empty = used();

    let content = input(5000, 1024, "m");
    let f = upload(&gw, KEY, &content);
    let b = create(&gw, KEY, &f);
    let id = b["id"].as_str().unwrap().to_string();
    let done = wait_status(&gw, KEY, &id, &["completed"], 120);
    let out = done["output_file_id"].as_str().unwrap().to_string();
    let full = used();
    // Right after: everything is there.
    assert_eq!(
        get(&gw.url(&format!("/v1/files/{out}")), Some(KEY)).status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let input_id = f["id"].as_str().unwrap();
    while get(&gw.url(&format!("/v1/files/{input_id}")), Some(KEY)).status != 404
        || get(&gw.url(&format!("/v1/files/{out}")), Some(KEY)).status != 404
    {
        assert!(Instant::now() < deadline, "files not swept");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The ended batch's requests and results go too (the batch object stays).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&gw.url(&format!("/v1/batches/{id}/results")), Some(KEY));
        if r.body.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "results kept: {}",
            &r.body[..200.min(r.body.len())]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        get(&gw.url(&format!("/v1/batches/{id}")), Some(KEY)).json()["status"],
        "completed"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = used();

    eprintln!(
        "{}: {empty} bytes empty, {full} with a finished 5,000-request batch, {after} after the retention sweep",
        if redis.is_some() { "Redis keys" } else { "data dir" }
    );
    assert!(
        after < empty + (full - empty) / 5,
        "space not given back: {empty} → {full} → {after}"
    );
}

#[test]
fn validation_memory_does_not_grow_with_the_file() {
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&yaml(data.path(), ", max_file_bytes: 209715200"));
    // 300,000 short lines (~60 MB) on a model that does not answer.
    let content = input(300_000, 200, "hold");
    let f = upload(&gw, KEY, &content);
    let before = rss_kib(gw.pid());
    let b = create(&gw, KEY, &f);
    let id = b["id"].as_str().unwrap().to_string();
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        peak = peak.max(rss_kib(gw.pid()));
        let s = get(&gw.url(&format!("/v1/batches/{id}")), Some(KEY)).json();
        if s["status"] != "validating" {
            assert_eq!(s["status"], "in_progress", "{s}");
            assert_eq!(s["request_counts"]["total"], 300_000);
            break;
        }
        assert!(Instant::now() < deadline, "validation too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    let grew = peak.saturating_sub(before);
    eprintln!(
        "validating {} bytes in 300,000 lines: RSS {before} KiB before, peak +{grew} KiB",
        content.len()
    );
    // Holding the file's requests would take well over 60 MB.
    assert!(grew < 24 * 1024, "validation grew RSS by {grew} KiB");
}
