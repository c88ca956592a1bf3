//! Attacks and operator mistakes against the real binary: strict upstream URLs, and an
//! upstream that refuses the gateway's own credentials.

mod common;
use common::fixture_server::{self, Reply, Request};
use common::upstream::completion;
use common::*;
use std::process::Command;

#[test]
fn check_refuses_userinfo_and_ports_out_of_range_with_the_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        r#"
providers:
  - {name: a, kind: openai-compatible, base_url: "http://user:pw@127.0.0.1:80800/v1", api_key: k}
  - {name: b, kind: openai-compatible, base_url: "http://127.0.0.1:80800/v1", api_key: k}
  - {name: c, kind: openai-compatible, base_url: "http://127.0.0.1:0/v1", api_key: k}
  - {name: d, kind: openai-compatible, base_url: "http://127.0.0.1:65535/v1", api_key: k}
models:
  - {name: m, deployments: [{provider: a}, {provider: b}, {provider: c}, {provider: d}]}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("providers[0].base_url") && err.contains("credentials"),
        "{err}"
    );
    assert!(
        !err.contains("user:pw"),
        "the password is not echoed: {err}"
    );
    assert!(
        err.contains("providers[1].base_url") && err.contains("1-65535"),
        "{err}"
    );
    assert!(err.contains("providers[2].base_url"), "{err}");
    assert!(
        !err.contains("providers[3]"),
        "65535 is a valid port: {err}"
    );
}

const GOOD: &str = "sk-provider-good-0123456789";
const BAD: &str = "sk-provider-revoked-0123456789";

/// An OpenAI-compatible upstream that accepts only `GOOD`, answering others as OpenAI
/// does (401 `invalid_api_key`, echoing a fragment of the key).
fn upstream() -> (u16, fixture_server::Recorded) {
    fixture_server::recording(|r: &Request| {
        if r.header("authorization") == Some(&format!("Bearer {GOOD}")) {
            Reply::json("200 OK", completion("m", "hello"))
        } else if r.header("authorization") == Some(&format!("Bearer {BAD}")) {
            Reply::json(
                "401 Unauthorized",
                format!(
                    r#"{{"error":{{"message":"Incorrect API key provided: {BAD}.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
                ),
            )
        } else {
            Reply::json("403 Forbidden", r#"{"error":{"message":"forbidden"}}"#)
        }
    })
}

fn yaml(port: u16) -> String {
    format!(
        r#"
consumers: [{{name: c, keys: ["sk-client"]}}]
providers:
  - {{name: revoked, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: "{BAD}"}}
  - {{name: good, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: "{GOOD}"}}
models:
  - {{name: failover, deployments: [{{provider: revoked}}, {{provider: good}}]}}
  - {{name: only-revoked, deployments: [{{provider: revoked}}]}}
"#
    )
}

#[test]
fn an_upstream_401_fails_over_and_is_never_the_clients_401() {
    let (port, seen) = upstream();
    let gw = Gw::start(&yaml(port));
    let chat = |model: &str| {
        post(
            &gw.url("/v1/chat/completions"),
            Some("sk-client"),
            &chat_body(model, "hi", false),
        )
    };
    // The revoked key is tried, cooled down, and the request fails over.
    let r = chat("failover");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(
        gw.metric(
            "gateway_upstream_errors_total",
            &[("provider", "revoked"), ("kind", "auth_rejected")]
        ),
        1.0
    );
    // Cooling down: the next request goes straight to the good key.
    assert_eq!(chat("failover").status, 200);
    assert_eq!(seen.lock().unwrap().len(), 3);

    // No deployment left: 502 with a code that names the real problem, twice (the second
    // answer comes from the cool-down, not a 429).
    for _ in 0..2 {
        let r = chat("only-revoked");
        assert_eq!(r.status, 502, "{}", r.body);
        let e = r.json();
        assert_eq!(e["error"]["code"], "provider_auth_failed", "{}", r.body);
        assert_eq!(e["error"]["type"], "server_error");
        assert!(r.header("x-request-id").is_some());
        assert_eq!(r.header("x-should-retry"), Some("false"));
        assert!(!r.everything().contains(BAD) && !r.everything().contains("sk-provider"));
    }
    let log = gw.wait_log(|l| l.contains("rejected the gateway's credentials"));
    assert!(log.contains("rejected the gateway's credentials"), "{log}");
    assert!(!log.contains(BAD), "the key never reaches the log");
}

/// A batch config for the webhook tests; `allow` opens networks to webhooks.
fn batch_yaml(dir: &std::path::Path, allow: &str) -> String {
    format!(
        r#"
consumers: [{{name: c, keys: ["sk-client"]}}]
providers:
  - {{name: mock, kind: mock}}
  - {{name: slow, kind: mock, mock: {{latency_ms: 2500}}}}
models:
  - {{name: m, deployments: [{{provider: mock}}]}}
  - {{name: slow, deployments: [{{provider: slow}}]}}
reload: {{poll_interval: 200ms}}
batch: {{data_dir: "{}", webhook_allow_networks: [{allow}]}}
"#,
        dir.display()
    )
}

fn inline_with_webhook(gw: &Gw, url: &str) -> Resp {
    let requests = batches::chat_requests(2, "w", "m");
    post(
        &gw.url("/v1/batches"),
        Some("sk-client"),
        &serde_json::json!({"endpoint": "/v1/chat/completions", "requests": requests,
                            "webhook_url": url})
        .to_string(),
    )
}

#[test]
fn webhooks_cannot_reach_internal_addresses() {
    let (port, got) = fixture_server::recording(|_: &Request| Reply::json("200 OK", "{}"));
    let data = tempfile::tempdir().unwrap();
    let gw = Gw::start(&batch_yaml(data.path(), ""));
    // Loopback (by address and by name), private, link-local (cloud metadata), unique-local
    // and unspecified targets, and other schemes, are refused when the batch is created.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/iam".into(),
        "http://10.0.0.1:6379/".into(),
        "http://192.168.1.1/".into(),
        "http://[fd00::1]/".into(),
        "http://0.0.0.0:22/".into(),
        "gopher://127.0.0.1:6379/_PING".into(),
        "http://user:pw@127.0.0.1:80800/".into(),
    ] {
        let r = inline_with_webhook(&gw, &url);
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        let e = r.json();
        assert_eq!(e["error"]["code"], "invalid_webhook_url", "{url}");
        assert_eq!(e["error"]["param"], "webhook_url");
        assert!(r.header("x-request-id").is_some());
    }
    assert!(got.lock().unwrap().is_empty(), "nothing was sent anywhere");

    // The operator opens loopback: accepted and delivered.
    gw.write_config(&batch_yaml(data.path(), "127.0.0.0/8"));
    let url = format!("http://127.0.0.1:{port}/hook");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = inline_with_webhook(&gw, &url);
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(200)); // the reload lands
    };
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let batch = wait_webhook(&gw, &id);
    assert_eq!(batch["webhook"]["delivered"], 1, "{batch}");
    assert_eq!(got.lock().unwrap().len(), 1);

    // Checked again at delivery: a batch accepted while loopback was open, delivered after
    // the network was closed again, is refused, and the consumer learns nothing more.
    let slow = post(
        &gw.url("/v1/batches"),
        Some("sk-client"),
        &serde_json::json!({"endpoint": "/v1/chat/completions", "webhook_url": url,
            "requests": [{"custom_id": "s", "body": {"model": "slow",
                          "messages": [{"role": "user", "content": "x"}]}}]})
        .to_string(),
    );
    assert_eq!(slow.status, 200, "{}", slow.body);
    let slow_id = slow.json()["id"].as_str().unwrap().to_string();
    gw.write_config(&batch_yaml(data.path(), ""));
    let batch = wait_webhook(&gw, &slow_id);
    assert_eq!(batch["webhook"]["delivered"], 0, "{batch}");
    assert_eq!(
        batch["webhook"]["last"]["error"], "refused by the egress policy",
        "{batch}"
    );
    assert_eq!(got.lock().unwrap().len(), 1, "no second delivery");
}

