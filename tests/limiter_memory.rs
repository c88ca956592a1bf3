//! Limiter state under a flood of client-chosen keys: a limit keyed by `$http_x_user`
//! receives a sustained stream of distinct 1 KiB values. The process must reach a memory
//! plateau (state is dropped when it can no longer matter, capped by
//! `limits.local_max_keys`, and long values are stored as digests), with the local policy
//! and as the degraded fallback of the Redis policy.

mod common;
use common::redis::Redis;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "sk-flood";
const CAP: usize = 4000;

fn yaml(limits: &str) -> String {
    format!(
        r#"
server: {{threads: 2}}
limits:
  local_max_keys: {CAP}
  {limits}
consumers:
  - name: c
    keys: ["{KEY}"]
    limits: [{{name: per-user, key: $http_x_user, count: {{count: 5, time_window: 300s}}}}]
providers: [{{name: mock, kind: mock, mock: {{completion_tokens: 1}}}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
"#
    )
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// One keep-alive connection sending chat requests with a fresh 1 KiB `X-User` each;
/// returns how many were answered 200.
fn flood(port: u16, thread: usize, sent: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> usize {
    let body = chat_body("m", "hi", false);
    let mut ok = 0;
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let r = conn.get_or_insert_with(|| {
            BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap())
        });
        i += 1;
        let user = format!("{thread:02}-{i:012}-{}", "u".repeat(1000));
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n\
             x-user: {user}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if r.get_mut().write_all(req.as_bytes()).is_err() {
            conn = None;
            continue;
        }
        // Status line, headers, then a content-length body.
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            conn = None;
            continue;
        }
        if line.contains(" 200 ") {
            ok += 1;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        r.read_exact(&mut buf).unwrap();
        sent.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Three phases of distinct keys (8 s, or until 1.5 × the cap were sent); returns the RSS added by each (KiB) and requests sent.
fn phases(gw: &Gw) -> (Vec<i64>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (sent, stop, port) = (sent.clone(), stop.clone(), gw.port);
            std::thread::spawn(move || flood(port, t, sent, stop))
        })
        .collect();
    let mut last = rss_kib(gw.pid());
    let mut added = Vec::new();
    let n: usize = std::env::var("PHASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for _ in 0..n {
        // 8 s, and on a busy machine longer (up to 60 s): each phase sends at least 1.5 ×
        // the cap of fresh keys, so the flood always overflows the cap.
        let (t, from) = (Instant::now(), sent.load(Ordering::Relaxed));
        while t.elapsed() < Duration::from_secs(8)
            || (sent.load(Ordering::Relaxed) - from < CAP * 3 / 2
                && t.elapsed() < Duration::from_secs(60))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = rss_kib(gw.pid());
        added.push(now as i64 - last as i64);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let ok: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
    let n = sent.load(Ordering::Relaxed);
    assert_eq!(ok, n, "every request with a fresh key is admitted");
    (added, n)
}

fn assert_plateau(gw: &Gw, label: &str) {
    assert_rss_plateau(gw, label);
    let keys = gw.metric("gateway_limiter_local_keys", &[]);
    assert!(
        keys <= CAP as f64 && keys > 0.0,
        "{label}: {keys} keys held"
    );
    assert!(
        gw.metric("gateway_limiter_local_evictions_total", &[]) > 0.0,
        "{label}: the cap evicted"
    );
}

fn assert_rss_plateau(gw: &Gw, label: &str) {
    let before = rss_kib(gw.pid());
    let (added, sent) = phases(gw);
    eprintln!(
        "{label}: RSS {before} KiB, added per 8 s phase {added:?} KiB, {sent} requests with distinct 1 KiB keys"
    );
    assert!(sent > 3 * CAP, "the flood must overflow the cap: {sent}");
    let first = added[0].max(0);
    for (i, a) in added.iter().enumerate().skip(1) {
        // Far less than phase 1, with allocator noise allowed: 4 MiB (without bounds each
        // phase adds ~1.3 KiB per request, tens of MiB).
        assert!(
            *a <= first / 2 || *a <= 4096,
            "{label}: phase {} added {a} KiB after phase 1 added {first} KiB",
            i + 1
        );
    }
}

#[test]
fn distinct_keys_reach_a_memory_plateau_with_the_local_policy() {
    let gw = Gw::start(&yaml("policy: local"));
    assert_plateau(&gw, "local");
}

#[test]
fn distinct_keys_reach_a_memory_plateau_in_the_degraded_fallback() {
    let mut redis = Redis::start();
    let gw = Gw::start(&yaml(&format!(
        "policy: redis\n  redis: {{url: \"{}\", timeout: 200ms}}\n  allow_degradation: true",
        redis.url()
    )));
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric("gateway_limiter_degraded", &[]) != 1.0 {
        assert!(Instant::now() < deadline, "not degraded");
        // A request notices the outage.
        post(
            &gw.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("m", "hi", false),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_plateau(&gw, "redis, degraded");
}

#[test]
fn a_window_that_ends_gives_its_keys_back() {
    // Short windows: the keys of a flood are dropped once their windows end, on the hot
    // path of later requests, with no cap reached.
    let cfg = yaml("policy: local").replace("time_window: 300s", "time_window: 1s");
    let gw = Gw::start(&cfg);
    let body = chat_body("m", "hi", false);
    let a = agent();
    for i in 0..300 {
        let r = a
            .post(&gw.url("/v1/chat/completions"))
            .set("authorization", &format!("Bearer {KEY}"))
            .set("x-user", &format!("user-{i}"))
            .send_string(&body)
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(gw.metric("gateway_limiter_local_keys", &[]) >= 300.0);
    std::thread::sleep(Duration::from_millis(1500));
    // Later traffic on one key tidies every shard a little per request (what these
    // requests are answered does not matter here: 200, then 429 past 5 a second).
    let mut odd = Vec::new();
    for _ in 0..200 {
        let r = a
            .post(&gw.url("/v1/chat/completions"))
            .set("authorization", &format!("Bearer {KEY}"))
            .set("x-user", "steady")
            .send_string(&body);
        match r {
            Ok(_) | Err(ureq::Error::Status(429, _)) => {}
            Err(ureq::Error::Status(s, r)) => {
                odd.push(format!("{s}: {}", r.into_string().unwrap_or_default()))
            }
            Err(e) => odd.push(e.to_string()),
        }
    }
    if !odd.is_empty() {
        eprintln!("unexpected answers: {odd:?}\n{}", gw.logs());
    }
    assert!(odd.len() < 20, "{odd:?}");
    let keys = gw.metric("gateway_limiter_local_keys", &[]);
    assert!(keys <= 2.0, "ended windows were dropped: {keys} left");
    assert_eq!(gw.metric("gateway_limiter_local_evictions_total", &[]), 0.0);
}

#[test]
fn distinct_keys_reach_a_memory_plateau_with_synced_counts() {
    // sync_interval: count rules decided from local views; past local_max_keys views, a
    // new counter is decided in Redis instead of getting one.
    let redis = Redis::start();
    let gw = Gw::start(&yaml(&format!(
        "policy: redis\n  redis: {{url: \"{}\"}}\n  sync_interval: 1s",
        redis.url()
    )));
    assert_rss_plateau(&gw, "redis, sync_interval");
    // The views stay at the cap (a few over it at most, admissions in flight).
    let views = gw.metric("gateway_limiter_local_keys", &[]);
    assert!(
        views <= (CAP + 16) as f64 && views >= CAP as f64 / 2.0,
        "{views} views held"
    );
}
