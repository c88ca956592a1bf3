//! Shared limits on a real three-node Redis Cluster: counters of unrelated consumers,
//! models and deployments live on different nodes, and an admission whose counters span
//! several slots stays exact (one call per slot, compensation on a later refusal), also
//! when a slot moves under a running gateway.

mod common;
use common::redis::{Redis, RedisCluster};
use common::*;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-secret";

/// A config on `cluster` with `consumers`, `providers` and `models` (YAML flow lists).
fn yaml(cluster: &RedisCluster, consumers: &str, providers: &str, models: &str) -> String {
    format!(
        r#"
server: {{threads: 2}}
admin: {{key: {ADMIN}}}
limits:
  policy: redis-cluster
  redis: {{nodes: {seeds}, timeout: 500ms}}
  lease_ttl: 60s
consumers: {consumers}
providers: {providers}
models: {models}
"#,
        seeds = cluster.seeds_yaml()
    )
}

/// The keys each node holds.
fn keys_by_node(cluster: &RedisCluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .map(|n| n.cmd(&["KEYS", "*"]).unwrap_or_default())
        .collect()
}

/// The integer answer of `args` from the node that owns the key (the others answer MOVED).
fn owner_int(cluster: &RedisCluster, args: &[&str]) -> i64 {
    cluster
        .nodes
        .iter()
        .filter_map(|n: &Redis| n.cmd(args))
        .find_map(|r| match r.as_bytes().first() {
            // An integer, or a bulk string holding one (GET).
            Some(b':') => r[1..].trim().parse().ok(),
            Some(b'$') => r.lines().nth(1).and_then(|v| v.trim().parse().ok()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no node answered {args:?} with an integer"))
}

/// Poll `f` until it holds or 3 s pass.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Six consumers (keys `sk-c0` … `sk-c5`) with a window of 10 each, behind one model `m`
/// with `model_limits` (a YAML flow list): every request needs the consumer's slot and
/// the model's. Without quota leases, so counters read back exactly (a counter then also
/// holds the units leased and not yet spent; tests/leases_redis.rs tests those).
fn six_consumers(cluster: &RedisCluster, model_limits: &str) -> String {
    let consumers: Vec<String> = (0..6)
        .map(|i| {
            format!("{{name: c{i}, keys: [sk-c{i}], limits: [{{name: rpm, count: {{count: 10, time_window: 60s}}}}]}}")
        })
        .collect();
    let cfg = yaml(
        cluster,
        &format!("[{}]", consumers.join(", ")),
        "[{name: mock, kind: mock}]",
        &format!("[{{name: m, deployments: [{{provider: mock}}], limits: {model_limits}}}]"),
    );
    cfg.replace("timeout: 500ms}", "timeout: 500ms, quota_leases: false}")
}

const SIX_KEYS: [&str; 6] = ["sk-c0", "sk-c1", "sk-c2", "sk-c3", "sk-c4", "sk-c5"];

#[test]
fn counters_spread_over_the_nodes_and_stay_exact_across_two_gateways() {
    let cluster = RedisCluster::start();
    let cfg = six_consumers(
        &cluster,
        "[{name: rpm, count: {count: 1000, time_window: 60s}}, {name: c, conn: {conn: 50}}, {name: tpm, tokens: {limit: 1000000, time_window: 60s}}]",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    let keys = SIX_KEYS;
    let statuses = burst_as(&[&a, &b], &keys, "m", 6 * 25, 8);
    assert_eq!(count(&statuses, 200), 60, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 90);
    // The model's window counted every admitted request once.
    assert_eq!(
        owner_int(
            &cluster,
            &[
                "GET",
                "{ai-rate-limiter:model:m}plugin-limit-count:v1:model:m/rpm"
            ]
        ),
        60
    );
    // Each entity's counters share a slot; the entities use more than one node.
    let held = keys_by_node(&cluster);
    let busy = held
        .iter()
        .filter(|k| k.contains("ai-rate-limiter:"))
        .count();
    assert!(busy >= 2, "counters all on one node: {held:?}");
    assert!(held
        .concat()
        .contains("{ai-rate-limiter:consumer:c3}plugin-limit-count:v1:consumer:c3/rpm"));
    // Every lease came back (release calls are sent per slot).
    eventually("conn leases released", || {
        owner_int(
            &cluster,
            &["ZCARD", "{ai-rate-limiter:model:m}limit_conn:model:m/c"],
        ) == 0
    });
    // The status page reads usage from the owning nodes.
    let json = get(&a.admin_url("/status.json"), Some(ADMIN)).json();
    let limits = json["models"][0]["limits"].to_string();
    assert!(limits.contains(r#""used":60.0"#), "{limits}");
}

#[test]
fn a_refusal_on_a_later_slot_gives_back_what_the_earlier_slots_took() {
    let cluster = RedisCluster::start();
    // The model's slot first (conn, tokens), then the consumer's count refuses: the model's
    // only concurrency slot and its token reservation must come back at once, not after
    // the 60 s lease. Consumer `a`'s counters share a node with the model's (one atomic
    // call over two slots); consumer `b`'s live on another node (two calls, and the
    // first one's lease and reservation given back by the gateway).
    let cfg = yaml(
        &cluster,
        "[{name: a, keys: [sk-a], limits: [{name: rpm, count: {count: 3, time_window: 60s}}]}, {name: b, keys: [sk-b], limits: [{name: rpm, count: {count: 3, time_window: 60s}}]}, {name: free, keys: [sk-free]}]",
        "[{name: mock, kind: mock}]",
        "[{name: m, deployments: [{provider: mock}], limits: [{name: c, conn: {conn: 1}}, {name: tpm, tokens: {limit: 100000, time_window: 60s}}]}]",
    );
    let gw = Gw::start(&cfg);
    let chat = |key: &str| {
        post(
            &gw.url("/v1/chat/completions"),
            Some(key),
            &chat_body("m", "hi", false),
        )
    };
    let conn = "{ai-rate-limiter:model:m}limit_conn:model:m/c";
    let reservations = "{ai-rate-limiter:model:m}plugin-ai-rate-limiting:v1:model:m/tpm:r";
    let tokens = "{ai-rate-limiter:model:m}plugin-ai-rate-limiting:v1:model:m/tpm";
    let given_back = || {
        owner_int(&cluster, &["ZCARD", conn]) == 0
            && owner_int(&cluster, &["ZCARD", reservations]) == 0
    };
    let admit_calls = || {
        metric_sum(
            &gw.metrics(),
            "gateway_redis_duration_seconds_count",
            &[("op", "admit")],
        )
    };
    for (consumer, calls_per_request) in [("a", 1.0), ("b", 2.0)] {
        let key = format!("sk-{consumer}");
        let before = admit_calls();
        for i in 0..3 {
            let r = chat(&key);
            assert_eq!(r.status, 200, "{consumer}, request {i}: {}", r.body);
            // The client has its answer before the gateway's release lands in Redis.
            eventually("an admitted request's lease given back", given_back);
        }
        for _ in 0..5 {
            let r = chat(&key);
            assert_eq!(r.status, 429, "{}", r.body);
            assert!(
                r.body.contains(&format!("consumer:{consumer}/rpm")),
                "{}",
                r.body
            );
        }
        assert_eq!(
            admit_calls() - before,
            8.0 * calls_per_request,
            "{consumer}"
        );
        eventually(
            "the refused requests' lease and reservations given back",
            given_back,
        );
        // The running sum of reservations is back to zero too.
        let r = cluster
            .nodes
            .iter()
            .filter_map(|n| n.cmd(&["HGET", tokens, "r"]))
            .find(|r| r.starts_with('$'))
            .unwrap_or_default();
        assert!(r.ends_with("\r\n0\r\n"), "r = {r:?}");
        // Another consumer gets the model's one slot at once.
        assert_eq!(chat("sk-free").status, 200);
        eventually("the free consumer's lease given back", given_back);
    }
}

#[test]
fn scripts_change_nothing_when_a_key_is_on_another_node() {
    // A stale cluster map: the gateway sends keys of two nodes in one call. admit.lua and
    // release.lua probe every key first and answer -1 without writing anything.
    let cluster = RedisCluster::start();
    let (here, there) = ("{b}here", "{a}there"); // slots 3300 and 15495: nodes 1 and 3
    let admit = concat!(
        include_str!("../lua-compat/common.lua"),
        include_str!("../lua-compat/admit.lua")
    );
    let release = concat!(
        include_str!("../lua-compat/common.lua"),
        include_str!("../lua-compat/release.lua")
    );
    let node = &cluster.nodes[0];
    // One admission of one group of two count checks; KEYS holds the first key, all four
    // keys follow.
    let out = node
        .cmd(&[
            "EVAL", admit, "1", here, "1", "lease", "1000", "1", "1", "2", "3", "5", "60000", "0",
            "-1", "0", "3", "5", "60000", "0", "-1", "0", here, here, there, there,
        ])
        .unwrap();
    assert_eq!(out, "*1\r\n:-1\r\n", "{out}");
    let out = node
        .cmd(&[
            "EVAL", release, "1", here, "2", "2", "m", "0", "0", "2", "m", "0", "0", here, here,
            there, there,
        ])
        .unwrap();
    assert_eq!(out, ":-1\r\n", "{out}");
    let refresh = concat!(
        include_str!("../lua-compat/common.lua"),
        include_str!("../lua-compat/refresh.lua")
    );
    let out = node
        .cmd(&[
            "EVAL", refresh, "1", here, "1000", "2", "m", "m", here, there,
        ])
        .unwrap();
    assert_eq!(out, ":-1\r\n", "{out}");
    let keys = keys_by_node(&cluster).concat();
    assert!(!keys.contains("here") && !keys.contains("there"), "{keys}");
    // Keys of two slots on one node are served.
    let out = node
        .cmd(&[
            "EVAL",
            admit,
            "1",
            here,
            "1",
            "lease",
            "1000",
            "1",
            "1",
            "2",
            "3",
            "5",
            "60000",
            "0",
            "-1",
            "0",
            "3",
            "5",
            "60000",
            "0",
            "-1",
            "0",
            here,
            here,
            "{f}same-node",
            "{f}same-node",
        ])
        .unwrap();
    // Its length, then: no alternative, no delay, group admitted (… and Redis time last).
    assert!(out.starts_with("*13\r\n:12\r\n:0\r\n:0\r\n:1\r\n"), "{out}");
    // Leases in sets of two slots on one node are extended, and only those that exist.
    let (a, b) = ("{b}conn", "{f}conn");
    for zset in [a, b] {
        node.cmd(&["ZADD", zset, "1", "lease"]).unwrap();
    }
    let out = node
        .cmd(&[
            "EVAL", refresh, "1", a, "60000", "3", "lease", "lease", "gone", a, b, b,
        ])
        .unwrap();
    assert_eq!(out, ":1\r\n", "{out}");
    for zset in [a, b] {
        let score: f64 = values(&node.cmd(&["ZSCORE", zset, "lease"]).unwrap())[0]
            .parse()
            .unwrap();
        assert!(score > 1e12, "{zset}: {score}");
        let ttl: i64 = node.cmd(&["PTTL", zset]).unwrap()[1..]
            .trim()
            .parse()
            .unwrap();
        assert!(ttl > 50_000, "{zset}: {ttl}");
    }
    assert_eq!(node.cmd(&["ZCARD", b]).unwrap(), ":1\r\n");
    lease_units_go_back_per_node(node);
}

/// lease_return.lua on a node: -1 (nothing changed) when a counter lives on another node;
/// the units of counters of two slots it owns go back in one call.
fn lease_units_go_back_per_node(node: &Redis) {
    let lease_return = concat!(
        include_str!("../lua-compat/common.lua"),
        include_str!("../lua-compat/lease_return.lua")
    );
    let (a, b, there) = ("{b}count", "{f}count", "{a}count");
    let mut ends = Vec::new();
    for k in [a, b] {
        node.cmd(&["SET", k, "5", "PX", "60000"]).unwrap();
        let now = values(&node.cmd(&["TIME"]).unwrap());
        let ms = now[0].parse::<u64>().unwrap() * 1000 + now[1].parse::<u64>().unwrap() / 1000;
        let pttl: u64 = node.cmd(&["PTTL", k]).unwrap()[1..].trim().parse().unwrap();
        ends.push((ms + pttl).to_string());
    }
    // One call for `a` and `second`: each counter's end, then 3 units back.
    let give_back = |second: &str| {
        let args = ["1", a, "2", &ends[0], "3", &ends[1], "3", a, second];
        node.cmd(&[&["EVAL", lease_return][..], &args].concat())
            .unwrap()
    };
    let out = give_back(there);
    assert_eq!(out, ":-1\r\n", "{out}");
    assert_eq!(node.cmd(&["GET", a]).unwrap(), "$1\r\n5\r\n");
    let out = give_back(b);
    assert_eq!(out, ":6\r\n", "{out}");
    for k in [a, b] {
        assert_eq!(node.cmd(&["GET", k]).unwrap(), "$1\r\n2\r\n", "{k}");
    }
}

#[test]
fn alternatives_on_other_slots_admit_exactly_their_windows() {
    let cluster = RedisCluster::start();
    // Two deployments (two slots) of 10 requests each behind a consumer limit (a third
    // slot): 40 requests through two gateways get exactly 20 answers.
    let cfg = yaml(
        &cluster,
        "[{name: a, keys: [sk-a], limits: [{name: rpm, count: {count: 100, time_window: 60s}}]}]",
        "[{name: one, kind: mock}, {name: two, kind: mock}]",
        "[{name: m, deployments: [{provider: one, limits: [{name: rpm, count: {count: 10, time_window: 60s}}]}, {provider: two, limits: [{name: rpm, count: {count: 10, time_window: 60s}}]}]}]",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    let statuses = burst_as(&[&a, &b], &["sk-a"], "m", 40, 8);
    assert_eq!(count(&statuses, 200), 20, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 20);
}

/// The values of a RESP reply (the lines that are not a type or length header).
fn values(reply: &str) -> Vec<String> {
    reply
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .map(|l| l.trim_start_matches([':', '+']).to_string())
        .collect()
}

/// Move `key`'s slot, with its keys, from the node that owns it to the next one (as
/// `redis-cli --cluster reshard` does); the owner's index before and after.
fn move_slot(cluster: &RedisCluster, key: &str) -> (usize, usize) {
    let n = &cluster.nodes;
    let slot = values(&n[0].cmd(&["CLUSTER", "KEYSLOT", key]).unwrap())[0].clone();
    let ids: Vec<String> = n
        .iter()
        .map(|r| values(&r.cmd(&["CLUSTER", "MYID"]).unwrap())[0].clone())
        .collect();
    let src = (0..3)
        .find(|&i| {
            n[i].cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])
                .is_some_and(|r| r.starts_with(':') && r.trim() != ":0")
        })
        .expect("a node holds the key");
    let dst = (src + 1) % 3;
    let ok = |r: Option<String>| assert!(r.as_deref().is_some_and(|r| r.starts_with('+')), "{r:?}");
    ok(n[dst].cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &ids[src]]));
    ok(n[src].cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &ids[dst]]));
    let keys = values(
        &n[src]
            .cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
            .unwrap(),
    );
    let port = n[dst].port.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    ok(n[src].cmd(&migrate));
    for r in n {
        ok(r.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &ids[dst]]));
    }
    (src, dst)
}

