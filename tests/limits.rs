//! Limits through the real gateway (local policy): statuses, headers, delays, limit-aware
//! routing, hot reload keeping usage.

mod common;
use common::*;
use std::time::{Duration, Instant};

const KEY: &str = "sk-limits";

fn yaml(consumer_limits: &str, model_limits: &str, extra: &str) -> String {
    format!(
        r#"
server: {{threads: 2}}
reload: {{poll_interval: 100ms}}
consumers:
  - name: lim
    keys: ["{KEY}"]
    limits: {consumer_limits}
  - {{name: other, keys: [sk-other]}}
providers:
  - {{name: mock, kind: mock}}
  - {{name: slow, kind: mock, mock: {{tokens_per_second: 20, completion_tokens: 10}}}}
  - {{name: a, kind: mock}}
  - {{name: b, kind: mock}}
models:
  - {{name: m, deployments: [{{provider: mock}}], limits: {model_limits}}}
  - {{name: s, deployments: [{{provider: slow}}], limits: {model_limits}}}
{extra}
"#
    )
}

fn chat(gw: &Gw, model: &str) -> Resp {
    post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body(model, "hi", false),
    )
}

#[test]
fn limit_count_headers_and_openai_429() {
    let gw = Gw::start(&yaml(
        "[{name: rpm, count: {count: 3, time_window: 60s}}]",
        "[]",
        "",
    ));
    for want in ["2", "1", "0"] {
        let r = chat(&gw, "m");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(want));
        let reset = r.header("x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s') && !reset.contains('-'), "{reset}");
    }
    let r = chat(&gw, "m");
    assert_eq!(r.status, 429);
    let e = r.json()["error"].clone();
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(e["type"], "requests");
    assert!(e["message"].as_str().unwrap().contains("consumer:lim/rpm"));
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(ms > 50_000 && ms <= 60_000, "{ms}");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(
        gw.metric(
            "gateway_limit_decisions_total",
            &[
                ("kind", "count"),
                ("scope", "consumer"),
                ("outcome", "admitted")
            ]
        ),
        3.0
    );
    assert_eq!(
        gw.metric(
            "gateway_limit_decisions_total",
            &[("kind", "count"), ("outcome", "rejected")]
        ),
        1.0
    );
    // Another consumer is not affected.
    let other = post(
        &gw.url("/v1/chat/completions"),
        Some("sk-other"),
        &chat_body("m", "hi", false),
    );
    assert_eq!(other.status, 200);
}

#[test]
fn limit_conn_rejects_only_while_a_request_is_in_flight() {
    let gw = Gw::start(&yaml("[]", "[{name: one, conn: {conn: 1}}]", ""));
    let url = gw.url("/v1/chat/completions");
    let stream = std::thread::spawn(move || post(&url, Some(KEY), &chat_body("s", "go", true)));
    let held = [("kind", "conn"), ("outcome", "admitted")];
    gw.wait_metric("gateway_limit_decisions_total", &held, 1.0);
    let r = chat(&gw, "s");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "requests");
    assert!(stream.join().unwrap().body.contains("[DONE]"));
    // The slot is released in the logging phase, just after the last byte was sent.
    gw.wait_metric("gateway_requests_in_flight", &[], 0.0);
    assert_eq!(
        chat(&gw, "s").status,
        200,
        "the slot is free again once the stream ended"
    );
}

