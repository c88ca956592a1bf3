//! Shared limits: two real gateway processes and one real `redis-server`.
//! Exact counts across instances, concurrency slots that never exceed the limit and free
//! themselves when a gateway is killed, and Redis outages with and without degradation.

mod common;
use common::redis::Redis;
use common::upstream::CountingUpstream;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "sk-shared";

/// A gateway config sharing its limits through `redis`.
fn yaml(redis: &Redis, limits_extra: &str, providers: &str, model_limits: &str) -> String {
    format!(
        r#"
server: {{threads: 2}}
limits:
  policy: redis
  redis: {{url: "{url}", timeout: 300ms}}
  lease_ttl: 1s
  {limits_extra}
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: mock, kind: mock}}
  - {{name: slow, kind: mock, mock: {{tokens_per_second: 4, completion_tokens: 400}}}}
{providers}
models:
  - {{name: m, deployments: [{{provider: mock}}], limits: {model_limits}}}
  - {{name: s, deployments: [{{provider: slow}}], limits: {model_limits}}}
"#,
        url = redis.url()
    )
}

fn chat(gw: &Gw, model: &str) -> Resp {
    post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body(model, "hi", false),
    )
}

/// Run `n` requests from `threads` threads, alternating between the gateways; returns
/// the statuses.
fn burst(gws: &[&Gw], model: &str, n: usize, threads: usize) -> Vec<u16> {
    burst_as(gws, &[KEY], model, n, threads)
}

