//! Hard budgets and token limits (issue 22, item 3–4), through the real binary on the
//! built-in mock, which honours `max_tokens` like a provider and otherwise answers 4,096
//! tokens. Input is free and output costs $10 per million tokens, so spend is exact:
//! 1,024 completion tokens (the default completion budget) cost $0.01024.
//!
//! The figure each test reports is the total charged against the limit (from the status
//! page, which reads the limiter's own counters), printed and bounded by the limit.

mod common;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};

const KEY: &str = "sk-payer";

fn yaml(limits: &str, rule: &str) -> String {
    format!(
        r#"
admin: {{key: admin-secret}}
server: {{threads: 4}}
limits: {{{limits}}}
consumers:
  - name: payer
    keys: ["{KEY}"]
    limits: [{rule}]
providers:
  - {{name: local, kind: mock, mock: {{completion_tokens: 4096, latency_ms: 200}}}}
models:
  - name: m
    price: {{input: 0, output: 10}}
    deployments: [{{provider: local}}]
"#
    )
}

/// What the consumer's rule `name` has used this window, per the status page.
fn used(gw: &Gw, name: &str) -> f64 {
    let s = get(&gw.admin_url("/status.json"), Some("admin-secret")).json();
    let rule = s["consumers"][0]["limits"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|r| r["rule"] == format!("consumer:payer/{name}"))
        })
        .unwrap_or_else(|| panic!("no {name} in {s}"))
        .clone();
    rule["used"].as_f64().unwrap()
}

