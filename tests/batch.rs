//! The batch module through the real gateway: Files and Batches API, validation, results,
//! webhooks, expiry, crash recovery, the CLI. A conformance suite: every scenario runs
//! against both stores (`sqlite::*` and `redis::*`, the latter on a real redis-server).

mod common;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "sk-batch";

/// The store a scenario runs on; a Redis store owns its redis-server.
struct Store(Option<Redis>);

impl Store {
    fn new(redis: bool) -> Store {
        Store(redis.then(Redis::start))
    }

    /// The config lines that put batches in this store.
    fn yaml(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(r) => format!(
                "limits: {{policy: redis, redis: {{url: \"{}\", timeout: 500ms}}, lease_ttl: 2s}}\n",
                r.url()
            ),
        }
    }

    fn batch_store(&self) -> &'static str {
        if self.0.is_some() {
            ", store: redis"
        } else {
            ""
        }
    }

    fn gateway(&self) -> Gw {
        Gw::start(&self.config(""))
    }

    /// The test config; `batch_extra` goes into the `batch` section.
    fn config(&self, batch_extra: &str) -> String {
        config(
            &self.yaml(),
            &format!("{}{batch_extra}", self.batch_store()),
        )
    }
}

/// Every scenario, once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Store::new(false)) } )*
        }
        mod redis {
            $( #[test] fn $name() { super::$name(super::Store::new(true)) } )*
        }
    };
}

on_both_stores!(
    batch_runs_to_completion_with_output_and_error_files,
    invalid_input_fails_with_line_numbers_and_terminal_cancel_is_400,
    sigkill_mid_batch_then_restart_completes_every_line_once,
    inline_batch_results_as_jsonl_json_csv_and_one_request,
    cancelling_one_pending_request,
    webhooks_are_signed_retried_and_recorded,
    cli_submits_waits_and_downloads,
    model_concurrency_caps_a_queue_and_follows_reloads,
    completion_window_expiry_ends_the_rest_with_batch_expired_lines,
);

fn config(limits: &str, batch_extra: &str) -> String {
    format!(
        r#"
{limits}
server: {{threads: 2}}
consumers: [{{name: b, keys: ["{KEY}"]}}, {{name: other, keys: [sk-other]}}]
providers:
  - {{name: mock, kind: mock}}
  - {{name: broken, kind: mock, mock: {{failure: {{status: 500}}}}}}
  - {{name: slow, kind: mock, mock: {{latency_ms: 300}}}}
models:
  - {{name: s, deployments: [{{provider: slow}}]}}
  - {{name: m, deployments: [{{provider: mock}}]}}
  - {{name: e, deployments: [{{provider: mock}}]}}
  - {{name: fails, deployments: [{{provider: broken}}]}}
batch: {{max_attempts: 2, webhook_secret: whsec-test, webhook_allow_networks: [127.0.0.0/8]{batch_extra}}}
"#
    )
}

fn upload(gw: &Gw, content: &str) -> Value {
    batches::upload(gw, KEY, content)
}

fn create(gw: &Gw, file: &Value) -> Value {
    batches::create(gw, KEY, file)
}

fn wait_status(gw: &Gw, id: &str, want: &[&str]) -> Value {
    batches::wait_status(gw, KEY, id, want, 20)
}

fn lines(gw: &Gw, file: &Value) -> Vec<Value> {
    batches::lines(gw, KEY, file)
}