/// Wait until batch `id` has a webhook outcome; returns the batch.
fn wait_webhook(gw: &Gw, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let b = get(&gw.url(&format!("/v1/batches/{id}")), Some("sk-client")).json();
        if !b["webhook"]["last"].is_null() {
            return b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no webhook outcome: {b}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Consumer keys may be given by their SHA-256 digest: the config holds nothing a reader
/// could present, the key itself works, and the digest text is not a key.
#[test]
fn consumer_keys_given_by_digest_work_and_the_digest_is_not_a_key() {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(b"sk-team-secret"));
    let yaml = format!(
        "consumers: [{{name: team, keys: [\"sha256:{digest}\"]}}]\n\
         providers: [{{name: mock, kind: mock}}]\n\
         models: [{{name: m, deployments: [{{provider: mock}}]}}]\n"
    );
    let gw = Gw::start(&yaml);
    let ask = |key: &str| {
        post(
            &gw.url("/v1/chat/completions"),
            Some(key),
            &chat_body("m", "hi", false),
        )
        .status
    };
    assert_eq!(ask("sk-team-secret"), 200);
    assert_eq!(ask(&digest), 401);
    assert_eq!(ask(&format!("sha256:{digest}")), 401);
    // A malformed digest is a config problem with its path; a key and its digest are
    // the same key.
    let bad = check_config(&yaml.replace(&digest, "abc"));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("consumers[0].keys[0]: a key given as sha256: must be 64 hex digits"),
        "{err}"
    );
    let twice = check_config(&yaml.replace(
        &format!("\"sha256:{digest}\""),
        &format!("\"sha256:{digest}\", sk-team-secret"),
    ));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("the same key is already used"), "{err}");
}
