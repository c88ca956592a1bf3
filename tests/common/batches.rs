//! Batch API helpers shared by the batch tests.

use super::{agent, get, post, Gw};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Upload `content` as a batch input file as `key`'s consumer; returns the file object.
pub fn upload(gw: &Gw, key: &str, content: &str) -> Value {
    let r = try_upload(gw, key, content);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// [`upload`], whatever the answer.
pub fn try_upload(gw: &Gw, key: &str, content: &str) -> super::Resp {
    let boundary = "XyZbOuNdArY";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    super::to_resp(
        agent()
            .post(&gw.url("/v1/files"))
            .set("authorization", &format!("Bearer {key}"))
            .set(
                "content-type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send_string(&body),
    )
}

/// Create a chat batch on an uploaded input file; returns the batch object.
pub fn create(gw: &Gw, key: &str, file: &Value) -> Value {
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"});
    let r = post(&gw.url("/v1/batches"), Some(key), &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// `n` inline chat requests `<prefix><i>` on `model`.
pub fn chat_requests(n: usize, prefix: &str, model: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("{prefix}{i}"), "body": {"model": model,
                 "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}})
        })
        .collect()
}

/// Create an inline chat batch; returns its id.
pub fn create_inline(gw: &Gw, key: &str, requests: &[Value]) -> String {
    let r = post(
        &gw.url("/v1/batches"),
        Some(key),
        &json!({"endpoint": "/v1/chat/completions", "requests": requests}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["id"].as_str().expect("batch id").to_string()
}

/// Wait for batch `id` to reach one of `want`; returns the batch object. It fails when the
/// batch makes no progress (no request done) for `secs`, or after ten times that in all:
/// a slow machine is no reason to fail, a stuck batch is.
pub fn wait_status(gw: &Gw, key: &str, id: &str, want: &[&str], secs: u64) -> Value {
    let window = Duration::from_secs(secs);
    let cap = Instant::now() + window * 10;
    let (mut deadline, mut done) = (Instant::now() + window, 0);
    loop {
        let b = get(&gw.url(&format!("/v1/batches/{id}")), Some(key)).json();
        if want.contains(&b["status"].as_str().unwrap_or("")) {
            return b;
        }
        let counts = &b["request_counts"];
        let now_done =
            counts["completed"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0);
        if now_done > done {
            (done, deadline) = (now_done, Instant::now() + window);
        }
        let now = Instant::now();
        assert!(now < deadline && now < cap, "batch stuck: {b}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON lines of a stored file.
pub fn lines(gw: &Gw, key: &str, file: &Value) -> Vec<Value> {
    let r = get(
        &gw.url(&format!("/v1/files/{}/content", file.as_str().unwrap())),
        Some(key),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
