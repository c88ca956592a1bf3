//! The second hostile-client pass against the real binary: path tricks past auth,
//! credentials hidden from pass-through backends, the brake on password guessing,
//! duplicate JSON keys, the Responses store (reads limited, chains bounded, the quota
//! checked before the call) and configs that cannot share a store.

mod common;
use common::fixture_server::{last, recording, Reply, Request};
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

/// One raw HTTP/1.1 request (the path exactly as written: no client normalises it) from
/// `from` (a loopback address), answered status and body.
fn raw(port: u16, from: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let std_stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let stream = s
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        stream.into_std().unwrap()
    });
    let mut stream = std_stream;
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("content-length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn backend() -> (u16, fixture_server::Recorded) {
    recording(|r: &Request| Reply::json("200 OK", json!({"path": r.target}).to_string()))
}

#[test]
fn dot_segments_never_climb_past_auth_and_the_backend_gets_the_normal_path() {
    let (port, seen) = backend();
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: [sk-c]}}]
routes:
  - {{name: public, uris: ["/public/*"], upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}}}
  - {{name: admin, uris: ["/admin/*"], auth: true, upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}}}
"#
    ));
    for path in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/./../admin/x",
        "/public/a/../../admin/x",
    ] {
        let (status, text) = raw(gw.port, "127.0.0.1", "GET", path, &[]);
        assert_eq!(
            status, 401,
            "{path} reaches /admin/x, which needs a key: {text}"
        );
        assert!(text.contains("x-request-id"), "{text}");
    }
    for path in [
        "/public/..%2fadmin/x",
        "/public/%2F..%2Fadmin",
        "/../admin/x",
        "/public/%zz",
    ] {
        let (status, text) = raw(gw.port, "127.0.0.1", "GET", path, &[]);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("invalid_path"), "{text}");
    }
    // With the key, the backend receives the normalised path (and the query).
    let (status, text) = raw(
        gw.port,
        "127.0.0.1",
        "GET",
        "/public/../admin/%7Euser/./x?q=1",
        &[("authorization", "Bearer sk-c")],
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(last(&seen).target, "/admin/~user/x?q=1");
    let (status, _) = raw(gw.port, "127.0.0.1", "GET", "/public/a/./b/../c", &[]);
    assert_eq!(status, 200);
    assert_eq!(last(&seen).target, "/public/a/c");
}

#[test]
fn hide_credentials_keeps_the_consumer_key_from_the_backend() {
    let (port, seen) = backend();
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: [sk-c]}}]
routes:
  - {{name: shown, uris: ["/shown/*"], auth: true, upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}}}
  - {{name: hidden, uris: ["/hidden/*"], auth: true, hide_credentials: true, upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}}}
