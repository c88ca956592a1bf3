//! APISIX fixtures of `lua-compat/fixtures`, imported with the real binary (for the
//! conformance suites).

use super::redis::Redis;
use std::path::Path;
use std::process::Command;

/// Import an APISIX fixture (with `policy: local` turned into `redis` when given).
pub fn import(fixture: &str, redis: Option<&Redis>) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua-compat/fixtures");
    let mut text = std::fs::read_to_string(dir.join(fixture)).unwrap();
    if let Some(r) = redis {
        let port = r.port;
        // Flow mappings get the fields inline, block mappings one per line.
        text = text
            .lines()
            .map(|l| match l.trim() {
                "policy: local" => {
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!(
                        "{indent}policy: redis\n{indent}redis_host: 127.0.0.1\n{indent}redis_port: {port}\n"
                    )
                }
                _ => l.replace(
                    "policy: local",
                    &format!("policy: redis, redis_host: 127.0.0.1, redis_port: {port}"),
                ) + "\n",
            })
            .collect();
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(fixture);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("import-apisix")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    if redis.is_some() {
        assert!(yaml.contains("policy: redis"), "{yaml}");
    }
    yaml
}
