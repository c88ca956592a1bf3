//! `ai-rate-limiter import-apisix` on every fixture of `lua-compat/fixtures`: the real
//! binary must print exactly the fixture's `gateway.yaml`, list exactly its
//! `unmapped.txt` on stderr with the matching exit code, and its output must be a config
//! the gateway accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
}

fn fixtures() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua-compat/fixtures");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let base = name
                .strip_suffix(".apisix.yaml")
                .or_else(|| name.strip_suffix(".apisix.json"))?
                .to_string();
            Some((p, base))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_fixture_imports_to_its_gateway_yaml() {
    let all = fixtures();
    assert!(all.len() >= 5, "fixtures missing: {all:?}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua-compat/fixtures");
    for (apisix, base) in all {
        let run = bin().arg("import-apisix").arg(&apisix).output().unwrap();
        let stdout = String::from_utf8(run.stdout).unwrap();
        let stderr = String::from_utf8(run.stderr).unwrap();
        let want = std::fs::read_to_string(dir.join(format!("{base}.gateway.yaml"))).unwrap();
        assert_eq!(
            stdout, want,
            "{base}: output differs from {base}.gateway.yaml"
        );
        let listed: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("not imported: "))
            .collect();
        let expected =
            std::fs::read_to_string(dir.join(format!("{base}.unmapped.txt"))).unwrap_or_default();
        assert_eq!(
            listed,
            expected.lines().collect::<Vec<_>>(),
            "{base}: unmapped items"
        );
        let code = run.status.code();
        assert_eq!(
            code,
            Some(if listed.is_empty() { 0 } else { 3 }),
            "{base}: exit code"
        );
        // The imported config loads (variables take their defaults).
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("gateway.yaml");
        std::fs::write(&path, &stdout).unwrap();
        // The service-account file a migrated Vertex provider names (saved by the operator).
        let sa = tmp.path().join("sa.json");
        let key = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vertex/test_key.pem"),
        )
        .unwrap();
        let sa_json = serde_json::json!({"client_email": "gw@p.iam.gserviceaccount.com",
            "private_key": key, "token_uri": "https://oauth2.googleapis.com/token"});
        std::fs::write(&sa, sa_json.to_string()).unwrap();
        let check = bin()
            .arg("check")
            .arg(&path)
            .env("OPENAI_KEY", "sk-test")
            .env("TEAM_A_KEY", "sk-team-a")
            .env("GCP_CREDENTIALS_FILE", &sa)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{base}: imported config rejected: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn a_yaml_file_without_the_end_marker_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("apisix.yaml");
    std::fs::write(&path, "routes: []\n").unwrap();
    let run = bin().arg("import-apisix").arg(&path).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("#END"));
}

#[test]
fn a_group_whose_members_disagree_fails_the_import_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("apisix.yaml");
    std::fs::write(
        &path,
        r#"routes:
  - id: a
    uri: /a
    upstream: { nodes: { "127.0.0.1:1980": 1 }, type: roundrobin }
    plugins:
      limit-count: { count: 2, time_window: 60, group: shared }
  - id: b
    uri: /b
    upstream: { nodes: { "127.0.0.1:1980": 1 }, type: roundrobin }
    plugins:
      limit-count: { count: 3, time_window: 60, group: shared }
#END
"#,
    )
    .unwrap();
    let run = bin().arg("import-apisix").arg(&path).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stdout.is_empty(), "nothing is printed");
    let err = String::from_utf8(run.stderr).unwrap();
    assert!(
        err.contains("routes[id=b].plugins.limit-count (count 3")
            && err.contains("routes[id=a].plugins.limit-count (count 2"),
        "{err}"
    );
}
