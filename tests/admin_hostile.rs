//! The Admin API against hostile and malformed requests (each a clear error, nothing
//! stored, guessing braked), its OpenAPI document against its routes, and the API off
//! without admin keys.

mod common;
use common::admin::*;
use common::*;
use serde_json::{json, Value};

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
    assert_eq!(documented, 26, "every route documented");
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
