//! The Admin API shared by two instances through one real Redis (issue 26): a key created
//! on A works on B within a second, a key revoked on B is refused by A within a second, a
//! consumer's limit is exact across both, both resync after Redis restarts, and every
//! object is still there after both instances restart. `GET /admin/status` lists each
//! instance's applied version.

mod common;
use common::redis::Redis;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const ADMIN: &str = "fleet-admin-key-0123456789";

fn yaml(redis: &Redis) -> String {
    format!(
        "admin:\n  keys: [{{id: ops, key: \"{ADMIN}\"}}]\n\
         limits: {{policy: redis, redis: {{url: \"{}\"}}}}\nauth: {{enabled: true}}\n\
         providers:\n  - {{name: mock, kind: mock}}\nmodels:\n  - name: m\n    deployments: [{{provider: mock, model: mock-1}}]\n",
        redis.url()
    )
}

fn admin(gw: &Gw, method: &str, path: &str, body: Option<serde_json::Value>) -> Resp {
    send(
        method,
        &gw.admin_url(path),
        &[("x-api-key", ADMIN)],
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

/// How long until `done` holds (at most 10 s).
fn time_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    wait_until(what, &mut done);
    start.elapsed()
}

#[test]
fn two_instances_share_consumers_keys_and_exact_limits_through_redis() {
    let mut redis = Redis::start();
    let mut a = Gw::start(&yaml(&redis));
    let mut b = Gw::start(&yaml(&redis));
    let r = admin(
        &a,
        "POST",
        "/admin/consumers",
        Some(json!({"name": "team",
        "limits": [{"name": "ten", "count": {"count": 10, "time_window": "60s"}}]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let k = admin(&a, "POST", "/admin/consumers/team/keys", None);
    assert_eq!(k.status, 201, "{}", k.body);
    let key = k.json()["key"].as_str().unwrap().to_string();
    let id = k.json()["id"].as_str().unwrap().to_string();
    // Created on A: works on B within a second of the answer.
    let took = time_until("B knows A's key", || chat(&b, &key) == 200);
    assert!(
        took <= Duration::from_millis(1500),
        "B applied it after {took:?}"
    );
    // The consumer's limit is exact across both: 10 of the next 20 (one was spent).
    let statuses: Vec<u16> = (0..20)
        .map(|i| chat(if i % 2 == 0 { &a } else { &b }, &key))
        .collect();
    assert_eq!(count(&statuses, 200), 9, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 11);

    // No readable key in Redis: every value of every key the store wrote.
    let keys = redis.cmd(&["KEYS", "*"]).unwrap();
    let mut everything = String::new();
    for k in keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
    {
        for cmd in [
            vec!["HGETALL", k],
            vec!["LRANGE", k, "0", "-1"],
            vec!["GET", k],
        ] {
            everything.push_str(&redis.cmd(&cmd).unwrap_or_default());
        }
    }
    assert!(everything.contains("team"), "the store's keys were read");
    assert!(
        !everything.contains(&key),
        "the key's secret is not in Redis"
    );

    // Each instance's applied version, as A sees them.
    let status = || admin(&a, "GET", "/admin/status", None).json();
    wait_until("both instances report the same version", || {
        let s = status();
        let versions: Vec<u64> = s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["applied_version"].as_u64().unwrap())
            .collect();
        versions.len() == 2
            && versions
                .iter()
                .all(|v| Some(*v) == s["store_version"].as_u64())
    });
    assert_eq!(status()["store"], "redis");

    // Revoked on B: refused by A within a second.
    let r = admin(
        &b,
        "DELETE",
        &format!("/admin/consumers/team/keys/{id}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let took = time_until("A refuses B's revocation", || chat(&a, &key) == 401);
    assert!(
        took <= Duration::from_millis(1500),
        "A applied it after {took:?}"
    );

    // Redis restarts (with its data): both resync; a key made on A reaches B again.
    redis.cmd(&["SAVE"]);
    redis.stop();
    redis.resume();
    let k2 = loop {
        let r = admin(&a, "POST", "/admin/consumers/team/keys", None);
        if r.status == 201 {
            break r.json()["key"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_until("B resyncs after Redis came back", || chat(&b, &k2) != 401);

    // Both instances restart: every object is still there.
    a.kill_and_restart();
    b.kill_and_restart();
    assert_ne!(chat(&a, &k2), 401);
    assert_ne!(chat(&b, &k2), 401);
    assert_eq!(chat(&b, &key), 401, "the revocation too");
    let list = admin(&b, "GET", "/admin/consumers", None).json();
    assert_eq!(list["data"][0]["name"], "team");
}
