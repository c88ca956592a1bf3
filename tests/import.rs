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

/// Every field of every fixture's input is accounted for: its value shows in the
/// imported config, or the not-imported list names it (or a place above it), or it is
/// one of the fields whose meaning the import carries in another form (listed here, each
/// with where it went). Nothing disappears silently.
#[test]
fn every_input_field_shows_in_the_output_or_the_not_imported_list() {
    use serde_yaml_ng::Value;
    // Fields carried in another form than their value.
    const CARRIED: &[(&str, &str)] = &[
        ("id", "names and references"),
        ("username", "the consumer's name"),
        ("service_id", "the service merged into the route"),
        ("upstream_id", "the upstream merged into the route"),
        (
            "plugin_config_id",
            "the plugin config merged into the route",
        ),
        ("status", "a disabled route is left out"),
        ("key_type", "the key template's form"),
        ("policy", "limits.policy"),
        ("redis_host", "limits.redis.url"),
        ("redis_port", "limits.redis.url"),
        ("redis_database", "limits.redis.url"),
        ("redis_ssl", "limits.redis.url's scheme"),
        ("redis_timeout", "limits.redis.timeout"),
        ("time_window", "a duration (10 → 10s)"),
        ("default_conn_delay", "a duration"),
        ("nodelay", "req.nodelay"),
        ("show_limit_quota_header", "show_limit_quota_header"),
        ("window_type", "count.window_type"),
        (
            "type",
            "roundrobin, the one balancer; consumer_name restrictions",
        ),
        ("provider", "the provider's kind"),
        ("hide_credentials", "hide_credentials"),
        ("allow_credential", "cors.allow_credential"),
        ("fallback_strategy", "fallback.on"),
        ("limit_strategy", "the token limit's strategy"),
        ("auth", "the provider key"),
        ("header", "the provider key's header"),
        ("algorithm", "roundrobin, the one balancer"),
        ("endpoint", "the provider's base_url"),
        ("host", "a node's url"),
        ("port", "a node's url"),
        ("whitelist", "consumer_restriction.allow"),
        ("blacklist", "consumer_restriction.deny"),
        ("rules", "one rule per entry"),
        ("instances", "one deployment per instance"),
        ("nodes", "upstream.nodes"),
        (
            "redis_cluster_name",
            "APISIX's own name for the cluster: nothing to carry",
        ),
        (
            "limit_header",
            "limits.quota_headers, written when not the default",
        ),
        (
            "remaining_header",
            "limits.quota_headers, written when not the default",
        ),
        (
            "reset_header",
            "limits.quota_headers, written when not the default",
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua-compat/fixtures");
    let mut misses = Vec::new();
    for (apisix, base) in fixtures() {
        let text = std::fs::read_to_string(&apisix).unwrap();
        let input: Value = if apisix.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).unwrap()
        } else {
            serde_yaml_ng::from_str(&text).unwrap()
        };
        let output = std::fs::read_to_string(dir.join(format!("{base}.gateway.yaml"))).unwrap();
        let unmapped =
            std::fs::read_to_string(dir.join(format!("{base}.unmapped.txt"))).unwrap_or_default();
        // Leaves as (path of keys, value).
        let mut leaves = Vec::new();
        let mut stack = vec![(Vec::<String>::new(), &input)];
        while let Some((path, v)) = stack.pop() {
            match v {
                Value::Mapping(m) => {
                    for (k, v) in m {
                        let mut p = path.clone();
                        p.push(k.as_str().map_or_else(|| format!("{k:?}"), str::to_string));
                        stack.push((p, v));
                    }
                }
                Value::Sequence(s) => stack.extend(s.iter().map(|v| (path.clone(), v))),
                Value::Tagged(t) => stack.push((path, &t.value)),
                leaf => leaves.push((path, leaf.clone())),
            }
        }
        for (path, value) in leaves {
            let shown = match &value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            // APISIX's `${{VAR:=default}}` is the gateway's `${VAR:-default}`.
            let shown = shown
                .replace("${{", "${")
                .replace("}}", "}")
                .replace(":=", ":-");
            let in_output = output.contains(&shown) || shown.is_empty();
            // Named (or a place above it, or a key below it) in the not-imported list.
            let named = path.iter().any(|k| {
                unmapped.lines().any(|l| {
                    l.contains(&format!(".{k}:"))
                        || l.contains(&format!(".{k}."))
                        || l.contains(&format!("{k}:"))
                })
            });
            let carried = path
                .iter()
                .any(|k| CARRIED.iter().any(|(c, _)| c == k) || k == "_meta" || k == "desc");
            if !(in_output || named || carried) {
                misses.push(format!("{base}: {} = {shown}", path.join(".")));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "input fields neither imported nor listed:\n{}",
        misses.join("\n")
    );
}

/// A field the importer does not know, at any level it walks, is listed (not dropped).
#[test]
fn unknown_fields_at_every_level_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("apisix.yaml");
    std::fs::write(
        &path,
        r#"
new_resources: [{id: 1}]
consumers:
  - {username: jack, group_id: g, plugins: {key-auth: {key: k}}}
routes:
  - id: 1
    uri: /a
    timeout: {connect: 1}
    upstream: {nodes: [{host: 127.0.0.1, port: 80, weight: 1, metadata: {a: 1}}], hash_on: vars}
    plugins:
      cors: {allow_origins: "*", brand_new: 1}
      proxy-rewrite: {uri: /b, other: 2}
      key-auth: {}
      consumer-restriction: {whitelist: [jack], extra: 3}
services:
  - {id: s, enable_websocket: true}
upstreams:
  - {id: u, nodes: {"127.0.0.1:80": 1}, checks: {active: {}}}
plugin_configs:
  - {id: p, plugins: {request-id: {algorithm: nanoid}}}
global_rules:
  - {id: g, plugins: {}, priority: 1}
#END
"#,
    )
    .unwrap();
    let run = bin().arg("import-apisix").arg(&path).output().unwrap();
    let stderr = String::from_utf8(run.stderr).unwrap();
    for at in [
        "file.new_resources",
        "consumers[jack].group_id",
        "routes[id=1].timeout",
        "routes[id=1].upstream.hash_on",
        "routes[id=1].upstream.nodes[0].metadata",
        "routes[id=1].plugins.cors.brand_new",
        "routes[id=1].plugins.proxy-rewrite.other",
        "routes[id=1].plugins.consumer-restriction.extra",
        "services[id=s].enable_websocket",
        "upstreams[id=u].checks",
        "plugin_configs[id=p].plugins.request-id.algorithm",
        "global_rules[id=g].priority",
    ] {
        assert!(
            stderr.contains(&format!("not imported: {at}:")),
            "{at} not listed:\n{stderr}"
        );
    }
    assert_eq!(run.status.code(), Some(3));
}
