//! The APISIX-compatible subset of the Admin API (issue 26): an APISIX automation script's
//! calls (a consumer with key-auth and limit-count, a route with ai-proxy and
//! ai-rate-limiting) replayed against `/apisix/admin` behave as importing the same objects
//! from a file; answers come in APISIX's shapes; what the importer cannot map is refused
//! with its reason; keys are not stored readable.

mod common;
use common::fixture_server::{recording, Reply};
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "apisix-admin-key-0123456789";
const JACK: &str = "jack-key-0123456789abcdef";

fn upstream() -> u16 {
    recording(|_| {
        Reply::json(
            "200 OK",
            r#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-4","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":5,"total_tokens":13}}"#,
        )
    })
    .0
}

fn consumer() -> Value {
    json!({"username": "jack", "plugins": {"key-auth": {"key": JACK},
        "limit-count": {"count": 2, "time_window": 60, "rejected_code": 429}}})
}

fn route(port: u16) -> Value {
    json!({"uri": "/ai", "plugins": {"key-auth": {},
        "ai-proxy": {"provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-upstream"}},
            "options": {"model": "gpt-4"}, "override": {"endpoint": format!("http://127.0.0.1:{port}")}},
        "ai-rate-limiting": {"limit": 30, "time_window": 60, "policy": "local"}}})
}

fn put(gw: &Gw, path: &str, body: &Value) -> Resp {
    send(
        "PUT",
        &gw.admin_url(path),
        &[("x-api-key", ADMIN)],
        Some(body),
    )
}

/// Three chats on `/ai` as jack: each status and its X-RateLimit-Remaining.
fn three_chats(gw: &Gw) -> Vec<(u16, Option<String>)> {
    let body = r#"{"messages":[{"role":"user","content":"1+1?"}]}"#;
    (0..3)
        .map(|_| {
            let r = send(
                "POST",
                &gw.url("/ai"),
                &[("apikey", JACK)],
                Some(&serde_json::from_str(body).unwrap()),
            );
            (
                r.status,
                r.header("x-ratelimit-remaining").map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn a_replayed_apisix_script_behaves_as_the_imported_file() {
    let port = upstream();
    // Through the compatible subset.
    let api = Gw::start(&format!(
        "admin: {{keys: [{{id: ops, key: \"{ADMIN}\"}}], provider_allow_networks: [127.0.0.1/32]}}\n\
         auth: {{enabled: true}}\n"
    ));
    let c = put(&api, "/apisix/admin/consumers/jack", &consumer());
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.json()["key"], "/apisix/consumers/jack");
    assert_eq!(c.json()["value"]["username"], "jack");
    let r = put(&api, "/apisix/admin/routes/1", &route(port));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["value"]["plugins"]["ai-proxy"]["auth"],
        "<write-only>"
    );
    let list = send(
        "GET",
        &api.admin_url("/apisix/admin/routes"),
        &[("x-api-key", ADMIN)],
        None,
    );
    assert_eq!(list.json()["total"], 1);
    assert_eq!(list.json()["list"][0]["key"], "/apisix/routes/1");
    let through_api = three_chats(&api);

    // The same objects imported from a file.
    let doc = json!({"consumers": [consumer()], "routes": [json!({"id": "1"}).as_object().unwrap()
        .clone().into_iter().chain(route(port).as_object().unwrap().clone()).collect::<serde_json::Map<_, _>>()]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apisix.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("import-apisix")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = Gw::start(&String::from_utf8(out.stdout).unwrap());
    let from_file = three_chats(&imported);
    assert_eq!(through_api, from_file);
    assert_eq!(
        through_api.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [200, 200, 429],
        "limit-count 2 of jack"
    );

    // A provider at an internal address is refused (only 127.0.0.1 is allowed here).
    let mut inside = route(port);
    inside["plugins"]["ai-proxy"]["override"]["endpoint"] = json!("http://169.254.169.254/latest");
    let r = put(&api, "/apisix/admin/routes/9", &inside);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error_msg"].is_string());
    // No readable key stored; an object the importer cannot map is refused with its reason.
    let stored = send(
        "GET",
        &api.admin_url("/apisix/admin/consumers/jack"),
        &[("x-api-key", ADMIN)],
        None,
    );
    assert!(!stored.body.contains(JACK), "{}", stored.body);
    let bad = put(
        &api,
        "/apisix/admin/routes/2",
        &json!({"uri": "/x", "plugins": {"serverless-pre-function": {"functions": ["return"]}}}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["error_msg"]
            .as_str()
            .unwrap()
            .contains("serverless-pre-function"),
        "{}",
        bad.body
    );
    let no_key = send(
        "PUT",
        &api.admin_url("/apisix/admin/consumers/x"),
        &[],
        Some(&consumer()),
    );
    assert_eq!(no_key.status, 401);
    assert!(no_key.json()["error_msg"].is_string(), "{}", no_key.body);
    // Deleting the consumer ends its key.
    let d = send(
        "DELETE",
        &api.admin_url("/apisix/admin/consumers/jack"),
        &[("x-api-key", ADMIN)],
        None,
    );
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(three_chats(&api)[0].0, 401);
}
