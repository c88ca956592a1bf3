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
