//! Operating the gateway: `check`, hot reload under load, metrics (checked by promtool),
//! health, graceful shutdown, HTTPS upstreams with an extra CA, JSON logs.

mod common;
use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-ops";

fn mock_yaml(extra_models: &[&str], completion_tokens: u32) -> String {
    let mut models = String::from("  - {name: m, deployments: [{provider: mock}]}\n");
    for m in extra_models {
        models.push_str(&format!(
            "  - {{name: {m}, deployments: [{{provider: mock}}]}}\n"
        ));
    }
    format!(
        "server: {{threads: 2}}\nreload: {{poll_interval: 100ms}}\nconsumers: [{{name: ops, keys: [\"{KEY}\"]}}]\n\
         providers:\n  - {{name: mock, kind: mock, mock: {{completion_tokens: {completion_tokens}}}}}\nmodels:\n{models}"
    )
}

#[test]
fn check_command_reports_every_problem_with_its_path() {
    let bin = env!("CARGO_BIN_EXE_ai-rate-limiter");
    let ok = Command::new(bin)
        .args(["check", "gateway.yaml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "consumers: [{name: a, keys: [k]}]\nproviders:\n  - {name: p, kind: openai-compatible}\nmodels:\n  - {name: x, deployments: [{provider: q}]}\n",
    )
    .unwrap();
    let out = Command::new(bin).arg("check").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers[0].base_url"), "{err}");
    assert!(err.contains("models[0].deployments[0].provider"), "{err}");
    std::fs::write(&bad, "providers: [{name: p, kind: mock, colour: red}]\n").unwrap();
    let err = String::from_utf8_lossy(
        &Command::new(bin)
            .arg("check")
            .arg(&bad)
            .output()
            .unwrap()
            .stderr,
    )
    .to_string();
    assert!(
        err.contains("providers[0]") && err.contains("colour"),
        "{err}"
    );
    let help = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
}

#[test]
fn hot_reload_under_load_loses_no_request() {
    let gw = Gw::start(&mock_yaml(&[], 4));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failed, url) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                gw.url("/v1/chat/completions"),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = post(&url, Some(KEY), &chat_body("m", "reload", i % 2 == 0));
                    let done = if i % 2 == 0 {
                        r.body.contains("[DONE]")
                    } else {
                        r.status == 200
                    };
                    if r.status == 200 && done {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.body));
                    }
                }
            })
        })
        .collect();
    let mut expected_success = 0;
    for i in 0..12 {
        std::thread::sleep(Duration::from_millis(150));
        if i == 5 {
            gw.write_config("models: [this is not: valid");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        let extra = format!("extra{i}");
        gw.write_config(&mock_yaml(&[&extra], 2 + i));
        expected_success += 1;
        if i % 3 == 0 {
            gw.signal(libc::SIGHUP);
        }
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed requests, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        gw.metric("gateway_config_reloads_total", &[("result", "success")])
            >= expected_success as f64
    );
    assert!(gw.metric("gateway_config_reloads_total", &[("result", "failure")]) >= 1.0);
    let models = get(&gw.url("/v1/models"), Some(KEY)).json();
    let ids: Vec<_> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["m", "extra11"]);
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("m", "x", false),
    );
    assert_eq!(
        r.json()["usage"]["completion_tokens"],
        13,
        "new mock settings in use"
    );
    assert!(gw
        .logs()
        .contains("config reload failed, keeping the previous config"));
}

#[test]
fn metrics_pass_promtool_and_health_endpoints_answer() {
    let gw = Gw::start(&mock_yaml(&[], 3));
    post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("m", "x", false),
    );
    post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("m", "x", true),
    );
    post(
        &gw.url("/v1/chat/completions"),
        Some("bad"),
        &chat_body("m", "x", false),
    );
    post(
        &gw.url("/v1/embeddings"),
        Some(KEY),
        r#"{"model":"m","input":"x"}"#,
    );
    gw.wait_metric("gateway_requests_total", &[("status_class", "2xx")], 3.0);
    gw.wait_metric("gateway_requests_total", &[("status_class", "4xx")], 1.0);
    let text = gw.metrics();
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_ttfb_seconds_bucket",
        "gateway_tokens_total",
        "gateway_requests_in_flight",
        "gateway_config_reloads_total",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    assert_eq!(
        metric_sum(
            &text,
            "gateway_requests_total",
            &[("model", "m"), ("status_class", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        metric_sum(&text, "gateway_requests_total", &[("status_class", "4xx")]),
        1.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "gateway_tokens_total",
            &[("model", "m"), ("kind", "completion")]
        ),
        6.0
    );
    assert!(
        !text.contains(KEY) && !text.contains("consumer=\""),
        "labels must be bounded"
    );

    let promtool = which("promtool")
        .expect("promtool not found: install Debian package 'prometheus' (scripts/test.sh does)");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&gw.admin_url("/health"), None).status, 200);
    let ready = get(&gw.admin_url("/ready"), None);
    assert_eq!(ready.json()["status"], "ready");
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