#[test]
fn a_slot_moved_under_a_running_gateway_keeps_its_counts_exact() {
    // A gateway's map of the cluster goes stale when a slot moves (it reads it again every
    // lease_ttl / 3, here 20 s, or when a call says so): admissions that reach the old
    // owner, or a node where another of their keys no longer lives, are redirected or
    // retried slot by slot, and every window still admits exactly its count.
    let cluster = RedisCluster::start();
    let cfg = six_consumers(
        &cluster,
        "[{name: rpm, count: {count: 1000, time_window: 60s}}]",
    );
    let a = Gw::start(&cfg);
    let keys = SIX_KEYS;
    let first = burst_as(&[&a], &keys, "m", 6 * 3, 4);
    assert_eq!(count(&first, 200), 18, "{first:?}");
    let counter = "{ai-rate-limiter:consumer:c3}plugin-limit-count:v1:consumer:c3/rpm";
    let model = "{ai-rate-limiter:model:m}plugin-limit-count:v1:model:m/rpm";
    let (from, to) = move_slot(&cluster, counter);
    assert!(
        cluster.nodes[to]
            .cmd(&["GET", counter])
            .is_some_and(|r| r.starts_with('$')),
        "moved from node {from} to node {to}"
    );
    let rest = burst_as(&[&a], &keys, "m", 6 * 25, 8);
    assert_eq!(count(&rest, 200), 60 - 18, "{rest:?}");
    assert_eq!(count(&rest, 429), 6 * 25 - 42, "{rest:?}");
    // Every request of c3 counted on the slot's new owner (a refused one too, as APISIX
    // counts), and the model's window every admitted request once.
    assert_eq!(owner_int(&cluster, &["GET", counter]), 3 + 25);
    assert_eq!(owner_int(&cluster, &["GET", model]), 60);
}