/// `n` requests at once (one thread each), spread over `gws`: the answers.
fn burst(gws: &[&Gw], path: &str, body: &Value, n: usize) -> Vec<Resp> {
    let urls: Vec<String> = gws.iter().map(|g| g.url(path)).collect();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            let body = body.to_string();
            std::thread::spawn(move || post(&url, Some(KEY), &body))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn ok(rs: &[Resp]) -> usize {
    rs.iter().filter(|r| r.status == 200).count()
}

fn chat(extra: Value, stream: bool) -> Value {
    let mut b = json!({"model": "m", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    b
}

/// One request of every surface, stream and not, without `max_tokens` (Messages needs one:
/// 1,024, the default completion budget).
fn surfaces() -> Vec<(&'static str, Value)> {
    let messages = |stream: bool| {
        json!({"model": "m", "max_tokens": 1024, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
    };
    let responses = |stream: bool| json!({"model": "m", "input": "hi", "stream": stream});
    vec![
        ("/v1/chat/completions", chat(json!({}), false)),
        ("/v1/chat/completions", chat(json!({}), true)),
        ("/v1/responses", responses(false)),
        ("/v1/responses", responses(true)),
        ("/v1/messages", messages(false)),
        ("/v1/messages", messages(true)),
    ]
}

#[test]
fn one_request_asking_for_more_than_the_budget_is_capped_to_it() {
    let gw = Gw::start(&yaml(
        "",
        "{name: budget, spend: {limit_usd: 0.005, time_window: 1h}}",
    ));
    // $0.005 buys 500 tokens: the upstream is asked for at most that.
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat(json!({"max_tokens": 100000}), false).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let tokens = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((490..=500).contains(&tokens), "{tokens}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let spent = used(&gw, "budget");
    println!("max_tokens 100000 against $0.005: charged ${spent:.6}");
    assert!(spent <= 0.005 + 1e-9, "{spent}");
    // Nothing is left: the next is refused.
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat(json!({}), false).to_string(),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "insufficient_quota");
}

#[test]
fn concurrent_requests_on_every_surface_stay_within_the_budget() {
    for (path, body) in surfaces() {
        let gw = Gw::start(&yaml(
            "",
            "{name: budget, spend: {limit_usd: 0.05, time_window: 1h}}",
        ));
        let rs = burst(&[&gw], path, &body, 16);
        for r in rs.iter().filter(|r| r.status != 200) {
            assert_eq!(r.status, 429, "{path}: {}", r.body);
        }
        let spent = used(&gw, "budget");
        let stream = body["stream"] == true;
        println!(
            "16 concurrent {path} (stream {stream}) against $0.05: {} admitted, charged ${spent:.6}",
            ok(&rs)
        );
        assert!(spent <= 0.05 + 1e-9, "{path}: {spent}");
        // 1,024 tokens each: four whole answers and one capped to the rest.
        assert!((5..=6).contains(&ok(&rs)), "{path}: {}", ok(&rs));
        assert!(
            spent > 0.05 - 0.01024,
            "{path}: the budget was used: {spent}"
        );
    }
}

#[test]
fn choices_multiply_the_reservation_and_numbers_are_validated() {
    let gw = Gw::start(&yaml(
        "",
        "{name: budget, spend: {limit_usd: 0.02, time_window: 1h}}",
    ));
    // n 8 × 100 tokens = $0.008 reserved each: two fit at once, the third gets what is
    // left (400 tokens: 50 per choice).
    let rs = burst(
        &[&gw],
        "/v1/chat/completions",
        &chat(json!({"n": 8, "max_tokens": 100}), false),
        3,
    );
    assert_eq!(
        ok(&rs),
        3,
        "{:?}",
        rs.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let mut tokens: Vec<u64> = rs
        .iter()
        .map(|r| r.json()["usage"]["completion_tokens"].as_u64().unwrap())
        .collect();
    tokens.sort();
    assert_eq!(tokens, [50, 100, 100]);
    for (field, value, code) in [
        ("max_tokens", json!("20000"), "invalid_type"),
        (
            "max_tokens",
            json!(18446744073709551608u64),
            "integer_above_max_value",
        ),
        ("max_tokens", json!(-5), "integer_below_min_value"),
        ("max_tokens", json!(10.5), "invalid_type"),
        ("n", json!(1000), "integer_above_max_value"),
    ] {
        let r = post(
            &gw.url("/v1/chat/completions"),
            Some(KEY),
            &chat(json!({ field: value }), false).to_string(),
        );
        assert_eq!(r.status, 400, "{field}: {value}");
        let e = &r.json()["error"];
        assert_eq!(
            (e["code"].as_str(), e["param"].as_str()),
            (Some(code), Some(field))
        );
    }
}

#[test]
fn hard_token_limits_cap_concurrent_requests() {
    let gw = Gw::start(&yaml(
        "",
        "{name: tpm, tokens: {limit: 5000, time_window: 1h, admission: hard}}",
    ));
    // 32 at once, none naming max_tokens: 1,024 + the prompt each, capped to what is left.
    let rs = burst(&[&gw], "/v1/chat/completions", &chat(json!({}), false), 32);
    let tokens = used(&gw, "tpm");
    println!(
        "32 concurrent against a hard 5000-token limit: {} admitted, {tokens} tokens",
        ok(&rs)
    );
    assert!(tokens <= 5000.0, "{tokens}");
    assert!(tokens > 5000.0 - 1100.0, "{tokens}");
}

#[test]
fn a_reserve_limit_refuses_a_request_it_can_never_hold() {
    let gw = Gw::start(&yaml(
        "",
        "{name: tpm, tokens: {limit: 50000, time_window: 1h}}",
    ));
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &chat(json!({"max_tokens": 100000}), false).to_string(),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("Request too large"), "{message}");
    assert!(message.contains("Limit 50000, Requested 1000"), "{message}");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(used(&gw, "tpm"), 0.0);
}

#[test]
fn two_instances_on_one_redis_share_a_hard_budget_exactly() {
    for (path, body) in surfaces() {
        let n = if path.contains("chat") && body["stream"] == false {
            64
        } else {
            32
        };
        let redis = Redis::start();
        let limits = format!("policy: redis, redis: {{url: \"{}\"}}", redis.url());
        let cfg = yaml(
            &limits,
            "{name: budget, spend: {limit_usd: 0.05, time_window: 1h}}",
        );
        let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
        let rs = burst(&[&a, &b], path, &body, n);
        let spent = used(&a, "budget");
        let stream = body["stream"] == true;
        println!(
            "{n} concurrent {path} (stream {stream}) over two instances on one Redis against $0.05: {} admitted, charged ${spent:.6}",
            ok(&rs)
        );
        assert!(spent <= 0.05 + 1e-9, "{path}: {spent}");
        // The ideal is 4.88 answers of 1,024 tokens: four whole and one capped.
        assert!((5..=6).contains(&ok(&rs)), "{path}: {}", ok(&rs));
    }
}

#[test]
fn two_instances_on_one_redis_share_a_hard_token_limit_exactly() {
    let redis = Redis::start();
    let limits = format!("policy: redis, redis: {{url: \"{}\"}}", redis.url());
    let cfg = yaml(
        &limits,
        "{name: tpm, tokens: {limit: 5000, time_window: 1h, admission: hard}}",
    );
    let (a, b) = (Gw::start(&cfg), Gw::start(&cfg));
    let rs = burst(
        &[&a, &b],
        "/v1/chat/completions",
        &chat(json!({}), true),
        64,
    );
    let tokens = used(&a, "tpm");
    println!(
        "64 concurrent streams over two instances on one Redis against a hard 5000-token limit: {} admitted, {tokens} tokens",
        ok(&rs)
    );
    assert!(tokens <= 5000.0, "{tokens}");
    assert!(tokens > 5000.0 - 1100.0, "{tokens}");
    assert!((5..=6).contains(&ok(&rs)), "{}", ok(&rs));
}

#[test]
fn a_batch_is_held_by_the_hard_budget() {
    use common::batches::create_inline;
    let gw = Gw::start(&yaml(
        "",
        "{name: budget, spend: {limit_usd: 0.03, time_window: 3s}}",
    ));
    let requests: Vec<Value> = (0..6)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "max_tokens": 1000,
                         "messages": [{"role": "user", "content": "hi"}]}})
        })
        .collect();
    create_inline(&gw, KEY, &requests);
    // Batch work is paced over the window; sampled all along, the window's charge never
    // passes the budget.
    let mut most: f64 = 0.0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        most = most.max(used(&gw, "budget"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("a batch of six $0.01 requests against $0.03 per 3 s: at most ${most:.6} a window");
    assert!(most <= 0.03 + 1e-9, "{most}");
    assert!(most > 0.0);
}

#[test]
fn a_stream_the_client_abandons_is_charged_at_least_what_it_relayed() {
    use std::io::{Read, Write};
    // A reserve budget: the upstream is not capped, so it streams past the reservation
    // (1,024 tokens) until the client leaves.
    let cfg = yaml(
        "",
        "{name: tpm, tokens: {limit: 1000000, time_window: 1h}}, \
         {name: budget, spend: {limit_usd: 10, time_window: 1h, admission: reserve}}",
    )
    .replace("latency_ms: 200", "tokens_per_second: 4000");
    let gw = Gw::start(&cfg);
    let body = chat(json!({}), true).to_string();
    let mut s = std::net::TcpStream::connect(
        gw.url("")
            .trim_start_matches("http://")
            .trim_end_matches('/'),
    )
    .unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read about half of the answer (4,096 tokens at 4,000 a second), then leave.
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while started.elapsed() < std::time::Duration::from_millis(500) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    drop(s);
    let text = String::from_utf8_lossy(&got);
    let words = text.matches("\"content\":\"").count() as f64;
    assert!(
        words > 1024.0,
        "the stream went past its reservation: {words}"
    );
    // The gateway charges once it notices the client left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while used(&gw, "tpm") == 0.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let tokens = used(&gw, "tpm");
    let spent = used(&gw, "budget");
    let metric = gw.metric("gateway_spend_usd_total", &[]);
    println!("a stream left after {words} chunks: charged {tokens} tokens, ${spent:.6} (metric ${metric:.6})");
    assert!(tokens >= words, "{tokens} < {words}");
    assert!(spent >= words * 10.0 / 1e6 - 1e-9, "{spent}");
    assert!(metric > 0.0, "the spend metric shows it");
}

#[test]
fn a_stream_past_the_cap_it_was_sent_is_ended_there_as_a_length_limit() {
    let cfg = yaml(
        "",
        "{name: budget, spend: {limit_usd: 0.001, time_window: 1h}}",
    )
    .replace("latency_ms: 200", "ignore_max_tokens: true");
    // $0.001 buys 100 tokens; the provider ignores the cap and streams 4,096.
    for (path, body) in [
        ("/v1/chat/completions", chat(json!({}), false)),
        ("/v1/chat/completions", chat(json!({}), true)),
        (
            "/v1/messages",
            json!({"model": "m", "max_tokens": 1024, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let gw = Gw::start(&cfg);
        let r = post(&gw.url(path), Some(KEY), &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let chunks =
            r.body.matches("\"content\":\"").count() + r.body.matches("text_delta").count();
        println!("{path}: a provider ignoring its 100-token cap: {chunks} text events relayed");
        assert!(chunks <= 101, "{chunks}");
        if path == "/v1/messages" {
            assert!(
                r.body.contains("\"stop_reason\":\"max_tokens\""),
                "{}",
                r.body
            );
        } else if body["stream"] == false {
            let v = r.json();
            assert_eq!(v["choices"][0]["finish_reason"], "length");
            assert_eq!(v["usage"]["completion_tokens"], 100);
        } else {
            assert!(r.body.contains("\"finish_reason\":\"length\""));
            assert!(r.body.ends_with("data: [DONE]\n\n"));
        }
        // Charged what was relayed (at least the reservation), not the 4,096 produced.
        let spent = used(&gw, "budget");
        assert!(spent < 0.0025, "{spent}");
    }
}
