//! Test harness: runs the real `ai-rate-limiter` binary on free ports with a config written
//! to a temp dir, waits until it is ready, and stops it (SIGKILL) on drop. Its `TMPDIR` is
//! in that dir too, so what a killed gateway leaves there goes with the test.
#![allow(dead_code)]
// Helpers of tests: a panic here is a failed test (clippy.toml lets #[test] fns unwrap).
#![allow(clippy::unwrap_used)]

pub mod admin;
pub mod anthropic;
pub mod apisix;
pub mod azure;
#[allow(dead_code)]
pub mod batches;
pub mod certs;
pub mod chat_upstream;
pub mod deepseek;
pub mod fixture_server;
pub mod otlp;
pub mod redis;
pub mod upstream;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now and that no other test of this binary was handed: the
/// kernel gives a released port to the next `bind(0)`, so tests running in parallel could
/// otherwise share one (a "dead" upstream that comes alive, two gateways on one port).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&port) {
            seen.push(port);
            return port;
        }
    }
}

/// Poll `done` every 20 ms for up to 10 s: the barrier tests use instead of a fixed sleep.
/// Panics naming `what` (and, through `#[track_caller]`, the test line) when it never holds.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            panic!("waited 10 s for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `sig` to one of this test's own child processes.
#[allow(unsafe_code)] // the tests' one unsafe block (Cargo.toml's [lints])
pub fn signal_child(child: &Child, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

pub struct Gw {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
}

impl Gw {
    pub fn start(yaml: &str) -> Gw {
        Gw::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let log_path = dir.path().join("gateway.log");
        let mut gw = Gw {
            child: None,
            port: free_port(),
            metrics_port: free_port(),
            dir,
            config_path,
            log_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        gw.spawn();
        gw
    }

    /// Start the gateway and wait until it is ready. A port handed out by [`free_port`]
    /// can be taken by another process before the gateway binds it: then the gateway exits
    /// saying the address is in use, and it is started again on fresh ports (up to 5 times).
    fn spawn(&mut self) {
        for _ in 0..5 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if log.contains("in use") => {
                    self.port = free_port();
                    self.metrics_port = free_port();
                }
                Err(log) => panic!("gateway exited early:\n{log}"),
            }
        }
        panic!(
            "gateway could not bind free ports 5 times:\n{}",
            self.logs()
        );
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let from = self.logs().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"));
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env_remove("RUST_LOG");
        let tmp = self.dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        cmd.env("TMPDIR", &tmp);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn gateway"));
        self.wait_ready(from)
    }

    /// SIGKILL the gateway (no graceful anything) and start it again on the same config,
    /// data dir and ports.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    /// Wait until the gateway answers `/ready` and its proxy port accepts; `Err(log)` (the
    /// log from byte `from` on) when it exited first.
    fn wait_ready(&mut self, from: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = self.logs();
                let this_run = log.get(from..).unwrap_or(&log);
                return Err(format!("({status}) {this_run}"));
            }
            let ready = agent()
                .get(&self.admin_url("/ready"))
                .call()
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            let proxy_up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if ready && proxy_up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway not ready in 30s:\n{}", self.logs());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn base_url(&self) -> String {
        self.url("/v1")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    pub fn metrics(&self) -> String {
        agent()
            .get(&self.admin_url("/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    /// Sum of the samples of a metric whose labels contain every `label=value` given.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// Wait (up to 10 s) until a metric equals `want`: request metrics are recorded in
    /// the logging phase, just after the client has its response. Panics with the metric,
    /// its labels and the last value seen when it never does; returns `want`.
    #[track_caller]
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(name, labels);
            if v == want {
                return v;
            }
            if Instant::now() > deadline {
                panic!("waited 10 s for {name}{labels:?} == {want}; last value {v}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (up to 10 s) until the log satisfies `pred`: access lines are written in the logging phase, just after the client has
    /// its response. Panics with the log when it never does; returns the log.
    #[track_caller]
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.logs();
            if pred(&log) {
                return log;
            }
            if Instant::now() > deadline {
                // #[track_caller]: the panic names the test line that waited.
                panic!("waited 10 s for the log line this test expects; the log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        signal_child(self.child.as_ref().unwrap(), sig);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Replace the config file atomically (as editors and ConfigMaps do).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join("gateway.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// A response, whatever its status.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// Every header and the body, for secret scans.
    pub fn everything(&self) -> String {
        let mut s: String = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        s.push_str(&self.body);
        s
    }
}

/// A response (or an error status) as a [`Resp`].
pub fn to_resp(r: Result<ureq::Response, ureq::Error>) -> Resp {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    let status = resp.status();
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body).unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// A request with these headers and (for a JSON body) `content-type: application/json`,
/// whatever the answer's status.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Resp {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    to_resp(match body {
        Some(b) => req
            .set("content-type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    })
}

/// The events of an SSE body: each one's `event:` name (empty without one) and its
/// `data` as JSON (null when it is not JSON).
pub fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (
                name.to_string(),
                serde_json::from_str(data).unwrap_or_default(),
            )
        })
        .collect()
}

pub fn post(url: &str, key: Option<&str>, body: &str) -> Resp {
    post_on(&agent(), url, key, body)
}

/// `post` on a given agent: its requests reuse one keep-alive connection, as SDKs do (the
/// gateway settles a request's limits before it reads the connection's next request).
pub fn post_on(agent: &ureq::Agent, url: &str, key: Option<&str>, body: &str) -> Resp {
    let mut req = agent.post(url).set("content-type", "application/json");
    if let Some(k) = key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    to_resp(req.send_string(body))
}

pub fn get(url: &str, key: Option<&str>) -> Resp {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    to_resp(req.call())
}

pub fn chat_body(model: &str, content: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": content}]})
    .to_string()
}

/// The text of a streamed chat answer: its chunks' `delta.content`, joined.
pub fn streamed_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

/// A gateway acting as an OpenAI-compatible upstream: mock models with each behaviour,
/// reachable only with `key`.
pub fn upstream_yaml(key: &str) -> String {
    format!(
        r#"
server: {{threads: 1}}
consumers: [{{name: front, keys: ["{key}"]}}]
providers:
  - {{name: ok, kind: mock}}
  - {{name: fail500, kind: mock, mock: {{failure: {{status: 500}}}}}}
  - {{name: rl429, kind: mock, mock: {{failure: {{status: 429, retry_after_secs: 7}}}}}}
  - {{name: slow, kind: mock, mock: {{tokens_per_second: 10, completion_tokens: 10}}}}
  - {{name: cut, kind: mock, mock: {{tokens_per_second: 50, cut_stream_after_tokens: 3}}}}
models:
  - {{name: ok, deployments: [{{provider: ok}}]}}
  - {{name: fail500, deployments: [{{provider: fail500}}]}}
  - {{name: rl429, deployments: [{{provider: rl429}}]}}
  - {{name: slow, deployments: [{{provider: slow}}]}}
  - {{name: cut, deployments: [{{provider: cut}}]}}
"#
    )
}

/// Run `n` chat requests for `model` from `threads` threads, request `i` going to gateway
/// `i % gws.len()` with consumer key `i % keys.len()`; returns the statuses.
pub fn burst_as(gws: &[&Gw], keys: &[&str], model: &str, n: usize, threads: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (urls, keys, next) = (urls.clone(), keys.clone(), next.clone());
            let model = model.to_string();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return out;
                    }
                    let body = chat_body(&model, "hi", false);
                    let key = &keys[i % keys.len()];
                    out.push(post(&urls[i % urls.len()], Some(key), &body).status);
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// `ai-rate-limiter check` on a file holding `yaml`.
pub fn check_config(yaml: &str) -> std::process::Output {
    cli_on_config("check", yaml)
}

/// `ai-rate-limiter <command>` on a file holding `yaml` (`check`, `prices`).
pub fn cli_on_config(command: &str, yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg(command)
        .arg(&path)
        .output()
        .unwrap()
}

/// How many of `statuses` are `s`.
pub fn count(statuses: &[u16], s: u16) -> usize {
    statuses.iter().filter(|x| **x == s).count()
}

/// Start a streaming request for `model` on `gw` as `key`, in a thread that keeps reading
/// it (a client that goes away would end its stream and free what it holds); returns once
/// its head came with 200 (it was admitted: its slot and reservation are held).
pub fn stream_in_background(gw: &Gw, key: &str, model: &str) {
    let url = gw.url("/v1/chat/completions");
    let body = chat_body(model, "go", true);
    let auth = format!("Bearer {key}");
    let (head, headed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = agent()
            .post(&url)
            .set("authorization", &auth)
            .send_string(&body);
        let _ = head.send(r.as_ref().map(|r| r.status()).unwrap_or(0));
        if let Ok(r) = r {
            let _ = std::io::copy(&mut r.into_reader(), &mut std::io::sink());
        }
    });
    let status = headed
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream started");
    assert_eq!(status, 200, "{model} was admitted");
}
