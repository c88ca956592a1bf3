//! A canary provider key, echoed by a hostile upstream in every place it can put it:
//! error `code` and `param`, an SSE error event, a stream delta split across two reads,
//! a non-JSON and an invalid-JSON 200 body, response headers, and batch results and
//! errors. No byte of it may reach a client, the log, the metrics, the batch files, the
//! data directory or a webhook.

mod common;
use common::batches::wait_status;
use common::fixture_server::{self, Body, Reply, Request};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CANARY: &str = "sk-canary-5f0e1d2c3b4a69788796a5b4c3d2e1f0";
const CLIENT: &str = "sk-client-key";

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    )
}

/// The hostile upstream: the upstream model name says where to echo the key.
fn hostile(r: &Request) -> Reply {
    let model = r.json()["model"].as_str().unwrap_or("").to_string();
    let bearer = format!("Bearer {CANARY}");
    match model.as_str() {
        "error-fields" => Reply::json(
            "400 Bad Request",
            json!({"error": {"message": format!("bad key {CANARY}"), "type": "invalid_request_error",
                             "param": bearer, "code": CANARY}})
            .to_string(),
        ),
        "html-error" => Reply::json("502 Bad Gateway", format!("<html>upstream saw {bearer}</html>")),
        "text-200" => Reply::json("200 OK", format!("plain text answer with {CANARY} in it")),
        "badjson-200" => Reply::json("200 OK", format!("{{\"choices\": [\"{CANARY}\" ")),
        "content-200" => Reply::json("200 OK", upstream::completion("m", &format!("your key is {CANARY}")))
            .with("x-ratelimit-remaining-requests", CANARY)
            .with("x-echo", bearer),
        "sse-error" => Reply::events(format!(
            "{}data: {}\n\n",
            chunk("hello"),
            json!({"error": {"message": format!("upstream failed for {bearer}"), "code": CANARY}})
        )),
        "sse-split" => {
            let whole = chunk(&format!("the key is {CANARY}!"));
            let at = whole.find(CANARY).unwrap() + CANARY.len() / 2;
            Reply {
                status: "200 OK",
                headers: Vec::new(),
                body: Body::Chunks(vec![
                    whole[..at].to_string(),
                    whole[at..].to_string(),
                    "data: [DONE]\n\n".to_string(),
                ]),
            }
        }
        _ => Reply::json("404 Not Found", "{}"),
    }
}

const MODELS: [&str; 7] = [
    "error-fields",
    "html-error",
    "text-200",
    "badjson-200",
    "content-200",
    "sse-error",
    "sse-split",
];

fn yaml(port: u16, data: &std::path::Path) -> String {
    let models: String = MODELS
        .iter()
        .map(|m| format!("  - {{name: {m}, deployments: [{{provider: hostile}}]}}\n"))
        .collect();
    format!(
        r#"
consumers: [{{name: c, keys: ["{CLIENT}"]}}]
providers:
  - {{name: hostile, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: "{CANARY}", pass_ratelimit_headers: true}}
models:
{models}
routing: {{retries: 0}}
batch: {{data_dir: "{}", max_attempts: 1, webhook_allow_networks: [127.0.0.0/8]}}
"#,
        data.display()
    )
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} leaks the key:\n{text}");
    // Not even a recognisable half of it.
    assert!(
        !text.contains(&CANARY[..20]) && !text.contains(&CANARY[20..]),
        "{what} leaks part of the key:\n{text}"
    );
}

fn all_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn an_echoed_provider_key_never_leaves_the_gateway() {
    let (port, seen) = fixture_server::recording(hostile);
    let (hook_port, hooks) = fixture_server::recording(|_: &Request| Reply::json("200 OK", "{}"));
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&yaml(port, data.path()));
    let mut answers = Vec::new();
    for model in MODELS {
        for stream in [false, true] {
            let r = post(
                &gw.url("/v1/chat/completions"),
                Some(CLIENT),
                &chat_body(model, "hi", stream),
            );
            assert!(r.header("x-request-id").is_some());
            assert_clean(&format!("{model} stream={stream}"), &r.everything());
            answers.push((model, stream, r));
        }
    }
    // The upstream really echoed it: the masks are there.
    let split = answers
        .iter()
        .find(|(m, s, _)| *m == "sse-split" && *s)
        .unwrap();
    assert!(
        streamed_text(&split.2.body).contains("the key is [REDACTED]"),
        "{}",
        split.2.body
    );
    let fields = answers
        .iter()
        .find(|(m, s, _)| *m == "error-fields" && !*s)
        .unwrap();
    assert_eq!(fields.2.status, 400);
    assert!(fields.2.body.contains("[REDACTED]"), "{}", fields.2.body);
    let content = answers
        .iter()
        .find(|(m, s, _)| *m == "content-200" && !*s)
        .unwrap();
    assert_eq!(content.2.status, 200);
    assert!(content.2.header("x-ratelimit-remaining-requests").is_some());
    // Every request reached the upstream with the key (so it had it to echo).
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {CANARY}"))));

    // Batch results and errors, and the webhook, on the same upstream.
    let requests: Vec<Value> = MODELS
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({"custom_id": format!("r{i}"), "body": {"model": m,
                   "messages": [{"role": "user", "content": "x"}]}})
        })
        .collect();
    let b = post(
        &gw.url("/v1/batches"),
        Some(CLIENT),
        &json!({"endpoint": "/v1/chat/completions", "requests": requests,
                "webhook_url": format!("http://127.0.0.1:{hook_port}/hook")})
        .to_string(),
    );
    assert_eq!(b.status, 200, "{}", b.body);
    let id = b.json()["id"].as_str().unwrap().to_string();
    let batch = wait_status(&gw, CLIENT, &id, &["completed", "failed"], 30);
    for file in ["output_file_id", "error_file_id"] {
        if let Some(f) = batch[file].as_str() {
            let r = get(&gw.url(&format!("/v1/files/{f}/content")), Some(CLIENT));
            assert_eq!(r.status, 200);
            assert_clean(file, &r.everything());
        }
    }
    for format in ["jsonl", "json", "csv"] {
        let r = get(
            &gw.url(&format!("/v1/batches/{id}/results?format={format}")),
            Some(CLIENT),
        );
        assert_clean(&format!("results {format}"), &r.everything());
        assert!(r.body.contains("[REDACTED]"), "the echo is in the results");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooks.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook");
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in hooks.lock().unwrap().iter() {
        assert_clean("webhook", &String::from_utf8_lossy(&h.body));
    }
    assert_clean(
        "batch object",
        &get(&gw.url(&format!("/v1/batches/{id}")), Some(CLIENT)).body,
    );

    // Nothing the operator sees either: metrics, log, every byte of the data directory.
    assert_clean("metrics", &gw.metrics());
    let log = gw.wait_log(|l| l.contains("sse-split"));
    assert_clean("log", &log);
    let mut files = Vec::new();
    all_files(data.path(), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert_clean(&f.display().to_string(), &String::from_utf8_lossy(&bytes));
    }
}
