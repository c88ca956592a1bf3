//! The second hostile-client pass against the real binary: path tricks past auth,
//! credentials hidden from pass-through backends, the brake on password guessing,
//! duplicate JSON keys, the Responses store (reads limited, chains bounded, the quota
//! checked before the call) and configs that cannot share a store. Signals and streams:
//! `hardening_streams.rs`.

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