#[test]
fn sigterm_lets_in_flight_stream_finish_then_exits() {
    let yaml = format!(
        "server: {{shutdown_grace_period: 20s}}\nconsumers: [{{name: ops, keys: [\"{KEY}\"]}}]\n\
         providers: [{{name: mock, kind: mock, mock: {{tokens_per_second: 10, completion_tokens: 15}}}}]\n\
         models: [{{name: m, deployments: [{{provider: mock}}]}}]\n"
    );
    let mut gw = Gw::start(&yaml);
    let url = gw.url("/v1/chat/completions");
    let stream = std::thread::spawn(move || post(&url, Some(KEY), &chat_body("m", "x", true)));
    std::thread::sleep(Duration::from_millis(400));
    gw.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    // New connections are no longer accepted while the stream drains.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err(),
        "still accepting after SIGTERM"
    );
    let r = stream.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body.trim_end().ends_with("data: [DONE]"),
        "stream cut by shutdown: {}",
        r.body
    );
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("gateway did not exit after draining");
    assert!(status.success(), "{status}");
}

#[test]
fn https_upstream_needs_its_ca_and_works_with_extra_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    certs::server_cert(d);
    let up_yaml = format!(
        "{}server: {{threads: 1, tls: {{cert_file: {}, key_file: {}}}}}\n",
        upstream_yaml("sk-up").replace("server: {threads: 1}\n", ""),
        d.join("srv.pem").display(),
        d.join("srv.key").display()
    );
    let up = Gw::start(&up_yaml);
    let front_yaml = |extra_ca: Option<&std::path::Path>| {
        format!(
            "consumers: [{{name: t, keys: [\"{KEY}\"]}}]\n\
             providers: [{{name: up, kind: openai-compatible, base_url: \"https://localhost:{}/v1\", api_key: sk-up}}]\n\
             models: [{{name: ok, deployments: [{{provider: up}}]}}]\nrouting: {{retries: 0}}\n{}",
            up.port,
            extra_ca.map(|p| format!("upstream: {{extra_ca_file: {}}}\n", p.display())).unwrap_or_default()
        )
    };
    let trusting = Gw::start(&front_yaml(Some(&d.join("ca.pem"))));
    let r = post(
        &trusting.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("ok", "over tls", false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &trusting.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("ok", "over tls", true),
    );
    assert!(r.body.contains("[DONE]"));
    let strict = Gw::start(&front_yaml(None));
    let r = post(
        &strict.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("ok", "x", false),
    );
    assert_eq!(
        r.status, 502,
        "an unknown CA must not be trusted: {}",
        r.body
    );
    assert_eq!(
        strict.metric("gateway_upstream_errors_total", &[("kind", "connect")]),
        1.0
    );
}

#[test]
fn json_logs_have_one_access_line_per_request() {
    let yaml = format!("logging: {{format: json}}\n{}", mock_yaml(&[], 2));
    let gw = Gw::start(&yaml);
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("m", "x", false),
    );
    let id = r.header("x-request-id").unwrap().to_string();
    let logs = gw.wait_log(|l| l.contains("\"target\":\"access\""));
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<_> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(access.len(), 1, "{logs}");
    assert_eq!(access[0]["request_id"], id.as_str());
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["completion_tokens"], 2);
    // No build paths: records bridged from `log` (Pingora's) lose their `log.*` fields.
    assert!(
        !logs.contains("\"log.file\"") && !logs.contains(".cargo/registry"),
        "{logs}"
    );
}

#[test]
fn busy_listen_address_fails_fast_with_a_clear_message() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yaml");
    std::fs::write(&cfg, mock_yaml(&[], 1)).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn default_config_serves_mock_and_switches_providers_on_with_their_keys() {
    let yaml = std::fs::read_to_string("gateway.yaml").unwrap();
    let gw = Gw::start_with_env(
        &yaml,
        &[("GATEWAY_API_KEY", "sk-from-env"), ("OPENAI_API_KEY", "")],
    );
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some("sk-from-env"),
        &chat_body("mock", "hi", false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model"], "mock-1");
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some("sk-local-dev"),
        &chat_body("mock", "hi", false),
    );
    assert_eq!(r.status, 401, "GATEWAY_API_KEY replaces the default key");
    let ids = get(&gw.url("/v1/models"), Some("sk-from-env")).body;
    assert!(
        ids.contains("\"mock\"") && !ids.contains("gpt-4o-mini"),
        "{ids}"
    );
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some("sk-from-env"),
        &chat_body("gpt-4o-mini", "hi", false),
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-should-retry"), Some("false"));
    drop(gw);
    let gw = Gw::start_with_env(&yaml, &[("OPENAI_API_KEY", "sk-real-looking")]);
    let ids = get(&gw.url("/v1/models"), Some("sk-local-dev")).body;
    assert!(
        ids.contains("gpt-4o-mini") && ids.contains("text-embedding-3-small"),
        "{ids}"
    );
    assert!(!gw.logs().contains("sk-real-looking"));
}

