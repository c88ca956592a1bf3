//! The Admin API tests' shared setup: a gateway with an admin and a viewer key, a file
//! consumer and the mock, and small clients of its routes.

use super::*;
use serde_json::Value;

pub const ADMIN: &str = "adm-key-0123456789abcdef";
pub const VIEWER: &str = "viewer-key-0123456789abcd";

pub fn yaml(admin_keys: bool) -> String {
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

pub fn admin(gw: &Gw, method: &str, path: &str, key: &str, body: Option<Value>) -> Resp {
    send(
        method,
        &gw.admin_url(path),
        &[("x-api-key", key)],
        body.as_ref(),
    )
}

pub fn chat(gw: &Gw, key: &str) -> u16 {
    post(
        &gw.url("/v1/chat/completions"),
        Some(key),
        &chat_body("m", "hi", false),
    )
    .status
}

pub fn new_key(gw: &Gw, consumer: &str) -> (String, String) {
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
pub fn all_bytes(dir: &std::path::Path) -> String {
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
