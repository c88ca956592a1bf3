//! What the gateway writes to disk. In the temp dir: only files and directories of its
//! own (random names, owner-only, created exclusively, so another local user cannot put
//! theirs in their place), and nothing left once it has shut down (the gateway runs with
//! `TMPDIR` set to a directory of the test's). Its stored data (prompts, answers, the
//! credentials of providers added through the Admin API): readable by its user only.

mod common;
use common::admin::{admin, yaml as admin_yaml, ADMIN};
use common::batches::upload;
use common::redis::Redis;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const KEY: &str = "sk-temp";

/// What `dir` holds: (name, is a directory, permission bits).
fn entries(dir: &std::path::Path) -> Vec<(String, bool, u32)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.is_dir(),
                m.permissions().mode() & 0o777,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_ca_bundle_and_the_batch_scratch_are_private_and_gone_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    certs::ca(dir.path());
    let ca = dir.path().join("ca.pem");
    let redis = Redis::start();
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "consumers: [{{name: t, keys: [\"{KEY}\"]}}]\n\
         providers: [{{name: mock, kind: mock}}]\n\
         models: [{{name: m, deployments: [{{provider: mock}}]}}]\n\
         upstream: {{extra_ca_file: {}}}\n\
         limits: {{policy: redis, redis: {{url: \"{}\"}}}}\n",
        ca.display(),
        redis.url()
    );
    let mut gw = Gw::start_with_env(&yaml, &[("TMPDIR", &tmp.path().display().to_string())]);

    // The CA bundle was read when the upstream connector was built, and removed; the
    // Redis batch store's scratch directory is the one entry, owner-only.
    let held = entries(tmp.path());
    assert_eq!(held.len(), 1, "{held:?}");
    let (name, is_dir, mode) = &held[0];
    assert!(
        name.starts_with("ai-rate-limiter-batch-") && *is_dir,
        "{held:?}"
    );
    assert_eq!(*mode, 0o700, "{held:?}");

    // Uploads go through it and leave nothing there.
    let file = upload(&gw, KEY, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}");
    assert_eq!(file["bytes"].as_u64().map(|b| b > 0), Some(true), "{file}");
    // (Removed off the async threads, just after the answer.)
    let scratch = tmp.path().join(name);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !entries(&scratch).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(entries(&scratch), vec![], "uploads left files behind");

    // A graceful shutdown takes the scratch directory with it.
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("gateway did not exit");
    assert!(status.success(), "{status}");
    assert_eq!(entries(tmp.path()), vec![], "left in the temp dir");
}

/// Every entry under `dir`: (path, is a directory, permission bits).
fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path(), m.is_dir(), m.permissions().mode() & 0o777));
        if m.is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn stored_data_is_readable_by_the_gateways_user_only() {
    let gw = Gw::start(&admin_yaml(true));
    let secret = "sk-stored-provider-secret-4321";
    let p = admin(
        &gw,
        "POST",
        "/admin/providers",
        ADMIN,
        Some(serde_json::json!({"name": "o", "kind": "openai", "api_key": secret})),
    );
    assert_eq!(p.status, 201, "{}", p.body);
    let key = "sk-file-consumer";
    upload(&gw, key, "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a private prompt\"}]}}");
    let r = post(
        &gw.url("/v1/responses"),
        Some(key),
        r#"{"model": "m", "input": "another private prompt"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let stored: Vec<_> = ["admin-data", "data"]
        .iter()
        .flat_map(|d| walk(&gw.dir.path().join(d)))
        .collect();
    let names: Vec<String> = stored
        .iter()
        .filter_map(|(p, _, _)| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    for want in ["admin.db", "batches.sqlite3", "responses.sqlite", "files"] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with("-wal")), "{names:?}");
    for dir in ["admin-data", "data"] {
        let m = std::fs::metadata(gw.dir.path().join(dir)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700, "{dir}");
    }
    let open: Vec<_> = stored
        .iter()
        .filter(|(_, is_dir, mode)| mode & 0o077 != 0 || (*is_dir && *mode != 0o700))
        .collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
}
