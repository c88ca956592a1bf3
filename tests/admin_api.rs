//! The Admin API through the real binary (issue 26): consumers and keys created at
//! runtime work at once and survive restarts, limits apply, keys rotate and revoke, the
//! key's secret appears nowhere after the create answer, the file's consumers are
//! read-only; writes honour If-Match and Idempotency-Key; the command line.

mod common;
use common::admin::*;
use common::*;
use serde_json::{json, Value};

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
    let long = "k".repeat(300);
    let bad = send(
        "POST",
        &url("/admin/consumers"),
        &h(&[("idempotency-key", &long)]),
        Some(&create),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
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
