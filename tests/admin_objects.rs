//! Providers and models through the Admin API (the original design's queues, a batch run
//! on them; credentials write-only; URLs to public addresses only) and the models a
//! consumer may use.

mod common;
use common::admin::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn a_provider_and_a_queue_made_through_the_api_run_a_batch() {
    let gw = Gw::start(&yaml(true));
    // The original design's flow: a provider, a model ("queue"), a batch on it.
    let p = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "mock-q", "kind": "mock", "mock": {"completion_tokens": 3}})),
    );
    assert_eq!(p.status, 201, "{}", p.body);
    let m = admin(
        &gw,
        "POST",
        "/admin/models",
        ADMIN,
        Some(json!({"name": "queue-a",
        "deployments": [{"provider": "mock-q", "model": "mock-1"}],
        "limits": [{"name": "rpm", "count": {"count": 100, "time_window": "60s"}}]})),
    );
    assert_eq!(m.status, 201, "{}", m.body);
    let key = "sk-file-consumer";
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(key),
        &chat_body("queue-a", "hi", false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let requests: Vec<Value> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("q{i}"), "body": {"model": "queue-a",
            "messages": [{"role": "user", "content": "hello"}]}})
        })
        .collect();
    let b = post(
        &gw.url("/v1/batches"),
        Some(key),
        &json!({"endpoint": "/v1/chat/completions", "requests": requests}).to_string(),
    );
    assert_eq!(b.status, 200, "{}", b.body);
    let id = b.json()["id"].as_str().unwrap().to_string();
    wait_until("the batch completes", || {
        get(&gw.url(&format!("/v1/batches/{id}")), Some(key)).json()["status"] == "completed"
    });
    let results = get(
        &gw.url(&format!("/v1/batches/{id}/results?format=json")),
        Some(key),
    )
    .json();
    assert_eq!(results["data"].as_array().unwrap().len(), 3);
    assert_eq!(results["data"][0]["custom_id"], "q0");
    let csv = get(
        &gw.url(&format!("/v1/batches/{id}/results?format=csv")),
        Some(key),
    )
    .body;
    assert!(csv.lines().nth(1).unwrap().starts_with("q0,200,"), "{csv}");

    // A provider's credentials are write-only; its URL must reach a public address.
    let secret = "sk-provider-secret-98765";
    let internal = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "inside",
        "kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": secret})),
    );
    assert_eq!(internal.status, 400, "{}", internal.body);
    assert_eq!(internal.json()["error"]["param"], "base_url");
    let metadata = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "meta",
        "kind": "openai-compatible", "base_url": "http://169.254.169.254/v1"})),
    );
    assert_eq!(metadata.status, 400, "{}", metadata.body);
    let file = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "v",
        "kind": "vertex", "credentials_file": "/etc/shadow"})),
    );
    assert_eq!(file.status, 400, "{}", file.body);
    let unknown = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "x", "kind": "quantum"})),
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    // A setting of another kind is named, as in the file.
    let misplaced = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "o", "kind": "openai", "region": "us-east-1"})),
    );
    assert_eq!(misplaced.status, 400, "{}", misplaced.body);
    assert!(
        misplaced
            .body
            .contains("only a provider of kind bedrock takes region"),
        "{}",
        misplaced.body
    );
    let keyed = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(json!({"name": "keyed",
        "kind": "openai", "api_key": secret, "headers": {"x-org": "secret-org"}})),
    );
    assert_eq!(keyed.status, 201, "{}", keyed.body);
    let shown = admin(&gw, "GET", "/admin/providers/keyed", VIEWER, None).body
        + &admin(&gw, "GET", "/admin/providers", VIEWER, None).body
        + &admin(&gw, "GET", "/admin/audit", VIEWER, None).body;
    assert!(
        !shown.contains(secret) && !shown.contains("secret-org"),
        "{shown}"
    );
    assert!(shown.contains("\"api_key_set\":true"));
    // PATCH merges into the stored model; If-Match guards it; lists page.
    let got = admin(&gw, "GET", "/admin/models/queue-a", ADMIN, None);
    let tag = got.header("etag").unwrap().to_string();
    let url = gw.admin_url("/admin/models/queue-a");
    let patch = json!({"aliases": ["qa"]});
    let p = send(
        "PATCH",
        &url,
        &[("x-api-key", ADMIN), ("if-match", &tag)],
        Some(&patch),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["spec"]["aliases"], json!(["qa"]));
    assert_eq!(
        p.json()["spec"]["deployments"][0]["provider"],
        "mock-q",
        "merged, not replaced"
    );
    let stale = send(
        "PATCH",
        &url,
        &[("x-api-key", ADMIN), ("if-match", &tag)],
        Some(&patch),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(key),
        &chat_body("qa", "hi", false),
    );
    assert_eq!(r.status, 200, "the alias works: {}", r.body);
    let page = admin(&gw, "GET", "/admin/models?limit=1", VIEWER, None).json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    let rest = admin(
        &gw,
        "GET",
        &format!("/admin/models?after={}", page["last"].as_str().unwrap()),
        VIEWER,
        None,
    )
    .json();
    assert!(!rest["data"].as_array().unwrap().is_empty());
    // A model naming a provider that does not exist; deleting a provider a model uses.
    let orphan = admin(
        &gw,
        "POST",
        "/admin/models",
        ADMIN,
        Some(json!({"name": "orphan",
        "deployments": [{"provider": "nowhere"}]})),
    );
    assert_eq!(orphan.status, 400, "{}", orphan.body);
    let used = admin(&gw, "DELETE", "/admin/providers/mock-q", ADMIN, None);
    assert_eq!(used.status, 409, "{}", used.body);
    assert_eq!(
        admin(&gw, "DELETE", "/admin/models/queue-a", ADMIN, None).status,
        200
    );
    assert_eq!(
        admin(&gw, "DELETE", "/admin/providers/mock-q", ADMIN, None).status,
        200
    );
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some(key),
        &chat_body("queue-a", "hi", false),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // The file's objects are read-only here.
    let m = admin(
        &gw,
        "PUT",
        "/admin/models/m",
        ADMIN,
        Some(json!({"deployments": []})),
    );
    assert_eq!(m.status, 409, "{}", m.body);
}

#[test]
fn a_consumer_uses_only_its_allowed_models() {
    let gw = Gw::start(&yaml(true));
    let m2 = admin(
        &gw,
        "POST",
        "/admin/models",
        ADMIN,
        Some(json!({"name": "m2", "deployments": [{"provider": "mock"}]})),
    );
    assert_eq!(m2.status, 201, "{}", m2.body);
    let c = admin(
        &gw,
        "POST",
        "/admin/consumers",
        ADMIN,
        Some(json!({"name": "narrow", "models": ["m"]})),
    );
    assert_eq!(c.status, 201, "{}", c.body);
    let (key, _) = new_key(&gw, "narrow");
    assert_eq!(chat(&gw, &key), 200);
    let other = post(
        &gw.url("/v1/chat/completions"),
        Some(&key),
        &chat_body("m2", "hi", false),
    );
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(other.json()["error"]["code"], "model_not_found");
    let listed = get(&gw.url("/v1/models"), Some(&key)).json();
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m"]);
    assert_eq!(get(&gw.url("/v1/models/m2"), Some(&key)).status, 404);
    // Everyone else still sees both.
    let all = post(
        &gw.url("/v1/chat/completions"),
        Some("sk-file-consumer"),
        &chat_body("m2", "hi", false),
    );
    assert_eq!(all.status, 200);
}