#[test]
fn limit_count_is_exact_across_two_gateways() {
    let redis = Redis::start();
    let cfg = yaml(
        &redis,
        "",
        "",
        "[{name: rpm, count: {count: 100, time_window: 60s}}]",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    let statuses = burst(&[&a, &b], "m", 300, 8);
    assert_eq!(count(&statuses, 200), 100, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 200);
    // At most one admission round trip per request on each gateway (admissions that
    // arrive while a call is in flight share the next one).
    for gw in [&a, &b] {
        let admits = gw.metric("gateway_redis_duration_seconds_count", &[("op", "admit")]);
        let requests = gw.metric("gateway_requests_total", &[]);
        assert!(
            admits >= 1.0 && admits <= requests,
            "{admits} EVALSHA for {requests} requests"
        );
    }
    let left: u64 = chat(&a, "m")
        .header("x-ratelimit-remaining-requests")
        .map_or(0, |v| v.parse().unwrap());
    assert_eq!(left, 0);
}

#[test]
fn limit_conn_holds_across_two_gateways() {
    let redis = Redis::start();
    let up = CountingUpstream::start(Duration::from_millis(300));
    let providers = format!(
        "  - {{name: counted, kind: openai-compatible, base_url: \"{}\", api_key: sk-up}}",
        up.base_url()
    );
    let cfg = yaml(&redis, "", &providers, "[]").replace(
        "models:\n",
        "models:\n  - {name: c, deployments: [{provider: counted}], limits: [{name: five, conn: {conn: 5}}]}\n",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    let statuses = burst(&[&a, &b], "c", 60, 12);
    assert!(
        up.max_in_flight() <= 5,
        "{} requests ran at once upstream",
        up.max_in_flight()
    );
    assert_eq!(up.max_in_flight(), 5, "the limit is used fully");
    assert_eq!(count(&statuses, 200) + count(&statuses, 429), 60);
    assert_eq!(up.total(), count(&statuses, 200));
    // Every slot is released (well before the 1 s lease could expire): the next requests
    // find all five free.
    wait_until("the conn slots released in Redis", || {
        redis.cmd(&["ZCARD", "limit_conn:model:c/five"]).as_deref() == Some(":0\r\n")
    });
    let again = burst(&[&a, &b], "c", 5, 5);
    assert_eq!(count(&again, 200), 5, "{again:?}");
}

#[test]
fn killed_gateway_slots_expire_within_the_lease_ttl() {
    let redis = Redis::start();
    let cfg = yaml(&redis, "", "", "[{name: two, conn: {conn: 2}}]");
    let a = Gw::start(&cfg);
    let b = Gw::start(&cfg);
    // Two long streams on A hold both slots (each lasts ~100 s at 4 tokens/s).
    for _ in 0..2 {
        stream_in_background(&a, KEY, "s");
    }
    wait_until("A holding both slots in Redis", || {
        redis.cmd(&["ZCARD", "limit_conn:model:s/two"]).as_deref() == Some(":2\r\n")
    });
    assert_eq!(chat(&b, "s").status, 429, "both slots are held by A");
    // Leases are refreshed while the streams run: after 3 TTLs they are still held.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        chat(&b, "s").status,
        429,
        "running streams keep their slots"
    );
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    loop {
        let r = chat(&b, "m");
        assert!(r.status == 200 || r.status == 429, "{}", r.body);
        if r.status == 200 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "slots of the killed gateway still held after {:?}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let freed = killed.elapsed();
    assert!(
        freed <= Duration::from_millis(1600),
        "freed after {freed:?} (lease_ttl 1s + timeout 300ms)"
    );
}

#[test]
fn counters_expire_no_sooner_and_at_most_twice_as_late_as_they_must() {
    // admit.lua renews a key's expiry only when less than what it needs is left, giving it
    // twice that: a leaky bucket (rate 2/s, burst 0) must live 1.5 s past a request.
    let redis = Redis::start();
    let cfg = yaml(&redis, "", "", "[{name: rate, req: {rate: 2, burst: 0}}]");
    let gw = Gw::start(&cfg);
    let pttl = |key: &str| -> i64 {
        let r = redis.cmd(&["PTTL", key]).unwrap();
        r.trim().trim_start_matches(':').parse().unwrap()
    };
    let bucket = "limit_req:model:m/rate";
    assert_eq!(chat(&gw, "m").status, 200);
    let first = pttl(bucket);
    assert!((1500..=3000).contains(&first), "{first}");
    // A second request within the renewal's margin keeps the expiry (no PEXPIRE).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(chat(&gw, "m").status, 200);
    let second = pttl(bucket);
    assert!(second >= 1500 && second < first, "{first} then {second}");
}

#[test]
fn killed_gateway_token_reservations_expire_within_the_lease_ttl() {
    // admit.lua keeps a running sum of reservations; a killed gateway's reservations are
    // taken off it once their lease expires, when they could change a decision.
    let redis = Redis::start();
    let cfg = format!(
        r#"
server: {{threads: 2}}
limits: {{policy: redis, redis: {{url: "{url}", timeout: 300ms}}, lease_ttl: 1s}}
consumers:
  - {{name: c, keys: ["{KEY}"], limits: [{{name: tpm, tokens: {{limit: 1500, time_window: 60s}}}}]}}
providers:
  - {{name: mock, kind: mock}}
  - {{name: slow, kind: mock, mock: {{tokens_per_second: 4, completion_tokens: 400}}}}
models:
  - {{name: m, deployments: [{{provider: mock}}]}}
  - {{name: s, deployments: [{{provider: slow}}]}}
"#,
        url = redis.url()
    );
    let a = Gw::start(&cfg);
    let b = Gw::start(&cfg);
    // A long stream on A reserves about 1,030 tokens (no max_tokens: 1,024 + the prompt).
    stream_in_background(&a, KEY, "s");
    a.wait_metric("gateway_requests_in_flight", &[], 1.0);
    let big = r#"{"model":"m","max_tokens":600,"messages":[{"role":"user","content":"hi"}]}"#;
    let ask = || post(&b.url("/v1/chat/completions"), Some(KEY), big);
    assert_eq!(
        ask().status,
        429,
        "A's reservation leaves less than 600 tokens"
    );
    // Refreshed while the stream runs.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ask().status, 429, "a running stream keeps its reservation");
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    loop {
        let r = ask();
        assert!(r.status == 200 || r.status == 429, "{}", r.body);
        if r.status == 200 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "the killed gateway's reservation still held after {:?}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A's reservation is gone from the running sum, and every finished request's too.
    let reserved = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "HGET"])
            .arg("plugin-ai-rate-limiting:v1:consumer:c/tpm")
            .arg("r")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while reserved() != "0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reserved(), "0");
}

/// Send requests in a loop until `stop` is set; returns every status seen.
fn background_load(gw: &Gw, stop: Arc<AtomicUsize>) -> std::thread::JoinHandle<Vec<u16>> {
    let url = gw.url("/v1/chat/completions");
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while stop.load(Ordering::SeqCst) == 0 {
            seen.push(post(&url, Some(KEY), &chat_body("m", "hi", false)).status);
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

/// Requests this gateway answered 2xx so far.
fn ok(gw: &Gw) -> f64 {
    gw.metric("gateway_requests_total", &[("status_class", "2xx")])
}

/// Wait until the gateway has answered `n` requests 2xx (the background load is running).
#[track_caller]
fn wait_for_admitted(gw: &Gw, n: f64) {
    wait_until(&format!("{n} requests answered 2xx"), || ok(gw) >= n);
}

#[test]
fn redis_outage_without_degradation_answers_503_then_recovers() {
    let mut redis = Redis::start();
    let cfg = yaml(
        &redis,
        "",
        "",
        "[{name: rpm, count: {count: 100000, time_window: 60s}}]",
    );
    let gw = Gw::start(&cfg);
    assert_eq!(chat(&gw, "m").status, 200);
    assert_eq!(gw.metric("gateway_limiter_degraded", &[]), 0.0);
    let stop = Arc::new(AtomicUsize::new(0));
    let load = background_load(&gw, stop.clone());
    wait_for_admitted(&gw, 5.0);
    redis.stop();
    gw.wait_metric("gateway_limiter_degraded", &[], 1.0);
    let r = chat(&gw, "m");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit store"));
    assert_eq!(gw.metric("gateway_limiter_degraded", &[]), 1.0);
    assert_eq!(get(&gw.admin_url("/ready"), None).status, 503);
    redis.resume();
    let back = Instant::now();
    while chat(&gw, "m").status != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no recovery after Redis returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_admitted(&gw, ok(&gw) + 5.0);
    stop.store(1, Ordering::SeqCst);
    let seen = load.join().unwrap();
    assert!(seen.iter().all(|s| *s == 200 || *s == 503), "{seen:?}");
    assert!(count(&seen, 503) > 0 && count(&seen, 200) > 0);
    assert_eq!(*seen.last().unwrap(), 200, "recovered under load");
    assert_eq!(gw.metric("gateway_limiter_degraded", &[]), 0.0);
    assert_eq!(get(&gw.admin_url("/ready"), None).status, 200);
    assert!(gw.logs().contains("limiter degraded"));
}

#[test]
fn redis_outage_with_degradation_falls_back_to_local_limits() {
    let mut redis = Redis::start();
    let cfg = yaml(
        &redis,
        "allow_degradation: true",
        "",
        "[{name: rpm, count: {count: 1000, time_window: 60s}}]",
    )
    .replace(
        "models:\n",
        "models:\n  - {name: few, deployments: [{provider: mock}], limits: [{name: rpm, count: {count: 3, time_window: 60s}}]}\n",
    );
    let gw = Gw::start(&cfg);
    let stop = Arc::new(AtomicUsize::new(0));
    let load = background_load(&gw, stop.clone());
    wait_for_admitted(&gw, 5.0);
    redis.stop();
    gw.wait_metric("gateway_limiter_degraded", &[], 1.0);
    assert_eq!(gw.metric("gateway_limiter_degraded", &[]), 1.0);
    // Limits still hold, now counted by this instance alone.
    let few: Vec<u16> = (0..5).map(|_| chat(&gw, "few").status).collect();
    assert_eq!(few, vec![200, 200, 200, 429, 429]);
    assert_eq!(get(&gw.admin_url("/ready"), None).status, 200);
    redis.resume();
    let back = Instant::now();
    while gw.metric("gateway_limiter_degraded", &[]) != 0.0 {
        assert!(back.elapsed() < Duration::from_secs(5), "still degraded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Redis lost its data (no persistence): the shared window starts afresh, on every
    // worker thread (each has its own connection, some idle through the outage), and is
    // shared again: the fourth request is refused.
    let again: Vec<u16> = (0..4).map(|_| chat(&gw, "few").status).collect();
    assert_eq!(again, vec![200, 200, 200, 429]);
    stop.store(1, Ordering::SeqCst);
    let seen = load.join().unwrap();
    assert!(
        seen.iter().all(|s| *s == 200),
        "no failed request: {seen:?}"
    );
    assert!(redis
        .cmd(&["KEYS", "*"])
        .unwrap()
        .contains("plugin-limit-count:v1:model:few/rpm"));
}

/// The statuses and quota headers of a request sequence, sent on one keep-alive
/// connection as SDKs do (the gateway gives back a request's reservation before it reads
/// the next request of the connection).
fn trace(gw: &Gw, model: &str, n: usize) -> Vec<String> {
    let client = agent();
    (0..n)
        .map(|_| {
            let body = serde_json::json!({"model": model, "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
            let r = post_on(&client, &gw.url("/v1/chat/completions"), Some(KEY), &body);
            let h = |n: &str| r.header(n).unwrap_or("-").to_string();
            format!(
                "{} req={} tok={} apisix={}",
                r.status,
                h("x-ratelimit-remaining-requests"),
                h("x-ratelimit-remaining-tokens"),
                h("x-ratelimit-remaining")
            )
        })
        .collect()
}

#[test]
fn redis_policy_answers_exactly_as_the_local_policy() {
    let redis = Redis::start();
    let models = "models:\n  \
        - {name: mixed, deployments: [{provider: mock}], limits: [\
            {name: rpm, count: {count: 5, time_window: 60s}, show_limit_quota_header: true}, \
            {name: tpm, tokens: {limit: 120, time_window: 60s}}]}\n  \
        - {name: bucket, deployments: [{provider: mock}], limits: [\
            {name: r, req: {rate: 1, burst: 2, nodelay: true}}]}\n  \
        - {name: delayed, deployments: [{provider: mock}], limits: [\
            {name: r, req: {rate: 5, burst: 2}}]}\n  \
        - {name: sliding, deployments: [{provider: mock}], limits: [\
            {name: s, count: {count: 3, time_window: 86400s, window_type: sliding}, show_limit_quota_header: true}]}\n";
    let shared = yaml(&redis, "", "", "[]").replace("models:\n", models);
    let local = shared.replace("policy: redis", "policy: local");
    let (l, r) = (Gw::start(&local), Gw::start(&shared));
    for (model, n) in [("mixed", 7), ("bucket", 4), ("sliding", 5)] {
        let (tl, tr) = (trace(&l, model, n), trace(&r, model, n));
        assert_eq!(tl, tr, "{model}: local vs redis");
        assert!(tl.iter().any(|t| t.starts_with("429")), "{tl:?}");
    }
    // A sliding window (APISIX 3.18): rejections are not counted, so a rejected request
    // leaves Remaining at 0 rather than below, in both stores.
    let statuses: Vec<String> = trace(&l, "sliding", 1)
        .into_iter()
        .chain(trace(&r, "sliding", 1))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|t| t.starts_with("429") && t.contains("apisix=0")),
        "{statuses:?}"
    );
    // Delay mode: three back-to-back requests, the third after about 2 × 200 ms.
    for gw in [&l, &r] {
        let started = Instant::now();
        assert!(trace(gw, "delayed", 3).iter().all(|t| t.starts_with("200")));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(350), "{took:?}");
    }
}

/// A 429's remaining counters do not count the refused request: the token reservation
/// its group made before the count rule refused it is given back, and so is its share of
/// `x-ratelimit-remaining-tokens` (it said 1000 − the estimate), in both stores.
#[test]
fn a_refused_request_is_not_counted_in_its_remaining_headers() {
    let redis = Redis::start();
    let shared = yaml(&redis, "", "", "[]")
        .replace(
            &format!("consumers: [{{name: c, keys: [\"{KEY}\"]}}]"),
            &format!(
                "consumers: [{{name: c, keys: [\"{KEY}\"], limits: \
                 [{{name: one, count: {{count: 1, time_window: 60s}}}}]}}]"
            ),
        )
        .replace(
            "models:\n",
            "models:\n  - {name: t, deployments: [{provider: mock}], limits: \
             [{name: tpm, tokens: {limit: 1000, time_window: 60s}}]}\n",
        );
    let local = shared.replace("policy: redis", "policy: local");
    for config in [local, shared] {
        let gw = Gw::start(&config);
        assert_eq!(chat(&gw, "m").status, 200); // the consumer's one request
        let t = trace(&gw, "t", 1);
        assert_eq!(t, ["429 req=0 tok=1000 apisix=-"], "{config}");
    }
}

#[test]
fn queued_requests_share_the_rate_across_two_gateways() {
    let redis = Redis::start();
    let cfg = yaml(
        &redis,
        "",
        "",
        "[{name: r, req: {rate: 10, burst: 0, nodelay: true}, on_limit: queue, max_wait: 10s}]",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    let started = Instant::now();
    let statuses = burst(&[&a, &b], "m", 24, 12);
    let took = started.elapsed();
    assert_eq!(count(&statuses, 200), 24, "{statuses:?}");
    // 24 requests at 10/s across both instances: about 2.3 s, not half of it.
    assert!(took >= Duration::from_millis(2100), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// The shared count of `model:m/rpm` in Redis (0 while there is none).
fn pushed(redis: &Redis) -> u64 {
    let stored = redis
        .cmd(&["GET", "plugin-limit-count:v1:model:m/rpm"])
        .unwrap_or_default();
    stored
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn sync_interval_counts_locally_and_converges_across_gateways() {
    let redis = Redis::start();
    let cfg = yaml(
        &redis,
        "sync_interval: 200ms",
        "",
        "[{name: rpm, count: {count: 40, time_window: 60s}}]",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    // 25 on A: all admitted from A's own view, with no Redis round trip per request.
    let on_a = burst(&[&a], "m", 25, 4);
    assert_eq!(count(&on_a, 200), 25);
    assert_eq!(
        a.metric("gateway_redis_duration_seconds_count", &[("op", "admit")]),
        0.0
    );
    // Once A's sync has pushed its 25, B sees them and admits the remaining 15 only.
    wait_until("A's 25 pushed to Redis", || pushed(&redis) >= 25);
    let on_b = burst(&[&b], "m", 30, 4);
    assert_eq!(count(&on_b, 200), 15, "{on_b:?}");
    assert!(b.metric("gateway_redis_duration_seconds_count", &[("op", "sync")]) >= 1.0);
    // Both now agree that the window is used up, and so does Redis: once B's requests are
    // pushed, A's next sync after that brings them back.
    wait_until("B's requests pushed to Redis", || pushed(&redis) >= 55);
    let syncs = || a.metric("gateway_redis_duration_seconds_count", &[("op", "sync")]);
    let seen = syncs();
    wait_until("two more syncs on A", || syncs() >= seen + 2.0);
    assert_eq!(chat(&a, "m").status, 429);
    let total = pushed(&redis);
    assert!(
        total >= 55,
        "every request was pushed, rejected ones too: {total}"
    );
    // Concurrent bursts on both within one interval: bounded over-admission, documented.
    let redis2 = Redis::start();
    let cfg2 = yaml(
        &redis2,
        "sync_interval: 200ms",
        "",
        "[{name: rpm, count: {count: 40, time_window: 60s}}]",
    );
    let (c, d) = (Gw::start(&cfg2), Gw::start(&cfg2));
    let both = burst(&[&c, &d], "m", 120, 8);
    let admitted = count(&both, 200);
    assert!(
        (40..=80).contains(&admitted),
        "admitted {admitted}: at most count + the other instance's share"
    );
}

#[test]
fn expression_strategy_charges_its_cost_in_both_stores() {
    // ai-rate-limiting's `limit_strategy: expression`: each answer of 5 completion tokens
    // costs 5 × 10 = 50 of 100, so the third request finds nothing left — where the
    // total-tokens strategy would have charged about 6 each.
    let redis = Redis::start();
    let rule = r#"[{name: cost, tokens: {limit: 100, time_window: 60s, strategy: expression, cost_expr: "completion_tokens * 10 + missing_field"}}]"#;
    let shared = yaml(&redis, "", "", rule);
    let local = shared.replace("policy: redis", "policy: local");
    for cfg in [local, shared] {
        let gw = Gw::start(&cfg);
        // One keep-alive connection: a request's charge is settled before the next is read.
        let client = agent();
        let statuses: Vec<u16> = (0..3)
            .map(|_| {
                let body = serde_json::json!({"model": "m", "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}]});
                post_on(
                    &client,
                    &gw.url("/v1/chat/completions"),
                    Some(KEY),
                    &body.to_string(),
                )
                .status
            })
            .collect();
        assert_eq!(statuses, [200, 200, 429], "{cfg}");
    }
}