#[test]
fn limit_req_nodelay_rejects_and_delay_mode_waits() {
    let gw = Gw::start(&yaml(
        "[]",
        "[{name: r, req: {rate: 2, burst: 0, nodelay: true}}]",
        "  - {name: d, deployments: [{provider: mock}], limits: [{name: r, req: {rate: 5, burst: 2}}]}",
    ));
    assert_eq!(chat(&gw, "m").status, 200);
    let r = chat(&gw, "m");
    assert_eq!(r.status, 429);
    let ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(ms <= 500, "{ms}");
    std::thread::sleep(Duration::from_millis(ms + 20));
    assert_eq!(chat(&gw, "m").status, 200);
    // rate 5, burst 2, delay mode: three back-to-back requests are all admitted, the third
    // after about 2 × 200 ms.
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(chat(&gw, "d").status, 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn token_limit_reserves_then_charges_real_usage() {
    // Mock answers use 16 completion tokens; max_tokens 20 is reserved per request.
    let gw = Gw::start(&yaml(
        "[{name: tpm, tokens: {limit: 100, time_window: 60s}}]",
        "[]",
        "",
    ));
    let body = r#"{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"hello"}]}"#;
    let mut remaining = vec![];
    let client = agent();
    loop {
        let r = post_on(&client, &gw.url("/v1/chat/completions"), Some(KEY), body);
        if r.status == 429 {
            assert_eq!(r.json()["error"]["type"], "tokens");
            break;
        }
        assert_eq!(r.status, 200);
        let used = r.json()["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(used, 18);
        remaining.push(
            r.header("x-ratelimit-remaining-tokens")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        assert!(remaining.len() < 10);
    }
    // Each admission shows the window after its own reservation of 29 tokens (the 36 bytes
    // of raw `messages` estimate 9, plus max_tokens 20), earlier requests charged at their
    // real 18: 100-29, 100-18-29, … The fifth would need 72 + 29 > 100.
    assert_eq!(remaining, vec![71, 53, 35, 17]);
}

#[test]
fn deployment_limits_steer_routing_then_429() {
    let extra = r#"
  - name: pool
    deployments:
      - {provider: a, limits: [{name: rpm, count: {count: 1, time_window: 60s}}]}
      - {provider: b, limits: [{name: rpm, count: {count: 1, time_window: 60s}}]}
routing: {strategy: ordered}
"#;
    let gw = Gw::start(&yaml("[]", "[]", extra));
    assert_eq!(chat(&gw, "pool").status, 200);
    assert_eq!(
        chat(&gw, "pool").status,
        200,
        "deployment a is at its limit: b serves"
    );
    let r = chat(&gw, "pool");
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("every deployment"));
    let log = gw.wait_log(|l| l.contains("provider=\"a\"") && l.contains("provider=\"b\""));
    assert!(
        log.contains("provider=\"a\"") && log.contains("provider=\"b\""),
        "{log}"
    );
}

#[test]
fn hot_reload_keeps_usage_when_numbers_change() {
    let gw = Gw::start(&yaml(
        "[{name: rpm, count: {count: 5, time_window: 60s}}]",
        "[]",
        "",
    ));
    for _ in 0..3 {
        assert_eq!(chat(&gw, "m").status, 200);
    }
    gw.write_config(&yaml(
        "[{name: rpm, count: {count: 4, time_window: 60s}}]",
        "[]",
        "",
    ));
    wait_until("the reload", || {
        gw.metric("gateway_config_generation", &[]) >= 2.0
    });
    let r = chat(&gw, "m");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("4"));
    assert_eq!(
        r.header("x-ratelimit-remaining-requests"),
        Some("0"),
        "3 used before the reload count"
    );
    assert_eq!(chat(&gw, "m").status, 429);
}

#[test]
fn apisix_compatible_rejection_and_quota_headers() {
    let rule = "[{name: apisix, count: {count: 2, time_window: 60s}, rejected_code: 503, rejected_msg: too many, show_limit_quota_header: true}]";
    let gw = Gw::start(&yaml("[]", rule, ""));
    let r = chat(&gw, "m");
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(r.header("x-ratelimit-reset"), Some("60"));
    assert_eq!(chat(&gw, "m").header("x-ratelimit-remaining"), Some("0"));
    let r = chat(&gw, "m");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "{\"error_msg\":\"too many\"}\n");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let reset: f64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset > 0.0 && reset <= 60.0);
}

