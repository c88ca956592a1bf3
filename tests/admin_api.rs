//! The Admin API through the real binary (issue 26, first slice): consumers and keys
//! created at runtime work at once and survive restarts, limits apply, keys rotate and
//! revoke, the key's secret appears nowhere after the create answer, the file's consumers
//! are read-only, hostile requests get clear errors and store nothing, the OpenAPI
//! document matches the routes, and without admin keys the API is off.

mod common;
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "adm-key-0123456789abcdef";
const VIEWER: &str = "viewer-key-0123456789abcd";

fn yaml(admin_keys: bool) -> String {
    let keys = if admin_keys {
        format!(
            "admin:\n  key: status-page-key\n  data_dir: admin-data\n  keys:\n    - {{id: ops, key: \"{ADMIN}\"}}\n    \
             - {{id: watcher, key: \"{VIEWER}\", role: viewer}}\n"
        )
    } else {
        String::new()
    };
    format!(
        "{keys}auth: {{enabled: true}}\nconsumers:\n  - {{name: filebound, keys: [\"sk-file-consumer\"]}}\n\
         providers:\n  - {{name: mock, kind: mock}}\nmodels:\n  - name: m\n    deployments: [{{provider: mock, model: mock-1}}]\n"
    )
}

fn admin(gw: &Gw, method: &str, path: &str, key: &str, body: Option<Value>) -> Resp {
    send(
        method,
        &gw.admin_url(path),
        &[("x-api-key", key)],
        body.as_ref(),
    )
}

fn chat(gw: &Gw, key: &str) -> u16 {
    post(
        &gw.url("/v1/chat/completions"),
        Some(key),
        &chat_body("m", "hi", false),
    )
    .status
}

