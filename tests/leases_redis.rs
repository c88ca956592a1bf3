//! Quota leases (src/limits/lease.rs) against a real redis-server: eight gateways spending
//! slices of one shared window admit exactly its count, with far fewer Redis calls than
//! requests; a gateway that shuts down gives its unused units back to the window.

mod common;
use common::redis::Redis;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "sk-lease";

fn yaml(redis: &Redis, count: u64) -> String {
    format!(
        r#"
server: {{threads: 1}}
logging: {{access_log: false}}
limits:
  policy: redis
  redis: {{url: "{url}", timeout: 300ms}}
  lease_ttl: 1s
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers: [{{name: mock, kind: mock}}]
models:
  - {{name: m, deployments: [{{provider: mock}}], limits: [{{name: rpm, count: {{count: {count}, time_window: 60s}}}}]}}
"#,
        url = redis.url()
    )
}

/// Requests from `threads` threads, round robin over `gws`, for `secs`; the statuses.
fn traffic(gws: &[&Gw], threads: usize, secs: f64) -> Vec<u16> {
    let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (urls, stop) = (urls.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let body = chat_body("m", "hi", false);
                let mut out = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    out.push(post_on(&agent, &urls[i % urls.len()], Some(KEY), &body).status);
                    i += 1;
                }
                out
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn total(gws: &[&Gw], name: &str, labels: &[(&str, &str)]) -> f64 {
    gws.iter().map(|g| g.metric(name, labels)).sum()
}

#[test]
fn eight_gateways_spending_leases_admit_exactly_the_window() {
    let redis = Redis::start();
    // Large enough that the window lasts past the first second (leases are sized from the
    // previous second's traffic), small enough to be reached within the run.
    let limit = 2500;
    let cfg = yaml(&redis, limit);
    let gws: Vec<Gw> = (0..8).map(|_| Gw::start(&cfg)).collect();
    let all: Vec<&Gw> = gws.iter().collect();
    let started = Instant::now();
    let mut statuses = Vec::new();
    // Until the window is spent, then two more seconds in which every gateway keeps
    // getting requests (so every unit leased is spent or refused by its holder).
    while count(&statuses, 200) < limit as usize && started.elapsed() < Duration::from_secs(40) {
        statuses.extend(traffic(&all, 16, 1.0));
    }
    statuses.extend(traffic(&all, 16, 2.0));
    let admitted = count(&statuses, 200);
    assert_eq!(
        admitted,
        limit as usize,
        "{} requests, {} refused",
        statuses.len(),
        count(&statuses, 429)
    );
    assert_eq!(
        count(&statuses, 200) + count(&statuses, 429),
        statuses.len()
    );
    let leased = total(&all, "gateway_limiter_leased_total", &[]);
    let calls = total(
        &all,
        "gateway_redis_duration_seconds_count",
        &[("op", "admit")],
    );
    eprintln!(
        "{} requests in {:.1} s: {admitted} admitted, {leased} from leases, {calls} admission calls",
        statuses.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        leased >= 0.2 * limit as f64,
        "{leased} admissions from leases"
    );
    // The counter in Redis is exactly what was admitted and what is still leased (nothing
    // once every holder has spent its units).
    for g in &all {
        g.wait_metric("gateway_limiter_lease_units", &[], 0.0);
    }
}

/// The fixed-window counter of rule `rpm` in `redis`.
fn counter(redis: &Redis) -> u64 {
    let keys = redis.cmd(&["KEYS", "*plugin-limit-count:v1:*"]).unwrap();
    let key = keys
        .lines()
        .find(|l| l.contains("plugin-limit-count"))
        .expect("a counter")
        .to_string();
    let v = redis.cmd(&["GET", &key]).unwrap();
    v.lines().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn a_gateway_that_stops_gives_its_unused_units_back() {
    let redis = Redis::start();
    let mut gw = Gw::start(&yaml(&redis, 1_000_000));
    let mut statuses = traffic(&[&gw], 4, 2.5);
    // The last grant may just have been spent: a request more takes the next one (the
    // counter is still hot).
    for _ in 0..20 {
        if gw.metric("gateway_limiter_lease_units", &[]) > 0.0 {
            break;
        }
        statuses.push(
            post(
                &gw.url("/v1/chat/completions"),
                Some(KEY),
                &chat_body("m", "hi", false),
            )
            .status,
        );
    }
    assert_eq!(count(&statuses, 200), statuses.len());
    let held = gw.metric("gateway_limiter_lease_units", &[]);
    assert!(
        held > 0.0,
        "a hot counter holds a lease ({} requests)",
        statuses.len()
    );
    // Counted in Redis: every admitted request and the units still held.
    assert!(counter(&redis) > statuses.len() as u64);
    gw.signal(15); // SIGTERM: graceful shutdown
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some());
    assert_eq!(counter(&redis), statuses.len() as u64);
}