#[test]
fn provider_429_puts_the_key_in_cool_down() {
    let extra = r#"
  - name: pool
    deployments: [{provider: hot}, {provider: b}]
  - name: lonely
    deployments: [{provider: hot2}]
routing: {strategy: ordered, retries: 1}
"#;
    let y = yaml("[]", "[]", extra).replace(
        "  - {name: a, kind: mock}",
        "  - {name: hot, kind: mock, mock: {failure: {status: 429, retry_after_secs: 30}}}\n  \
         - {name: hot2, kind: mock, mock: {failure: {status: 429, retry_after_secs: 2}}}",
    );
    let gw = Gw::start(&y);
    for _ in 0..3 {
        assert_eq!(chat(&gw, "pool").status, 200);
    }
    // Only the first request went to the 429ing key; the others skipped it.
    assert_eq!(
        gw.metric(
            "gateway_upstream_errors_total",
            &[("provider", "hot"), ("kind", "status_429")]
        ),
        1.0
    );
    let log = gw.wait_log(|l| l.matches("attempts=1").count() >= 2);
    assert_eq!(log.matches("attempts=1").count(), 2, "{log}");
    // A model whose only key cools down answers 429 with the time left, without calling it.
    let first = chat(&gw, "lonely");
    assert_eq!(
        (first.status, first.header("retry-after")),
        (429, Some("2"))
    );
    let second = chat(&gw, "lonely");
    assert_eq!(second.status, 429);
    assert!(second.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("every deployment"));
    let ms: u64 = second.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(ms <= 2001, "{ms}");
    assert_eq!(
        gw.metric("gateway_upstream_errors_total", &[("provider", "hot2")]),
        1.0
    );
}

/// Start `n` chat requests `stagger` apart as `key`; returns (index, status, finished at).
fn staggered(
    gw: &Gw,
    key: &str,
    model: &str,
    n: usize,
    stagger: Duration,
) -> Vec<std::thread::JoinHandle<(usize, u16, Instant)>> {
    (0..n)
        .map(|i| {
            let (url, key, model) = (
                gw.url("/v1/chat/completions"),
                key.to_string(),
                model.to_string(),
            );
            std::thread::sleep(stagger);
            std::thread::spawn(move || {
                let r = post(&url, Some(&key), &chat_body(&model, "hi", false));
                (i, r.status, Instant::now())
            })
        })
        .collect()
}

#[test]
fn queue_admits_a_burst_in_arrival_order_at_the_limit_rate() {
    let gw = Gw::start(&yaml(
        "[]",
        "[{name: r, req: {rate: 10, burst: 0, nodelay: true}, on_limit: queue, max_wait: 5s}]",
        "",
    ));
    let started = Instant::now();
    let mut done: Vec<(usize, u16, Instant)> =
        staggered(&gw, KEY, "m", 12, Duration::from_millis(20))
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
    let took = started.elapsed();
    assert!(
        done.iter().all(|d| d.1 == 200),
        "no request fails: {done:?}"
    );
    // 12 requests at 10/s: the last is admitted about 1.1 s after the first.
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_millis(3000), "{took:?}");
    done.sort_by_key(|d| d.2);
    let order: Vec<usize> = done.iter().map(|d| d.0).collect();
    assert_eq!(order, (0..12).collect::<Vec<_>>(), "arrival order");
    let queued = gw.metric(
        "gateway_limit_decisions_total",
        &[("kind", "req"), ("scope", "model"), ("outcome", "queued")],
    );
    assert!(queued >= 10.0, "{queued}");
    assert_eq!(
        gw.metric("gateway_limit_decisions_total", &[("outcome", "rejected")]),
        0.0
    );
    assert_eq!(
        gw.metric(
            "gateway_limit_queue_wait_seconds_count",
            &[("scope", "model"), ("outcome", "admitted")]
        ),
        queued
    );
    assert_eq!(gw.metric("gateway_limit_queue_depth", &[]), 0.0);
}