fn new_key(gw: &Gw, consumer: &str) -> (String, String) {
    let r = admin(
        gw,
        "POST",
        &format!("/admin/consumers/{consumer}/keys"),
        ADMIN,
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let j = r.json();
    (
        j["key"].as_str().unwrap().to_string(),
        j["id"].as_str().unwrap().to_string(),
    )
}

/// Every byte under `dir`, as text.
fn all_bytes(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}

#[test]
fn consumers_and_keys_at_runtime_work_survive_restarts_and_never_leak_the_key() {
    let mut gw = Gw::start(&yaml(true));
    let created = admin(
        &gw,
        "POST",
        "/admin/consumers",
        ADMIN,
        Some(json!({"name": "team-a",
        "limits": [{"name": "rpm", "count": {"count": 3, "time_window": "60s"}}],
        "metadata": {"owner": "platform"}})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["source"], "api");
    // A dry run answers what would change and stores nothing.
    let dry = admin(
        &gw,
        "POST",
        "/admin/consumers?dry_run=true",
        ADMIN,
        Some(json!({"name": "ghost"})),
    );
    assert_eq!(
        (dry.status, dry.json()["dry_run"].clone()),
        (200, json!(true)),
        "{}",
        dry.body
    );
    assert_eq!(
        admin(&gw, "GET", "/admin/consumers/ghost", ADMIN, None).status,
        404
    );

    let (key, id) = new_key(&gw, "team-a");
    assert!(key.starts_with("sk-gw-"));
    // Works at once, under its consumer's limits.
    let statuses: Vec<u16> = (0..4).map(|_| chat(&gw, &key)).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Its usage, for the operator and for the key holder itself.
    let usage = admin(&gw, "GET", "/admin/consumers/team-a/usage", VIEWER, None).json();
    let rpm = &usage["limits"][0];
    // (limit-count counts the refused request too, as APISIX does.)
    assert!(rpm["used"].as_f64().unwrap() >= 3.0, "{usage}");
    assert_eq!(
        (rpm["limit"].clone(), rpm["remaining"].clone()),
        (json!(3.0), json!(0.0))
    );
    let me = get(&gw.url("/v1/me"), Some(&key));
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["consumer"], "team-a");
    assert_eq!(me.json()["limits"], usage["limits"]);
    assert_eq!(get(&gw.url("/v1/me"), Some("sk-nobody")).status, 401);

    // The status page lists it with its limits.
    let page = get(&gw.admin_url("/status.json"), Some("status-page-key")).json();
    let listed: Vec<&str> = page["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"team-a"), "{page}");
    // Listed with its prefix, never the key; the file's consumer read-only.
    let listed = admin(&gw, "GET", "/admin/consumers", VIEWER, None);
    assert_eq!(listed.status, 200);
    let names: Vec<(String, String)> = listed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("filebound".into(), "file".into()),
            ("team-a".into(), "api".into())
        ]
    );
    assert_eq!(listed.json()["data"][1]["keys"][0]["prefix"], key[..10]);
    for (m, body) in [("PUT", Some(json!({}))), ("DELETE", None)] {
        let r = admin(&gw, m, "/admin/consumers/filebound", ADMIN, body);
        assert_eq!(r.status, 409, "{m}: {}", r.body);
    }
    let clash = admin(
        &gw,
        "POST",
        "/admin/consumers",
        ADMIN,
        Some(json!({"name": "filebound"})),
    );
    assert_eq!(clash.status, 409);

    // Rotation: both work during the grace, then only the new one.
    let rotated = admin(
        &gw,
        "POST",
        &format!("/admin/consumers/team-a/keys/{id}/rotate"),
        ADMIN,
        Some(json!({"grace_seconds": 2})),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let fresh = rotated.json()["key"].as_str().unwrap().to_string();
    let fresh_id = rotated.json()["id"].as_str().unwrap().to_string();
    // The rpm limit is spent: a 429 (not a 401) says the key was accepted.
    assert_eq!(chat(&gw, &fresh), 429);
    assert_eq!(chat(&gw, &key), 429);
    wait_until("the rotated key expires", || chat(&gw, &key) == 401);
    assert_eq!(chat(&gw, &fresh), 429);
    // Revoked: refused at once.
    let r = admin(
        &gw,
        "DELETE",
        &format!("/admin/consumers/team-a/keys/{fresh_id}"),
        ADMIN,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(chat(&gw, &fresh), 401);

    // A PATCH raises the limit (well past what the waits above spent: a refused request
    // counts too, as in APISIX); a new key; everything survives a restart (kill -9).
    let p = admin(
        &gw,
        "PATCH",
        "/admin/consumers/team-a",
        ADMIN,
        Some(
            json!({"limits": [{"name": "rpm", "count": {"count": 1000000, "time_window": "60s"}}]}),
        ),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let (kept, _) = new_key(&gw, "team-a");
    assert_eq!(chat(&gw, &kept), 200);
    gw.kill_and_restart();
    assert_eq!(chat(&gw, &kept), 200, "the key survives a restart");
    assert_eq!(chat(&gw, &fresh), 401, "and the revocation too");
    assert_eq!(
        chat(&gw, "sk-file-consumer"),
        200,
        "the file's consumer as ever"
    );

    // The audit names who did what, without secrets.
    let audit = admin(&gw, "GET", "/admin/audit", VIEWER, None);
    let audit_json = audit.json();
    let actions: Vec<&str> = audit_json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    let audit_body = audit.body.clone();
    assert_eq!(actions.first(), Some(&"consumer.create"));
    assert!(
        actions.contains(&"key.rotate") && actions.contains(&"key.revoke"),
        "{actions:?}"
    );
    assert!(audit_body.contains("\"actor\":\"ops\""));

    // No secret after its create answer: not in the data dir, logs, metrics, audit, GETs.
    let everything = [
        all_bytes(gw.dir.path()),
        gw.logs(),
        gw.metrics(),
        audit_body,
        admin(&gw, "GET", "/admin/consumers/team-a", ADMIN, None).body,
        admin(&gw, "GET", "/admin/consumers/team-a/keys", ADMIN, None).body,
    ]
    .concat();
    for secret in [&key, &fresh, &kept] {
        assert!(!everything.contains(secret.as_str()), "a key leaked");
    }
    assert!(
        all_bytes(gw.dir.path()).contains(&hex::encode(sha2_of(&kept))),
        "stored as its digest"
    );

    // Deleting the consumer ends its keys.
    assert_eq!(
        admin(&gw, "DELETE", "/admin/consumers/team-a", ADMIN, None).status,
        200
    );
    assert_eq!(chat(&gw, &kept), 401);
}

fn sha2_of(s: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

#[test]
fn hostile_admin_requests_get_clear_errors_and_store_nothing() {
    let gw = Gw::start(&yaml(true));
    assert_eq!(
        admin(
            &gw,
            "POST",
            "/admin/consumers",
            ADMIN,
            Some(json!({"name": "base"}))
        )
        .status,
        201
    );
    let before_audit = admin(&gw, "GET", "/admin/audit", ADMIN, None).body;
    let before_list = admin(&gw, "GET", "/admin/consumers", ADMIN, None).body;
    let big_meta: String = "x".repeat(20_000);
    let cases: Vec<(&str, String, &str, Option<Value>, u16)> = vec![
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "a", "colour": "red"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": 5})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "a", "limits": "lots"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(
                json!({"name": "a", "limits": [{"name": "x", "count": {"count": -1, "time_window": "1s"}}]}),
            ),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(
                json!({"name": "a", "limits": [{"name": "x", "count": {"count": 0, "time_window": "1s"}}]}),
            ),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "a", "limits": [{"name": "x", "magic": {}}]})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "a", "metadata": {"m": big_meta}})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "a", "expires_at": "soon"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "../etc"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": ""})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "x".repeat(65)})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "a b"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!(["name", "a"])),
            400,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "base"})),
            409,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            ADMIN,
            Some(json!({"name": "filebound"})),
            409,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            VIEWER,
            Some(json!({"name": "a"})),
            403,
        ),
        (
            "PUT",
            "/admin/consumers/base".into(),
            VIEWER,
            Some(json!({})),
            403,
        ),
        (
            "PATCH",
            "/admin/consumers/base".into(),
            VIEWER,
            Some(json!({})),
            403,
        ),
        ("DELETE", "/admin/consumers/base".into(), VIEWER, None, 403),
        (
            "POST",
            "/admin/consumers".into(),
            "wrong-key",
            Some(json!({"name": "a"})),
            401,
        ),
        (
            "POST",
            "/admin/consumers".into(),
            "",
            Some(json!({"name": "a"})),
            401,
        ),
        (
            "PATCH",
            "/admin/consumers/base".into(),
            ADMIN,
            Some(json!([1, 2])),
            400,
        ),
        (
            "PATCH",
            "/admin/consumers/base".into(),
            ADMIN,
            Some(json!({"limits": [{"name": "r", "req": {"rate": -5}}]})),
            400,
        ),
        (
            "PUT",
            "/admin/consumers/base".into(),
            ADMIN,
            Some(json!({"disabled": "yes"})),
            400,
        ),
        (
            "PUT",
            "/admin/consumers/nobody".into(),
            ADMIN,
            Some(json!({})),
            404,
        ),
        ("DELETE", "/admin/consumers/nobody".into(), ADMIN, None, 404),
        (
            "GET",
            "/admin/consumers/..%2Fstatus".into(),
            ADMIN,
            None,
            400,
        ),
        ("GET", "/admin/consumers/a/b/c/d/e".into(), ADMIN, None, 404),
        (
            "POST",
            "/admin/consumers/base/keys".into(),
            ADMIN,
            Some(json!({"key": "short"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers/base/keys".into(),
            ADMIN,
            Some(json!({"key": "has spaces in it, twenty plus"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers/base/keys".into(),
            ADMIN,
            Some(json!({"key": "sk-file-consumer-but-longer"[..16].to_string() + "_____"})),
            201,
        ),
        (
            "POST",
            "/admin/consumers/base/keys".into(),
            ADMIN,
            Some(json!({"expires_at": 1})),
            400,
        ),
        (
            "POST",
            "/admin/consumers/base/keys".into(),
            ADMIN,
            Some(json!({"scope": "all"})),
            400,
        ),
        (
            "POST",
            "/admin/consumers/nobody/keys".into(),
            ADMIN,
            None,
            404,
        ),
        (
            "POST",
            "/admin/consumers/filebound/keys".into(),
            ADMIN,
            None,
            409,
        ),
        (
            "DELETE",
            "/admin/consumers/base/keys/key_nope".into(),
            ADMIN,
            None,
            404,
        ),
        (
            "POST",
            "/admin/consumers/base/keys/key_nope/rotate".into(),
            ADMIN,
            Some(json!({"grace_seconds": 99_999_999})),
            400,
        ),
        ("GET", "/admin/consumers?limit=0".into(), ADMIN, None, 400),
        ("GET", "/admin/consumers?limit=abc".into(), ADMIN, None, 400),
        ("GET", "/admin/audit?after=abc".into(), ADMIN, None, 400),
        ("GET", "/admin/nothing".into(), ADMIN, None, 404),
        ("PUT", "/admin/audit".into(), ADMIN, Some(json!({})), 404),
    ];
    assert!(cases.len() >= 30);
    let mut stored_key = None;
    for (method, path, key, body, want) in &cases {
        let r = admin(&gw, method, path, key, body.clone());
        assert_eq!(r.status, *want, "{method} {path}: {}", r.body);
        if r.status == 201 {
            stored_key = Some(r.json()["id"].as_str().unwrap().to_string());
            continue;
        }
        let e = &r.json()["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {}",
            r.body
        );
        assert!(e["type"].is_string(), "{}", r.body);
    }
    // Fields are named by their path.
    let r = admin(
        &gw,
        "POST",
        "/admin/consumers",
        ADMIN,
        Some(
            json!({"name": "a", "limits": [{"name": "x", "count": {"count": 0, "time_window": "1s"}}]}),
        ),
    );
    assert!(
        r.json()["error"]["param"]
            .as_str()
            .unwrap()
            .starts_with("limits[0]"),
        "{}",
        r.body
    );
    // A body over 1 MiB.
    let huge = json!({"name": "a", "metadata": {"m": "x".repeat(1_100_000)}});
    assert_eq!(
        admin(&gw, "POST", "/admin/consumers", ADMIN, Some(huge)).status,
        413
    );
    // Nothing stored but the one key the cases meant to create (an imported key).
    assert!(stored_key.is_some());
    let after_list = admin(&gw, "GET", "/admin/consumers", ADMIN, None).body;
    assert!(
        before_list.len() < after_list.len(),
        "only the imported key's entry is new"
    );
    let audit = admin(&gw, "GET", "/admin/audit", ADMIN, None).json();
    let n_before: usize = serde_json::from_str::<Value>(&before_audit).unwrap()["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        audit["data"].as_array().unwrap().len(),
        n_before + 1,
        "one change: the key"
    );

    // Guessing admin keys is braked per address.
    let statuses: Vec<u16> = (0..30)
        .map(|i| admin(&gw, "GET", "/admin/consumers", &format!("guess-{i}"), None).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn the_openapi_document_matches_the_routes_and_the_api_is_off_without_keys() {
    let gw = Gw::start(&yaml(true));
    let doc = admin(&gw, "GET", "/admin/openapi.json", VIEWER, None).json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented += 1;
            let concrete = path.replace("{name}", "nobody").replace("{id}", "key_nope");
            let r = admin(
                &gw,
                &method.to_uppercase(),
                &concrete,
                ADMIN,
                Some(json!({})),
            );
            assert!(
                !r.body.contains("no route"),
                "{method} {path} is documented but not routed: {}",
                r.body
            );
        }
    }
    assert_eq!(documented, 24, "every route documented");
    let off = Gw::start(&yaml(false));
    let r = admin(&off, "GET", "/admin/consumers", ADMIN, None);
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin.keys"),
        "{}",
        r.body
    );
}

#[test]
fn writes_honour_if_match_and_idempotency_keys() {
    let gw = Gw::start(&yaml(true));
    fn h<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![("x-api-key", ADMIN)];
        v.extend_from_slice(extra);
        v
    }
    let url = |p: &str| gw.admin_url(p);
    let create = json!({"name": "idem"});
    // The same Idempotency-Key: one consumer, the first answer twice.
    let first = send(
        "POST",
        &url("/admin/consumers"),
        &h(&[("idempotency-key", "op-1")]),
        Some(&create),
    );
    let again = send(
        "POST",
        &url("/admin/consumers"),
        &h(&[("idempotency-key", "op-1")]),
        Some(&create),
    );
    assert_eq!((first.status, again.status), (201, 201), "{}", again.body);
    assert_eq!(first.body, again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = send(
        "POST",
        &url("/admin/consumers"),
        &h(&[("idempotency-key", "op-1")]),
        Some(&json!({"name": "other"})),
    );
    assert_eq!(other.status, 422, "{}", other.body);
    // A key's secret is shown once: its replay says so instead of showing it again.
    let k1 = send(
        "POST",
        &url("/admin/consumers/idem/keys"),
        &h(&[("idempotency-key", "op-2")]),
        None,
    );
    let k2 = send(
        "POST",
        &url("/admin/consumers/idem/keys"),
        &h(&[("idempotency-key", "op-2")]),
        None,
    );
    assert_eq!((k1.status, k2.status), (201, 409), "{}", k2.body);
    let secret = k1.json()["key"].as_str().unwrap().to_string();
    assert!(!k2.body.contains(&secret) && k2.body.contains(k1.json()["id"].as_str().unwrap()));
    let keys = admin(&gw, "GET", "/admin/consumers/idem/keys", ADMIN, None).json();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "one key made");

    // ETag / If-Match: a stale version is a 412 and changes nothing.
    let got = admin(&gw, "GET", "/admin/consumers/idem", ADMIN, None);
    let tag = got.header("etag").unwrap().to_string();
    let patch = json!({"metadata": {"team": "a"}});
    let ok = send(
        "PATCH",
        &url("/admin/consumers/idem"),
        &h(&[("if-match", &tag)]),
        Some(&patch),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_ne!(ok.header("etag"), Some(tag.as_str()));
    let stale = send(
        "PATCH",
        &url("/admin/consumers/idem"),
        &h(&[("if-match", &tag)]),
        Some(&json!({"metadata": {"team": "b"}})),
    );
    assert_eq!(stale.status, 412, "{}", stale.body);
    let del = send(
        "DELETE",
        &url("/admin/consumers/idem"),
        &h(&[("if-match", &tag)]),
        None,
    );
    assert_eq!(del.status, 412);
    let now = admin(&gw, "GET", "/admin/consumers/idem", ADMIN, None).json();
    assert_eq!(now["metadata"]["team"], "a");
}

/// `ai-rate-limiter admin …` against `gw`: stdout, or the failure's stderr.
fn cli(gw: &Gw, args: &[&str]) -> Result<Value, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("admin")
        .args(args)
        .args(["--url", &gw.admin_url(""), "--key", ADMIN])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_admin_command_line_manages_consumers_and_keys() {
    let gw = Gw::start(&yaml(true));
    let limits = r#"[{"name": "rpm", "count": {"count": 50, "time_window": "60s"}}]"#;
    let c = cli(&gw, &["create-consumer", "cli-team", "--limits", limits]).unwrap();
    assert_eq!(c["name"], "cli-team");
    let k = cli(&gw, &["keys", "create", "cli-team"]).unwrap();
    let key = k["key"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, &key), 200);
    let usage = cli(&gw, &["usage", "cli-team"]).unwrap();
    assert_eq!(usage["limits"][0]["limit"], 50.0);
    let listed = cli(&gw, &["keys", "list", "cli-team"]).unwrap();
    let id = listed["data"][0]["id"].as_str().unwrap().to_string();
    cli(&gw, &["keys", "revoke", "cli-team", &id]).unwrap();
    assert_eq!(chat(&gw, &key), 401);
    let e = cli(&gw, &["create-consumer", "cli-team"]).unwrap_err();
    assert!(e.contains("409") && e.contains("exists"), "{e}");
    let audit = cli(&gw, &["audit"]).unwrap();
    assert_eq!(audit["data"].as_array().unwrap().len(), 3);
}

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
