//! Prices through the real binary: `ai-rate-limiter prices` prints every deployment's
//! effective price, and a bad price is refused with its path.

mod common;
use common::*;

fn prices(yaml: &str) -> std::process::Output {
    cli_on_config("prices", yaml)
}

#[test]
fn prices_prints_each_deployments_effective_price() {
    let out = prices(
        r#"
auth: {enabled: false}
providers: [{name: oa, kind: openai, api_key: sk-secret-key}, {name: local, kind: mock}]
models:
  - name: gpt-4o
    price: {input: 2.5, output: 10, batch_discount: 0.5}
    deployments:
      - {provider: oa, price: {output: 8, reasoning: 12}}
  - name: mock
    deployments: [{provider: local}]
"#,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text.lines().find(|l| l.starts_with("gpt-4o")).unwrap();
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "gpt-4o",
            "oa/gpt-4o",
            "2.5",
            "8",
            "2.5 (= input)",
            "2.5 (= input)",
            "12",
            "50%"
        ]
    );
    assert!(text.contains("no price"), "{text}");
    assert!(!text.contains("sk-secret-key"));
}

#[test]
fn a_bad_price_is_refused_with_its_path() {
    let out = prices(
        "auth: {enabled: false}\nproviders: [{name: l, kind: mock}]\nmodels: [{name: m, deployments: [{provider: l, price: {input: -2, output: 1}}]}]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("models[0].deployments[0].price.input"),
        "{err}"
    );
}

/// A gateway with a priced model (realtime requests pay full price, batches half) and an
/// unpriced one, for consumer `alice`.
fn priced_gateway() -> Gw {
    Gw::start(
        r#"
consumers: [{name: alice, keys: [sk-alice]}]
providers: [{name: local, kind: mock}]
models:
  - name: priced
    price: {input: 2.5, output: 10, batch_discount: 0.5}
    deployments: [{provider: local}]
  - name: free
    deployments: [{provider: local}]
"#,
    )
}

#[test]
fn each_answer_carries_its_cost_and_the_metric_adds_it_up() {
    let gw = priced_gateway();
    let url = gw.url("/v1/chat/completions");
    let r = post(
        &url,
        Some("sk-alice"),
        &chat_body("priced", "what does this cost?", false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let u = &r.json()["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_f64().unwrap(),
        u["completion_tokens"].as_f64().unwrap(),
    );
    let want = (p * 2.5 + c * 10.0) / 1e6;
    let header: f64 = r
        .header("x-gateway-cost-usd")
        .expect("a cost header")
        .parse()
        .unwrap();
    assert!((header - want).abs() < 1e-9, "{header} vs {want}");
    // A stream's cost reaches the metric (its headers left before its usage came).
    let s = post(
        &url,
        Some("sk-alice"),
        &chat_body("priced", "and a stream?", true),
    );
    assert_eq!(s.status, 200);
    assert!(s.header("x-gateway-cost-usd").is_none());
    // A model without a price has no cost.
    let f = post(&url, Some("sk-alice"), &chat_body("free", "hi", false));
    assert!(f.header("x-gateway-cost-usd").is_none());
    let labels = [
        ("model", "priced"),
        ("provider", "local"),
        ("consumer", "alice"),
    ];
    let spent = |m: &str| metric_sum(m, "gateway_spend_usd_total", &labels);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while spent(&gw.metrics()) <= want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let total = spent(&gw.metrics());
    assert!(
        total > want && total < 3.0 * want,
        "{total} after {want} and a stream"
    );
    assert_eq!(
        metric_sum(
            &gw.metrics(),
            "gateway_spend_usd_total",
            &[("model", "free")]
        ),
        0.0
    );
}

#[test]
fn batch_lines_carry_their_discounted_cost() {
    use common::batches::{chat_requests, create_inline, wait_status};
    let gw = priced_gateway();
    let id = create_inline(&gw, "sk-alice", &chat_requests(2, "q", "priced"));
    wait_status(&gw, "sk-alice", &id, &["completed"], 30);
    let results = get(
        &gw.url(&format!("/v1/batches/{id}/results?format=json")),
        Some("sk-alice"),
    )
    .json();
    let data = results["data"].as_array().expect("lines");
    assert_eq!(data.len(), 2);
    for line in data {
        let u = &line["response"]["body"]["usage"];
        let (p, c) = (
            u["prompt_tokens"].as_f64().unwrap(),
            u["completion_tokens"].as_f64().unwrap(),
        );
        let want = (p * 2.5 + c * 10.0) / 1e6 * 0.5;
        let got = line["cost_usd"]
            .as_f64()
            .unwrap_or_else(|| panic!("no cost_usd in {line}"));
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}