"#
    ));
    for (header, value) in [
        ("authorization", "Bearer sk-c"),
        ("apikey", "sk-c"),
        ("x-api-key", "sk-c"),
    ] {
        let r = send("GET", &gw.url("/shown/x"), &[(header, value)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(last(&seen).header(header), Some(value), "APISIX's default");
        let r = send("GET", &gw.url("/hidden/x"), &[(header, value)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        let got = last(&seen);
        assert_eq!(got.header(header), None, "{header} hidden");
        assert!(!format!("{:?}", got.headers).contains("sk-c"));
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn password_guessing_is_braked_without_locking_the_user_out_of_its_own_address() {
    let gw = Gw::start(
        r#"
consumers:
  - {name: alice, basic_auth: [{username: alice, password: right-password}]}
providers: [{name: mock, kind: mock}]
models: [{name: m, deployments: [{provider: mock}]}]
"#,
    );
    let models = |from: &str, user: &str, pw: &str| {
        let auth = basic(user, pw);
        raw(
            gw.port,
            from,
            "GET",
            "/v1/models",
            &[("authorization", &auth)],
        )
        .0
    };
    // Alice works from 127.0.0.1.
    assert_eq!(models("127.0.0.1", "alice", "right-password"), 200);
    // A guesser on 127.0.0.2: 3,000 tries were all checked before; now alice's own brake
    // stops it after 10 failures, and every further try is refused unchecked (the right
    // password too: a guesser cannot tell a hit).
    let statuses: Vec<u16> = (0..60)
        .map(|i| models("127.0.0.2", "alice", &format!("guess-{i}")))
        .collect();
    println!(
        "60 guesses for one user: {} checked (401), {} braked (429)",
        count(&statuses, 401),
        count(&statuses, 429)
    );
    assert_eq!(count(&statuses, 401), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 50);
    assert_eq!(models("127.0.0.2", "alice", "right-password"), 429);
    let (_, text) = raw(
        gw.port,
        "127.0.0.2",
        "GET",
        "/v1/models",
        &[("authorization", &basic("alice", "x"))],
    );
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    assert!(
        text.contains("auth_throttled") && text.contains("x-request-id"),
        "{text}"
    );
    // A fresh address guessing alice is braked too...
    assert_eq!(models("127.0.0.3", "alice", "guess"), 429);
    // ...but the guesser cannot lock alice out of the address she works from,
    assert_eq!(models("127.0.0.1", "alice", "right-password"), 200);
    // nor another user out of that fresh address.
    assert_eq!(models("127.0.0.3", "bob", "whatever"), 401);
    // The address brake: one address guessing many users is stopped after 20 failures,
    // and then alice's right password from there is refused as well.
    let statuses: Vec<u16> = (0..30)
        .map(|i| models("127.0.0.7", &format!("user-{i}"), "guess"))
        .collect();
    assert_eq!(count(&statuses, 401), 20, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 10);
    assert_eq!(models("127.0.0.7", "alice", "right-password"), 429);
    assert!(gw.metric("gateway_auth_throttled_total", &[]) >= 41.0);
}

#[test]
fn wrong_keys_are_braked_per_address() {
    let gw = Gw::start(
        r#"
consumers: [{name: c, keys: [sk-right]}]
providers: [{name: mock, kind: mock}]
models: [{name: m, deployments: [{provider: mock}]}]
"#,
    );
    let with = |from: &str, key: &str| {
        let auth = format!("Bearer {key}");
        raw(
            gw.port,
            from,
            "GET",
            "/v1/models",
            &[("authorization", &auth)],
        )
        .0
    };
    let statuses: Vec<u16> = (0..30)
        .map(|i| with("127.0.0.5", &format!("sk-{i}")))
        .collect();
    assert_eq!(count(&statuses, 401), 20, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 10);
    assert_eq!(
        with("127.0.0.6", "sk-right"),
        200,
        "another address is not braked"
    );
}

#[test]
fn duplicate_json_keys_are_refused() {
    let gw = Gw::start(
        r#"
consumers:
  - {name: c, keys: [sk-c]}
providers: [{name: mock, kind: mock}]
models:
  - {name: dear, deployments: [{provider: mock}], consumer_restriction: {deny: [c]}}
  - {name: cheap, deployments: [{provider: mock}]}
"#,
    );
    let body = r#"{"model":"dear","model":"cheap","messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(&gw.url("/v1/chat/completions"), Some("sk-c"), body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "duplicate_key");
    assert!(r.body.contains("duplicate key `model`"), "{}", r.body);
    let nested = r#"{"model":"cheap","messages":[{"role":"user","role":"system","content":"hi"}]}"#;
    let r = post(&gw.url("/v1/chat/completions"), Some("sk-c"), nested);
    assert_eq!(r.status, 400, "{}", r.body);
    for (path, body) in [
        (
            "/v1/responses",
            r#"{"model":"cheap","input":"hi","model":"dear"}"#,
        ),
        (
            "/v1/messages",
            r#"{"model":"cheap","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"model":"x"}"#,
        ),
    ] {
        let r = post(&gw.url(path), Some("sk-c"), body);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    let ok = r#"{"model":"cheap","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), Some("sk-c"), ok).status,
        200
    );
}

fn responses_gateway(extra: &str) -> Gw {
    Gw::start(&format!(
        r#"
server: {{max_body_bytes: 262144}}
consumers:
  - name: c
    keys: [sk-c]
    limits: [{{name: reads, count: {{count: 5, time_window: 60s}}}}]
  - {{name: d, keys: [sk-d]}}
providers: [{{name: mock, kind: mock}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
{extra}
"#
    ))
}

fn create(gw: &Gw, key: &str, body: Value) -> Resp {
    let auth = format!("Bearer {key}");
    send(
        "POST",
        &gw.url("/v1/responses"),
        &[("authorization", &auth)],
        Some(&body),
    )
}

#[test]
fn stored_response_reads_count_against_the_consumers_limits() {
    let gw = responses_gateway("");
    let r = create(&gw, "sk-c", json!({"model": "m", "input": "hi"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // One of the 5 requests a minute is spent; 4 reads pass, then 429.
    let statuses: Vec<u16> = (0..10)
        .map(|i| {
            let path = if i % 2 == 0 {
                format!("/v1/responses/{id}")
            } else {
                format!("/v1/responses/{id}/input_items?limit=1")
            };
            get(&gw.url(&path), Some("sk-c")).status
        })
        .collect();
    println!("10 reads under a 5-per-minute limit: {statuses:?}");
    assert_eq!(count(&statuses, 200), 4, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 6);
}

#[test]
fn chains_are_bounded_by_the_body_limit_and_inputs_by_the_quota() {
    let gw = responses_gateway("responses: {consumer_quota_bytes: 300000}");
    let big = "x".repeat(200_000);
    let first = create(&gw, "sk-d", json!({"model": "m", "input": big}));
    assert_eq!(first.status, 200, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    // 200 KB of history plus 200 KB more would go upstream as one 400 KB body: refused
    // (each request alone is under the 256 KiB body limit).
    let next = create(
        &gw,
        "sk-d",
        json!({"model": "m", "input": big, "previous_response_id": id}),
    );
    assert_eq!(next.status, 400, "{}", next.body);
    assert_eq!(next.json()["error"]["code"], "context_too_large");
    assert_eq!(next.json()["error"]["param"], "previous_response_id");
    // A small follow-up fits.
    let small = create(
        &gw,
        "sk-d",
        json!({"model": "m", "input": "more", "previous_response_id": id}),
    );
    assert_eq!(small.status, 200, "{}", small.body);
    // An input over the storage quota is refused before any upstream call...
    let quota_gw = responses_gateway("responses: {consumer_quota_bytes: 1000}");
    let r = create(
        &quota_gw,
        "sk-d",
        json!({"model": "m", "input": "y".repeat(5000)}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "storage_quota_exceeded");
    assert_eq!(
        quota_gw.metric("gateway_requests_total", &[("model", "m")]),
        0.0
    );
    // ...unless it is not to be stored.
    let r = create(
        &quota_gw,
        "sk-d",
        json!({"model": "m", "input": "y".repeat(5000), "store": false}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn relative_paths_follow_the_config_file_and_a_store_keeps_to_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    let yaml = "auth: {enabled: false}\nproviders: [{name: mock, kind: mock}]\nmodels: [{name: m, deployments: [{provider: mock}]}]\nresponses: {store: sqlite}\n";
    let a = sub.join("a.yaml");
    let b = sub.join("b.yaml");
    std::fs::write(&a, yaml).unwrap();
    std::fs::write(&b, yaml).unwrap();
    // `check` says where relative paths resolved: beside the file, not the working dir.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("check")
        .arg(&a)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let want = format!("responses.data_dir: {}", sub.join("data").display());
    assert!(stdout.contains(&want), "{stdout}");
    // Two configs in one directory with the same data_dir: once the first has stored a
    // response (the store is created on first use), the second gateway refuses the first
    // one's store instead of sharing its tenants' responses.
    let run = |cfg: &std::path::Path, p: u16, m: u16| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
            .args(["run", "--config"])
            .arg(cfg)
            .args(["--listen", &format!("127.0.0.1:{p}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{m}")])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Ready on its own metrics port; a gateway whose free port was taken before it bound
    // it exits at once, and another is started on fresh ports.
    let (mut first, port) = (0..5)
        .find_map(|_| {
            let (port, m) = (free_port(), free_port());
            let mut child = run(&a, port, m);
            let ready = format!("http://127.0.0.1:{m}/ready");
            for _ in 0..100 {
                if child.try_wait().unwrap().is_some() {
                    return None;
                }
                if agent().get(&ready).call().is_ok_and(|r| r.status() == 200) {
                    return Some((child, port));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("the first gateway is not ready in 10 s");
        })
        .expect("the first gateway listens on free ports within 5 tries");
    let url = format!("http://127.0.0.1:{port}/v1/responses");
    let r = post(&url, None, r#"{"model": "m", "input": "hi"}"#);
    assert_eq!(
        r.status, 200,
        "the first gateway stores a response: {}",
        r.body
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first gateway runs"
    );
    let second = run(&b, free_port(), free_port());
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("belongs to the config"), "{err}");
    let _ = first.kill();
    let _ = first.wait();
    assert!(sub.join("data").join("responses.sqlite").exists());
    assert!(
        !dir.path().join("data").exists(),
        "nothing in the working directory"
    );
}

#[test]
fn sigint_and_sigterm_end_the_process_mid_burst_every_time() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut slowest = Duration::ZERO;
    for round in 0..8 {
        let mut gw = Gw::start(
            r#"
server: {threads: 2, shutdown_grace_period: 2s}
auth: {enabled: false}
providers: [{name: slow, kind: mock, mock: {latency_ms: 40}}]
models: [{name: m, deployments: [{provider: slow}]}]
"#,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let url = gw.url("/v1/chat/completions");
        let burst: Vec<_> = (0..16)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                std::thread::spawn(move || {
                    let a = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(5))
                        .build();
                    let body = chat_body("m", "hi", false);
                    while !stop.load(Ordering::Relaxed) {
                        let _ = a
                            .post(&url)
                            .set("content-type", "application/json")
                            .send_string(&body);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let sig = if round % 2 == 0 {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        let t = std::time::Instant::now();
        gw.signal(sig);
        // Grace period 2 s, and the watchdog's 5 s past it at most.
        let exited = gw.wait_exit(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        for b in burst {
            let _ = b.join();
        }
        assert!(
            exited.is_some(),
            "round {round}: still running 10 s after the signal"
        );
        slowest = slowest.max(t.elapsed());
        let logs = gw.logs();
        assert!(
            logs.len() < 1 << 20,
            "round {round}: {} bytes of logs",
            logs.len()
        );
    }
    println!("8 signals mid-burst: every process ended, the slowest in {slowest:?}");
}

/// An upstream that answers nothing (or, for a stream, its head and one event) and then
/// holds the connection: how many requests reached it, and how many of its connections
/// the gateway has closed.
fn silent_upstream() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reached, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, c) = (reached.clone(), closed.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (r, c) = (r.clone(), c.clone());
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // The whole request: its head, then content-length bytes of body.
                loop {
                    let n = conn.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                if String::from_utf8_lossy(&got).contains("\"stream\":true") {
                    let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"}}]}\n\n";
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                            event.len()
                        )
                        .as_bytes(),
                    );
                }
                // Silent from now on; the gateway closing the connection ends the wait.
                conn.set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                while conn.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, reached, closed)
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Send a request and give up after `wait`: its status, or 0 when nothing came.
fn send_and_leave(port: u16, body: &str, wait: Duration, first_event: bool) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let answered = !first_event || text.contains("data:") || !text.starts_with("HTTP/1.1 200");
        if answered && text.contains("\r\n\r\n") {
            break;
        }
    }
    drop(s); // the client leaves
    String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_leaves_frees_its_slot_and_ends_the_upstream_call() {
    let (port, reached, closed) = silent_upstream();
    let gw = Gw::start(&format!(
        r#"
auth: {{enabled: false}}
providers: [{{name: silent, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: k}}]
models: [{{name: m, deployments: [{{provider: silent}}], limits: [{{name: one, conn: {{conn: 1}}}}]}}]
"#
    ));
    for stream in [false, true] {
        let base = closed.load(Ordering::SeqCst);
        let body = chat_body("m", "hi", stream);
        // The client waits, then leaves (before any answer, or after the first event).
        let first = send_and_leave(gw.port, &body, Duration::from_millis(700), stream);
        assert_eq!(first, if stream { 200 } else { 0 });
        let t = std::time::Instant::now();
        while closed.load(Ordering::SeqCst) < base + 1 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let freed_in = t.elapsed();
        assert_eq!(
            closed.load(Ordering::SeqCst),
            base + 1,
            "the gateway ended the upstream call when the client left"
        );
        println!("stream={stream}: upstream call ended {freed_in:?} after the client left");
        // The conn slot (limit 1) is free again: the next request reaches the upstream
        // instead of a 429 (before: held until upstream.read_timeout, 600 s).
        std::thread::sleep(Duration::from_millis(300));
        let before = reached.load(Ordering::SeqCst);
        let next = send_and_leave(gw.port, &body, Duration::from_millis(500), stream);
        assert_ne!(next, 429, "the slot was given back");
        assert_eq!(reached.load(Ordering::SeqCst), before + 1);
        // Let that one go too before the next round.
        let t = std::time::Instant::now();
        while closed.load(Ordering::SeqCst) < base + 2 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn an_upstream_event_without_an_end_is_cut_at_the_bound() {
    // Head, one good event, then 8 MiB with no line end, then silence.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 65536];
                let _ = conn.read(&mut buf);
                std::thread::sleep(Duration::from_millis(50));
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
                let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
                let _ = conn.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
                let junk = format!("data: {}", "x".repeat(64 * 1024));
                for _ in 0..128 {
                    if conn
                        .write_all(format!("{:x}\r\n{junk}\r\n", junk.len()).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    let gw = Gw::start(&format!(
        r#"
auth: {{enabled: false}}
upstream: {{max_event_bytes: 1048576}}
providers: [{{name: bad, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: k}}]
models: [{{name: m, deployments: [{{provider: bad}}]}}]
"#
    ));
    let r = post(
        &gw.url("/v1/chat/completions"),
        None,
        &chat_body("m", "hi", true),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"hi\""), "the good event came through");
    assert!(
        r.body.contains("ended before it was complete (protocol)"),
        "{}",
        &r.body[r.body.len().saturating_sub(400)..]
    );
    assert!(
        r.body.len() < 64 * 1024,
        "none of the oversized event was relayed"
    );
    assert!(gw.logs().contains("max_event_bytes"), "{}", gw.logs());
}