#[test]
fn slow_upstream_hits_the_read_timeout_with_504() {
    let up = Gw::start(
        "server: {threads: 1}\nauth: {enabled: false}\n\
         providers: [{name: slow, kind: mock, mock: {latency_ms: 3000}}]\n\
         models: [{name: m, deployments: [{provider: slow}]}]\n",
    );
    let front = Gw::start(&format!(
        "consumers: [{{name: ops, keys: [\"{KEY}\"]}}]\n\
         providers: [{{name: up, kind: openai-compatible, base_url: \"{}\"}}]\n\
         models: [{{name: m, deployments: [{{provider: up}}]}}]\n\
         upstream: {{read_timeout: 300ms}}\nrouting: {{retries: 0}}\n",
        up.base_url()
    ));
    let started = std::time::Instant::now();
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("m", "x", false),
    );
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "timeout not applied"
    );
    assert_eq!(
        front.metric("gateway_upstream_errors_total", &[("kind", "timeout")]),
        1.0
    );
}

#[test]
fn start_up_logs_where_it_listens_and_what_it_loaded() {
    let gw = Gw::start(&format!("admin: {{key: s}}\n{}", mock_yaml(&["n"], 4)));
    let line = gw.wait_log(|l| l.contains("ai-rate-limiter starting"));
    for want in [
        format!("listen={}", gw.url("")),
        format!("status_page={}", gw.admin_url("/status")),
        "models=2".to_string(),
        "consumers=1".to_string(),
        "providers=1".to_string(),
        "config=/".to_string(),
    ] {
        assert!(line.contains(&want), "{want} in {line}");
    }
}

#[test]
fn a_refused_request_s_access_line_names_the_limit_and_the_wait() {
    let yaml = mock_yaml(&[], 4).replace(
        "consumers: [{name: ops, keys: [\"sk-ops\"]}]",
        "consumers: [{name: ops, keys: [\"sk-ops\"], limits: [{name: one, count: {count: 1, time_window: 60s}}]}]",
    );
    assert!(yaml.contains("name: one"), "{yaml}");
    let gw = Gw::start(&yaml);
    let ask = || {
        post(
            &gw.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("m", "hi", false),
        )
        .status
    };
    assert_eq!((ask(), ask()), (200, 429));
    let log = gw.wait_log(|l| l.contains("status=429"));
    let line = log
        .lines()
        .find(|l| l.contains("status=429"))
        .unwrap_or_default();
    assert!(
        line.contains("limit=\"consumer:ops/one\"") || line.contains("limit=consumer:ops/one"),
        "{line}"
    );
    assert!(line.contains("retry_after_ms="), "{line}");
}

#[test]
fn check_reports_shape_and_validation_problems_in_one_pass() {
    let out = check_config(
        "server: {lisen: x, threads: \"two\"}\nupstream: {connect_timeout: 5}\n\
         providers: [{name: a, kind: openai, base_url: \"api.example.com\", api_key: k}]\n\
         models: [{name: m, deployments: [{provider: a, model: g}]}]\nauth: {enabled: false}\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "4 problem(s)",
        "server.lisen: unknown field `lisen`",
        "server.threads: invalid type: string \"two\", expected a whole number",
        "upstream.connect_timeout: invalid type: integer `5`, expected a duration such as `5s`",
        "providers[0].base_url: \"api.example.com\" must start with http:// or https://",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}

/// A gateway whose batch module and Responses store are unused writes nothing to its
/// data directory; the first file upload creates the batch store, the first stored
/// response the response store.
#[test]
fn unused_stores_write_no_files() {
    let gw = Gw::start(
        r#"
consumers: [{name: c, keys: [k1]}]
providers: [{name: mock, kind: mock}]
models: [{name: m, deployments: [{provider: mock}]}]
"#,
    );
    let data = gw.dir.path().join("data");
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some("k1"),
        &chat_body("m", "hi", false),
    );
    assert_eq!(r.status, 200);
    // Reads of the unused stores answer as empty ones.
    assert_eq!(get(&gw.url("/v1/batches"), Some("k1")).status, 200);
    assert_eq!(get(&gw.url("/v1/files"), Some("k1")).status, 200);
    assert_eq!(get(&gw.url("/v1/responses/resp_x"), Some("k1")).status, 404);
    std::thread::sleep(Duration::from_millis(1500)); // a dispatcher poll or two
    assert!(
        !data.exists(),
        "{:?}",
        std::fs::read_dir(&data).map(|d| d.count())
    );
    let r = post(
        &gw.url("/v1/responses"),
        Some("k1"),
        r#"{"model": "m", "input": "hi"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(data.join("responses.sqlite").exists());
    assert!(!data.join("batches.sqlite3").exists());
    let upload = ureq::post(&gw.url("/v1/files"))
        .set("authorization", "Bearer k1")
        .set("content-type", "multipart/form-data; boundary=XX")
        .send_string(
            "--XX\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --XX\r\ncontent-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n\
             {\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}\n\r\n--XX--\r\n",
        );
    assert_eq!(upload.map(|r| r.status()).unwrap_or(0), 200);
    assert!(data.join("batches.sqlite3").exists());
}
