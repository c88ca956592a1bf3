//! Spend limits through the real binary: budgets in USD reserved at admission from the
//! request's estimated cost and reconciled with its real cost, refused with OpenAI's
//! `insufficient_quota`, kept across a reload, shown on the status page, charged to batch
//! work at its discounted price, and shared exactly by two gateways on one real Redis.
//!
//! Every request here costs exactly one cent: the mock answers 5 completion tokens (the
//! default completion budget, so the estimate is exact too) at $2000 per million output
//! tokens, and input is free.

mod common;
use common::redis::Redis;
use common::*;

const KEY: &str = "sk-payer";

/// A gateway config with a one-cent-per-request model; `limits` goes under `limits:`,
/// `budget` is the consumer's spend rule.
fn yaml(limits: &str, budget: &str) -> String {
    format!(
        r#"
server: {{threads: 2}}
limits: {{{limits}}}
routing: {{default_max_tokens: 5}}
consumers:
  - name: payer
    keys: ["{KEY}"]
    limits: [{budget}]
providers:
  - {{name: local, kind: mock, mock: {{completion_tokens: 5}}}}
models:
  - name: cent
    price: {{input: 0, output: 2000, batch_discount: 0.5}}
    deployments: [{{provider: local}}]
  - name: free
    deployments: [{{provider: local}}]
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

/// The consumer's spend rule on the status page: (used, limit) in USD.
fn status_spend(gw: &Gw) -> (f64, f64) {
    let s = get(&gw.admin_url("/status.json"), Some("admin-secret")).json();
    let rule = s["consumers"][0]["limits"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["rule"] == "consumer:payer/budget"))
        .unwrap_or_else(|| panic!("no budget in {s}"))
        .clone();
    assert_eq!(rule["what"], "USD this window");
    (
        rule["used"].as_f64().unwrap(),
        rule["limit"].as_f64().unwrap(),
    )
}

#[test]
fn a_budget_admits_what_it_pays_for_then_answers_insufficient_quota() {
    let gw = Gw::start(&format!(
        "admin: {{key: admin-secret}}\n{}",
        yaml(
            "",
            "{name: budget, spend: {limit_usd: 0.05, time_window: 1h}}"
        )
    ));
    // Twelve at once: exactly five fit (each reserves its cent at admission).
    let statuses = burst_as(&[&gw], &[KEY], "cent", 12, 6);
    assert_eq!(count(&statuses, 200), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 7, "{statuses:?}");
    let r = chat(&gw, "cent");
    assert_eq!(r.status, 429);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "insufficient_quota", "{}", r.body);
    assert_eq!(e["code"], "insufficient_quota");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("consumer:payer/budget"),
        "{e}"
    );
    // The budget frees in an hour: the SDKs are told not to retry in seconds.
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert!(r.header("x-request-id").is_some());
    // A model without a price costs nothing and so is not held by the budget (`check`
    // warns about it).
    assert_eq!(chat(&gw, "free").status, 200);
    // Refusals are counted under their own kind.
    let refused = gw.metric(
        "gateway_limit_decisions_total",
        &[("kind", "spend"), ("outcome", "rejected")],
    );
    assert!(refused >= 8.0, "{refused}");
    let (used, limit) = status_spend(&gw);
    assert!((used - 0.05).abs() < 1e-9 && (limit - 0.05).abs() < 1e-9);
}

