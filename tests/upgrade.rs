//! Zero-downtime restart: a new gateway started with `run --upgrade` takes over the
//! listening sockets when the old one gets SIGQUIT, while clients keep sending requests.
//! No request fails across the hand-over, and with the Redis policy the limiter's state
//! carries on (the consumer's window keeps counting instead of starting again).

mod common;
use common::redis::Redis;
use common::*;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "sk-up";

/// A gateway process, killed when dropped: a failed assertion leaves none behind.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &std::path::Path, log: &std::path::Path, upgrade: bool) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"));
    cmd.arg("run").arg("--config").arg(config);
    if upgrade {
        cmd.arg("--upgrade");
    }
    // The log (stdout) and start-up errors (stderr) in one file.
    Proc(
        cmd.stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("gateway binary"),
    )
}

/// Wait until the gateway answers `/ready`; false if it exited first.
fn wait_ready(child: &mut Child, metrics_port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent()
        .get(&format!("http://127.0.0.1:{metrics_port}/ready"))
        .call()
        .is_err()
    {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "gateway not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Start a gateway on `config`, written by `text` for a pair of free ports (proxy,
/// metrics). The ports are in the config: if one was taken before the gateway bound it
/// (it exits saying so), the config is written again with fresh ports.
fn start_on_free_ports(
    config: &std::path::Path,
    log: &std::path::Path,
    text: impl Fn(u16, u16) -> String,
) -> (Proc, u16, u16) {
    (0..5)
        .find_map(|_| {
            let (port, metrics_port) = (free_port(), free_port());
            std::fs::write(config, text(port, metrics_port)).unwrap();
            let from = std::fs::read_to_string(log).unwrap_or_default().len();
            let mut old = spawn(config, log, false);
            if wait_ready(&mut old, metrics_port) {
                return Some((old, port, metrics_port));
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(text[from..].contains("in use"), "gateway exited:\n{text}");
            None
        })
        .expect("free ports within 5 tries")
}

/// The gateway's config on these ports.
fn config_text(dir: &tempfile::TempDir, redis: &Redis, port: u16, metrics_port: u16) -> String {
    format!(
        r#"
server: {{listen: "127.0.0.1:{port}", metrics_listen: "127.0.0.1:{metrics_port}", threads: 2,
          shutdown_grace_period: 5s, upgrade_sock: "{sock}"}}
consumers: [{{name: c, keys: ["{KEY}"], limits: [{{name: window, count: {{count: 100000, time_window: 600s}}}}]}}]
providers: [{{name: mock, kind: mock, mock: {{latency_ms: 10}}}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
limits: {{policy: redis, redis: {{url: "{redis}"}}}}
batch: {{enabled: false}}
"#,
        sock = dir.path().join("upgrade.sock").display(),
        redis = redis.url()
    )
}

#[test]
fn graceful_upgrade_hands_over_without_a_failed_request_and_keeps_limiter_state() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    let log = dir.path().join("gateway.log");
    let (mut old, port, metrics_port) = start_on_free_ports(&config, &log, |port, metrics_port| {
        config_text(&dir, &redis, port, metrics_port)
    });

    // Clients: a fresh connection per request, so every request meets whichever process
    // is accepting at that moment.
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Result<u64, String>>>> = Arc::default();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, results, url) = (stop.clone(), results.clone(), url.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .post(&url)
                        .set("authorization", &format!("Bearer {KEY}"))
                        .set("content-type", "application/json")
                        .send_string(&chat_body("m", "hi", false));
                    let outcome = match r {
                        Ok(r) => r
                            .header("x-ratelimit-remaining-requests")
                            .and_then(|v| v.parse::<u64>().ok())
                            .ok_or_else(|| "no quota header".to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    results.lock().unwrap().push(outcome);
                }
            })
        })
        .collect();

    let answered = || results.lock().unwrap().len();
    wait_until("20 answers from the old process", || answered() >= 20);
    let before_upgrade = answered();
    let sock = dir.path().join("upgrade.sock");
    let mut new = spawn(&config, &log, true);
    // The new process waits for the listening sockets on the upgrade socket.
    wait_until("the new process's upgrade socket", || sock.exists());
    signal_child(&old, libc::SIGQUIT);
    let status = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = old.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the old process did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let handed_over = answered();
    wait_until("20 answers after the hand-over", || {
        answered() >= handed_over + 20
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let served_by_new = agent()
        .get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .call()
        .map(|r| metric_sum(&r.into_string().unwrap(), "gateway_requests_total", &[]))
        .unwrap_or(0.0);
    // A graceful stop: the new process gives back the quota units it leased and did not
    // spend, so Redis's counter can be compared with what clients saw admitted.
    signal_child(&new, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while new.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the new process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }

    let results = results.lock().unwrap();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "{} requests ({before_upgrade} before the upgrade), {} failed; old exited with {status}; \
         the new process served {served_by_new}",
        results.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed across the hand-over: {failures:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(results.len() >= 100, "too few requests: {}", results.len());
    assert!(served_by_new > 0.0, "the new process served requests");
    // The window kept counting across processes: every admitted request is in it once
    // (no process started a window of its own, and no leased unit was left counted).
    assert_eq!(
        redis.count_counter(),
        results.len() as u64,
        "one shared window"
    );
    // No quota header claimed more room than the window had.
    let lowest = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .min()
        .unwrap();
    assert!(
        100_000 - lowest >= results.len() as u64 - 4,
        "headers: lowest {lowest}"
    );
}

/// A socket in a directory any user can write to (no sticky bit) could be anyone's: the
/// old process does not hand its listeners to it, logs why, and keeps serving.
#[test]
fn an_upgrade_socket_another_user_could_have_placed_gets_no_listeners() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = shared.join("upgrade.sock");
    let (config, log) = (
        dir.path().join("gateway.yaml"),
        dir.path().join("gateway.log"),
    );
    let (mut old, port, metrics_port) = start_on_free_ports(&config, &log, |port, metrics_port| {
        format!(
            r#"
server: {{listen: "127.0.0.1:{port}", metrics_listen: "127.0.0.1:{metrics_port}", threads: 1,
          shutdown_grace_period: 2s, upgrade_sock: "{sock}"}}
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers: [{{name: mock, kind: mock}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
batch: {{enabled: false}}
"#,
            sock = sock.display()
        )
    });

    // What another user would bind there.
    let squatter = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    squatter.set_nonblocking(true).unwrap();
    signal_child(&old, libc::SIGQUIT);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the refusal in the log", || {
        logged().contains("the listening sockets stay with this process")
    });
    assert!(
        logged().contains("lets another user replace the socket"),
        "{}",
        logged()
    );
    assert!(
        matches!(squatter.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the old process connected to the squatter's socket"
    );
    assert!(old.try_wait().unwrap().is_none(), "the old process exited");
    let answer = agent()
        .post(&format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .set("authorization", &format!("Bearer {KEY}"))
        .send_string(&chat_body("m", "hi", false));
    assert_eq!(answer.map(|r| r.status()).ok(), Some(200), "still serving");
    assert!(agent()
        .get(&format!("http://127.0.0.1:{metrics_port}/ready"))
        .call()
        .is_ok());
    signal_child(&old, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while old.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the old process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