#[test]
fn queue_is_fair_across_consumers() {
    let gw = Gw::start(&yaml(
        "[]",
        "[{name: r, req: {rate: 5, burst: 0, nodelay: true}, on_limit: queue, max_wait: 10s}]",
        "",
    ));
    // lim queues 8 requests; other arrives just after with one request.
    let started = Instant::now();
    let lim = staggered(&gw, KEY, "m", 8, Duration::from_millis(2));
    wait_until("lim's requests queued", || {
        gw.metric("gateway_limit_queue_depth", &[]) >= 5.0
    });
    let other = staggered(&gw, "sk-other", "m", 1, Duration::ZERO);
    let other_done = other.into_iter().next().unwrap().join().unwrap();
    assert_eq!(other_done.1, 200);
    let lim_done: Vec<_> = lim.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(lim_done.iter().all(|d| d.1 == 200));
    // other waited for one turn of lim's, not for all eight (~1.6 s at 5/s).
    let waited = other_done.2 - started;
    assert!(
        waited < Duration::from_millis(900),
        "other waited {waited:?}"
    );
    let overtaken = lim_done.iter().filter(|d| d.2 > other_done.2).count();
    assert!(
        overtaken >= 5,
        "only {overtaken} of lim's requests finished after other's"
    );
}

#[test]
fn queue_wait_is_bounded_then_429_with_accurate_retry_after() {
    let gw = Gw::start(&yaml(
        "[]",
        "[{name: n, count: {count: 2, time_window: 60s}, on_limit: queue, max_wait: 400ms, max_queue: 1}]",
        "",
    ));
    assert_eq!(chat(&gw, "m").status, 200);
    assert_eq!(chat(&gw, "m").status, 200);
    let url = gw.url("/v1/chat/completions");
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        (
            post(&url, Some(KEY), &chat_body("m", "hi", false)),
            t.elapsed(),
        )
    });
    gw.wait_metric("gateway_limit_queue_depth", &[], 1.0);
    // The queue holds one request: the next is refused at once.
    let t = Instant::now();
    let full = chat(&gw, "m");
    assert_eq!(full.status, 429);
    assert!(t.elapsed() < Duration::from_millis(200));
    let (r, waited) = waiter.join().unwrap();
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    let ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    assert!(ms > 58_000 && ms <= 60_000, "the window's real reset: {ms}");
    assert_eq!(
        r.header("retry-after"),
        Some(&*ms.div_ceil(1000).min(60).to_string())
    );
    assert_eq!(
        gw.metric(
            "gateway_limit_queue_wait_seconds_count",
            &[("outcome", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        gw.metric(
            "gateway_limit_decisions_total",
            &[("kind", "count"), ("outcome", "rejected")]
        ),
        2.0
    );
}

#[test]
fn queue_on_provider_key_limits_waits_for_any_deployment() {
    let gw = Gw::start(&yaml(
        "[{name: rpm, count: {count: 100, time_window: 60s}}]",
        "[]",
        r#"  - name: q
    deployments:
      - {provider: a, limits: [{name: r, req: {rate: 4, burst: 0, nodelay: true}, on_limit: queue, max_wait: 5s}]}
      - {provider: b, limits: [{name: r, req: {rate: 4, burst: 0, nodelay: true}, on_limit: queue, max_wait: 5s}]}"#,
    ));
    let done: Vec<_> = staggered(&gw, KEY, "q", 12, Duration::from_millis(2))
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(done.iter().all(|d| d.1 == 200), "{done:?}");
    // The consumer's count limit counted each request once, however long it waited.
    let r = chat(&gw, "m");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("87"));
}

#[test]
fn count_group_shares_one_counter_across_routes() {
    // APISIX's example: two routes, {count 2, time_window 60, group services_1}, called
    // alternately → 200, 200, then rejected on both.
    let rule =
        "[{name: n, count: {count: 2, time_window: 60s, group: services_1}, key: $consumer_name}]";
    let gw = Gw::start(&yaml("[]", rule, ""));
    let got: Vec<u16> = ["m", "s", "m", "s"]
        .iter()
        .map(|m| chat(&gw, m).status)
        .collect();
    assert_eq!(got, vec![200, 200, 429, 429]);
    // Another consumer has its own counter in the group (the key resolves differently).
    let other = post(
        &gw.url("/v1/chat/completions"),
        Some("sk-other"),
        &chat_body("s", "hi", false),
    );
    assert_eq!(other.status, 200);
}