#[test]
fn a_reload_keeps_what_was_spent_and_applies_the_new_budget() {
    let gw = Gw::start(&format!(
        "admin: {{key: admin-secret}}\n{}",
        yaml(
            "",
            "{name: budget, spend: {limit_usd: 0.03, time_window: 1h}}"
        )
    ));
    let first: Vec<Resp> = (0..4).map(|_| chat(&gw, "cent")).collect();
    let statuses: Vec<u16> = first.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Each answer says what is left of the budget after it (its cent reserved).
    let left: Vec<Option<&str>> = first
        .iter()
        .map(|r| r.header("x-gateway-budget-remaining-usd"))
        .collect();
    assert_eq!(left[..3], [Some("0.02"), Some("0.01"), Some("0")]);
    assert!(first[0]
        .header("x-gateway-budget-reset")
        .unwrap()
        .ends_with('s'));
    gw.write_config(&format!(
        "admin: {{key: admin-secret}}\n{}",
        yaml(
            "",
            "{name: budget, spend: {limit_usd: 0.05, time_window: 1h}}"
        )
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_spend(&gw).1 < 0.05 {
        assert!(std::time::Instant::now() < deadline, "no reload");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Three cents spent stay spent: two more fit in the new five.
    let after: Vec<u16> = (0..3).map(|_| chat(&gw, "cent").status).collect();
    assert_eq!(after, [200, 200, 429]);
}

#[test]
fn the_reservation_is_reconciled_with_the_real_cost() {
    // A larger completion budget reserves more than the answer costs; the difference
    // comes back when the answer's usage is known. (`admission: reserve`: a hard budget
    // would cap the last request to what is left instead.)
    let gw = Gw::start(&format!(
        "admin: {{key: admin-secret}}\n{}",
        yaml(
            "",
            "{name: budget, spend: {limit_usd: 0.10, time_window: 1h, admission: reserve}}"
        )
    ));
    let body = serde_json::json!({"model": "cent", "max_tokens": 40,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    // Each reserves 40 × $0.002 = $0.08 of the $0.10 and is charged one cent: one at a
    // time they all pass until less than $0.08 is left. One keep-alive connection, as SDKs
    // send: the gateway reconciles a request before it reads the connection's next one.
    let client = agent();
    let seen: Vec<u16> = (0..4)
        .map(|_| post_on(&client, &gw.url("/v1/chat/completions"), Some(KEY), &body).status)
        .collect();
    assert_eq!(seen, [200, 200, 200, 429], "8 cents are needed free");
    let (used, _) = status_spend(&gw);
    assert!((used - 0.03).abs() < 1e-9, "charged the real cost: {used}");
}

#[test]
fn batch_work_is_charged_its_discounted_cost() {
    use common::batches::{chat_requests, create_inline, wait_status};
    let gw = Gw::start(&format!(
        "admin: {{key: admin-secret}}\n{}",
        yaml(
            "",
            "{name: budget, spend: {limit_usd: 1, time_window: 20s}}"
        )
    ));
    // Batch work is paced over the window (as on token limits): a short window lets the
    // five through at once. chat_requests asks for 2 completion tokens: $0.004, half price in a batch.
    let id = create_inline(&gw, KEY, &chat_requests(5, "q", "cent"));
    wait_status(&gw, KEY, &id, &["completed"], 30);
    let (used, _) = status_spend(&gw);
    assert!((used - 5.0 * 0.002).abs() < 1e-9, "{used}");
}

#[test]
fn check_warns_when_a_spend_limit_covers_a_model_without_a_price() {
    let budget =
        |usd: i32| format!("{{name: budget, spend: {{limit_usd: {usd}, time_window: 24h}}}}");
    let out = check_config(&yaml("", &budget(1)));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: models[1].deployments[0] (local/free): no price")
            && err.contains("consumer(s) payer"),
        "{err}"
    );
    assert!(
        !err.contains("models[0]"),
        "the priced model is fine: {err}"
    );
    // A bad budget is refused with its path.
    let out = check_config(&yaml("", &budget(-1)));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consumers[0].limits[0].spend.limit_usd"),
        "{err}"
    );
}

#[test]
fn two_gateways_on_one_redis_share_one_budget_exactly() {
    let redis = Redis::start();
    let limits = format!(
        "policy: redis, redis: {{url: \"{}\", timeout: 500ms}}, lease_ttl: 5s",
        redis.url()
    );
    // $1 pays for exactly 100 one-cent requests.
    let cfg = yaml(
        &limits,
        "{name: budget, spend: {limit_usd: 1, time_window: 1h}}",
    );
    let a = Gw::start(&format!("admin: {{key: admin-secret}}\n{cfg}"));
    let b = Gw::start(&cfg);
    let statuses = burst_as(&[&a, &b], &[KEY], "cent", 150, 8);
    assert_eq!(count(&statuses, 200), 100, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 50, "{statuses:?}");
    // Everything was charged its real cost: the whole budget, spent, and none left.
    let (used, _) = status_spend(&a);
    assert!((used - 1.0).abs() < 1e-9, "{used}");
    assert_eq!(chat(&b, "cent").status, 429);
    assert!(redis
        .cmd(&["KEYS", "*"])
        .unwrap()
        .contains("ai-rate-limiter-spend:v1:consumer:payer/budget"));
}

#[test]
fn a_queued_request_waits_for_a_reservation_to_be_reconciled() {
    // Answers take a second; each reserves $0.08 of the $0.10 and costs one cent. With
    // `on_limit: queue` the second of two concurrent requests waits for the first's
    // reservation to become its real cost, then fits ($0.01 + $0.08), instead of a 429.
    let cfg = yaml(
        "",
        "{name: budget, spend: {limit_usd: 0.10, time_window: 1h, admission: reserve}, on_limit: queue, max_wait: 5s}",
    )
    .replace(
        "mock: {completion_tokens: 5}",
        "mock: {completion_tokens: 5, latency_ms: 1000}",
    );
    let gw = Gw::start(&cfg);
    let url = gw.url("/v1/chat/completions");
    let body = serde_json::json!({"model": "cent", "max_tokens": 40,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let both: Vec<_> = (0..2)
        .map(|i| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100 * i));
                post(&url, Some(KEY), &body).status
            })
        })
        .collect();
    let statuses: Vec<u16> = both.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses, [200, 200]);
    // One of them waited (without the queue it would have been refused).
    assert_eq!(
        gw.metric(
            "gateway_limit_decisions_total",
            &[("kind", "spend"), ("outcome", "queued")]
        ),
        1.0
    );
}