fn batch_runs_to_completion_with_output_and_error_files(store: Store) {
    let gw = store.gateway();
    let mut input = String::new();
    for i in 0..20 {
        let model = if i % 5 == 4 { "fails" } else { "m" };
        input.push_str(
            &json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": format!("hi {i}")}]}})
            .to_string(),
        );
        input.push('\n');
    }
    let f = upload(&gw, &input);
    assert_eq!(
        (
            f["object"].as_str(),
            f["purpose"].as_str(),
            f["status"].as_str()
        ),
        (Some("file"), Some("batch"), Some("processed"))
    );
    let r = post(
        &gw.url("/v1/batches"),
        Some(KEY),
        &json!({"input_file_id": f["id"],
        "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"k": "v"}})
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(b["status"], "validating");
    let done = wait_status(&gw, b["id"].as_str().unwrap(), &["completed"]);
    assert_eq!(
        done["request_counts"],
        json!({"total": 20, "completed": 16, "failed": 4})
    );
    assert_eq!(done["metadata"], json!({"k": "v"}));
    let out = lines(&gw, &done["output_file_id"]);
    let err = lines(&gw, &done["error_file_id"]);
    assert_eq!(out.len(), 16);
    assert_eq!(err.len(), 4);
    assert_eq!(out[0]["response"]["status_code"], 200);
    assert_eq!(out[0]["response"]["body"]["object"], "chat.completion");
    assert!(out[0]["error"].is_null());
    assert_eq!(err[0]["response"]["status_code"], 500);
    let mut ids: Vec<String> = out
        .iter()
        .chain(&err)
        .map(|l| l["custom_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every custom_id exactly once");
    assert_eq!(
        gw.metric("gateway_batch_requests_total", &[("outcome", "completed")]),
        16.0
    );
    // The failing lines were retried once (max_attempts 2) before their error line.
    assert_eq!(
        gw.metric("gateway_batch_requests_total", &[("outcome", "failed")]),
        4.0
    );
    assert_eq!(
        gw.metric("gateway_batch_requests_total", &[("outcome", "retried")]),
        4.0
    );
    assert_eq!(gw.wait_metric("gateway_batch_queue_depth", &[], 0.0), 0.0);
    // Another consumer sees none of it.
    assert_eq!(
        get(
            &gw.url(&format!("/v1/batches/{}", b["id"].as_str().unwrap())),
            Some("sk-other")
        )
        .status,
        404
    );
}

fn invalid_input_fails_with_line_numbers_and_terminal_cancel_is_400(store: Store) {
    let gw = store.gateway();
    let input = "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\"}}\nnot json\n{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}\n";
    let f = upload(&gw, input);
    let b = create(&gw, &f);
    let failed = wait_status(&gw, b["id"].as_str().unwrap(), &["failed"]);
    let errors: Vec<(String, u64)> = failed["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        errors.contains(&("invalid_json_line".into(), 2)),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("duplicate_custom_id".into(), 3)),
        "{errors:?}"
    );
    assert!(errors.contains(&("invalid_url".into(), 3)), "{errors:?}");
    let r = post(
        &gw.url(&format!("/v1/batches/{}/cancel", b["id"].as_str().unwrap())),
        Some(KEY),
        "",
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'failed'"));
}

fn sigkill_mid_batch_then_restart_completes_every_line_once(store: Store) {
    let mut gw = Gw::start(&format!(
        r#"
{limits}
server: {{threads: 2}}
consumers: [{{name: b, keys: ["{KEY}"]}}]
providers: [{{name: slow, kind: mock, mock: {{latency_ms: 5}}}}]
models: [{{name: m, deployments: [{{provider: slow}}]}}]
batch: {{concurrency: 32{store}}}
"#,
        limits = store.yaml(),
        store = store.batch_store()
    ));
    let n = 10_000;
    let input: String = (0..n)
        .map(|i| {
            json!({"custom_id": format!("c{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}})
            .to_string()
                + "\n"
        })
        .collect();
    let f = upload(&gw, &input);
    let b = create(&gw, &f);
    let id = b["id"].as_str().unwrap().to_string();
    // Kill it once some, not all, requests are done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    loop {
        let b = get(&gw.url(&format!("/v1/batches/{id}")), Some(KEY)).json();
        if b["request_counts"]["completed"].as_u64().unwrap_or(0) >= 3_000 {
            eprintln!("3,000 done in {:?}", started.elapsed());
            assert_eq!(b["status"], "in_progress", "killed mid-batch");
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.kill_and_restart();
    let done = wait_status(&gw, &id, &["completed"]);
    assert_eq!(
        done["request_counts"],
        json!({"total": n, "completed": n, "failed": 0})
    );
    let out = lines(&gw, &done["output_file_id"]);
    let mut ids: Vec<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (out.len(), ids.len()),
        (n, n),
        "every custom_id exactly once"
    );
}

fn inline_batch_results_as_jsonl_json_csv_and_one_request(store: Store) {
    let gw = store.gateway();
    let mut requests: Vec<Value> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("q{i}"), "body": {"model": "m", "max_tokens": 3,
            "messages": [{"role": "user", "content": "hello, \"world\""}]}})
        })
        .collect();
    requests.push(json!({"custom_id": "bad", "body": {"model": "fails", "messages": [{"role": "user", "content": "x"}]}}));
    let b = post(
        &gw.url("/v1/batches"),
        Some(KEY),
        &json!({"endpoint": "/v1/chat/completions", "requests": requests}).to_string(),
    )
    .json();
    assert_eq!(b["status"], "validating", "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    wait_status(&gw, &id, &["completed"]);
    let jsonl = get(&gw.url(&format!("/v1/batches/{id}/results")), Some(KEY)).body;
    assert_eq!(jsonl.lines().count(), 4);
    let json = get(
        &gw.url(&format!("/v1/batches/{id}/results?format=json")),
        Some(KEY),
    )
    .json();
    assert_eq!(json["data"].as_array().unwrap().len(), 4);
    assert_eq!(json["data"][0]["custom_id"], "q0");
    let csv = get(
        &gw.url(&format!("/v1/batches/{id}/results?format=csv")),
        Some(KEY),
    );
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let rows: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        rows[0],
        "custom_id,status,content,prompt_tokens,completion_tokens,total_tokens,cost_usd,error"
    );
    assert!(rows[1].starts_with("q0,200,"), "{}", rows[1]);
    assert!(rows[1].contains(",3,"), "completion tokens: {}", rows[1]);
    assert!(rows[4].starts_with("bad,500,,"), "{}", rows[4]);
    let one = get(&gw.url(&format!("/v1/batches/{id}/requests/q1")), Some(KEY)).json();
    assert_eq!(one["status"], "completed");
    assert_eq!(one["result"]["response"]["status_code"], 200);
}

fn cancelling_one_pending_request(store: Store) {
    let gw = store.gateway();
    let id = batches::create_inline(&gw, KEY, &batches::chat_requests(40, "s", "s"));
    wait_status(&gw, &id, &["in_progress"]);
    let r = post(
        &gw.url(&format!("/v1/batches/{id}/requests/s39/cancel")),
        Some(KEY),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    let done = wait_status(&gw, &id, &["completed"]);
    assert_eq!(
        done["request_counts"],
        json!({"total": 40, "completed": 39, "failed": 1})
    );
    let r = post(
        &gw.url(&format!("/v1/batches/{id}/requests/s0/cancel")),
        Some(KEY),
        "",
    );
    assert_eq!(r.status, 400, "a finished request cannot be cancelled");
}

fn webhooks_are_signed_retried_and_recorded(store: Store) {
    use common::fixture_server::{self, Reply, Request};
    use hmac::Mac;
    use std::sync::{Arc, Mutex};
    let gw = store.gateway();
    let got: Arc<Mutex<Vec<Request>>> = Arc::default();
    let g = got.clone();
    let port = fixture_server::start(Arc::new(move |r: &Request| {
        let mut g = g.lock().unwrap();
        g.push(r.clone());
        // The first two deliveries fail: the gateway retries.
        if g.len() <= 2 {
            Reply::json("500 Internal Server Error", "{}")
        } else {
            Reply::json("200 OK", "{}")
        }
    }));
    let requests: Vec<Value> = (0..4)
        .map(|i| json!({"custom_id": format!("w{i}"), "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}))
        .collect();
    let b = post(
        &gw.url("/v1/batches"),
        Some(KEY),
        &json!({"endpoint": "/v1/chat/completions",
        // A URL without a path: delivered to `/`.
        "requests": requests, "webhook_url": format!("http://127.0.0.1:{port}")})
        .to_string(),
    )
    .json();
    let id = b["id"].as_str().unwrap().to_string();
    wait_status(&gw, &id, &["completed"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let batch = loop {
        let b = get(&gw.url(&format!("/v1/batches/{id}")), Some(KEY)).json();
        if b["webhook"]["delivered"] == 1 {
            break b;
        }
        assert!(Instant::now() < deadline, "{b}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(batch["webhook"]["last"]["attempts"], 3);
    assert_eq!(batch["webhook"]["last"]["event"], "batch.completed");
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 3);
    let r = &got[2];
    assert_eq!(r.target, "/");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["event"], "batch.completed");
    assert_eq!(body["batch"]["request_counts"]["completed"], 4);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec-test").unwrap();
    mac.update(&r.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-signature"), Some(want.as_str()));
    assert_eq!(
        gw.metric("gateway_batch_webhooks_total", &[("result", "delivered")]),
        1.0
    );
}

fn cli_submits_waits_and_downloads(store: Store) {
    let gw = store.gateway();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..5)
        .map(|i| {
            let model = if i == 4 { "fails" } else { "m" };
            json!({"custom_id": format!("k{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": "x"}]}})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
            .arg("batch")
            .args(args)
            .args(["--url", &gw.url(""), "--key", KEY])
            .output()
            .unwrap()
    };
    let out = run(&[
        "submit",
        input.to_str().unwrap(),
        "--wait",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("batch_"), "{id}");
    assert!(stderr.contains("100% 5/5 (1 failed) completed"), "{stderr}");
    let count = |suffix: &str| {
        std::fs::read_to_string(dir.path().join(format!("{id}_{suffix}.jsonl")))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!((count("output"), count("errors")), (4, 1));
    let status = run(&["status", &id]);
    let b: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(b["status"], "completed");
    let csv = run(&["results", &id, "--format", "csv"]);
    let text = String::from_utf8_lossy(&csv.stdout);
    assert_eq!(text.lines().count(), 6, "header and 5 rows: {text}");
    let bad = run(&["status", "batch_nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("404"));
}

fn model_concurrency_caps_a_queue_and_follows_reloads(store: Store) {
    let gw = Gw::start(&store.config(", model_concurrency: {s: 2}"));
    let id = batches::create_inline(&gw, KEY, &batches::chat_requests(60, "c", "s"));
    let running = || gw.metric("gateway_batch_running", &[("model", "s")]);
    // Sample the running requests of the queue for a while: at most the cap, and at it.
    let sample = |secs: u64| {
        let (mut max, deadline) = (0.0f64, Instant::now() + Duration::from_secs(secs));
        while Instant::now() < deadline {
            max = max.max(running());
            std::thread::sleep(Duration::from_millis(20));
        }
        max
    };
    assert_eq!(sample(2), 2.0, "model_concurrency 2");
    gw.write_config(&store.config(", model_concurrency: {s: 5}"));
    gw.wait_metric(
        "gateway_config_reloads_total",
        &[("result", "success")],
        1.0,
    );
    assert_eq!(sample(2), 5.0, "raised to 5 by a reload");
    let done = wait_status(&gw, &id, &["completed"]);
    assert_eq!(done["request_counts"]["completed"], 60);
    assert_eq!(running(), 0.0);
}

fn completion_window_expiry_ends_the_rest_with_batch_expired_lines(store: Store) {
    let gw = Gw::start(&store.config(", model_concurrency: {s: 1}"));
    let requests: Vec<Value> = (0..30)
        .map(|i| json!({"custom_id": format!("x{i}"), "body": {"model": "s", "messages": [{"role": "user", "content": "x"}]}}))
        .collect();
    let r = post(
        &gw.url("/v1/batches"),
        Some(KEY),
        &json!({"endpoint": "/v1/chat/completions", "requests": requests, "completion_window": "2s"})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(b["completion_window"], "2s");
    let id = b["id"].as_str().unwrap().to_string();
    let done = wait_status(&gw, &id, &["expired"]);
    assert!(done["expired_at"].is_i64(), "{done}");
    let counts = &done["request_counts"];
    let (completed, failed) = (
        counts["completed"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
    );
    assert_eq!(
        (counts["total"].as_u64(), completed + failed),
        (Some(30), 30)
    );
    assert!(completed >= 1 && failed >= 10, "{counts}");
    let errors = lines(&gw, &done["error_file_id"]);
    assert_eq!(errors.len() as u64, failed);
    assert!(errors
        .iter()
        .all(|l| l["error"]["code"] == "batch_expired" && l["response"].is_null()));
    let mut ids: Vec<String> = lines(&gw, &done["output_file_id"])
        .iter()
        .chain(&errors)
        .map(|l| l["custom_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every custom_id once");
    // File batches keep OpenAI's rule.
    let r = post(
        &gw.url("/v1/batches"),
        Some(KEY),
        &json!({"endpoint": "/v1/chat/completions", "input_file_id": "file-x", "completion_window": "2s"})
            .to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}
