//! The real coding-agent CLIs through the gateway (issue 25): Codex (`codex exec`, a custom
//! provider with `wire_api = "responses"`) and Claude Code (`claude -p`,
//! `ANTHROPIC_BASE_URL` at the gateway), each on a chat-translated deployment (the mock's
//! agent model), each running one shell command through its own tool and reporting its
//! output. The CLIs are pinned in `tests/agents/package.json` and installed by
//! `scripts/test.sh`; each runs in an empty temporary directory with a temporary home,
//! a timeout, and a proxy that refuses every address but 127.0.0.1.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "sk-agents-test";

fn cli(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node_modules/.bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, or `npm ci` in tests/agents",
        p.display()
    );
    p
}

/// The gateway with the mock's agent model behind the CLIs' default model names (Codex
/// 0.171's `gpt-6.2-sol`, Claude Code 2.1.332's `claude-opus-5-5`) and one Codex does not
/// know (`gw-model`: Codex then sends its tools at the top level, a namespace among them).
fn gateway() -> Gw {
    let models: String = ["gpt-6.2-sol", "gw-model", "claude-opus-5-5"]
        .iter()
        .map(|m| format!("  - name: {m}\n    deployments: [{{provider: mock, model: agent-1}}]\n"))
        .collect();
    Gw::start(&format!(
        "auth: {{enabled: true}}\nconsumers:\n  - name: dev\n    keys: [\"{KEY}\"]\n\
         providers:\n  - name: mock\n    kind: mock\n    mock: {{agent_models: [agent-1]}}\n\
         models:\n{models}"
    ))
}

/// Run `cmd` (in an empty directory, no network beyond loopback) for at most 120 s.
fn run(mut cmd: Command, work: &Path) -> Output {
    cmd.current_dir(work)
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the CLI");
    let start = Instant::now();
    while child.try_wait().expect("wait for the CLI").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("the CLI's output")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The access-log lines of requests to `path` for `model`.
fn calls(gw: &Gw, path: &str, model: &str) -> Vec<String> {
    gw.logs()
        .lines()
        .filter(|l| {
            l.contains(&format!("path={path} ")) && l.contains(&format!("model=\"{model}\""))
        })
        .map(str::to_string)
        .collect()
}

fn codex(gw: &Gw, model: Option<&str>, prompt: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model_line = model.map_or(String::new(), |m| format!("model = \"{m}\"\n"));
    let config = format!(
        "{model_line}model_provider = \"gw\"\n[model_providers.gw]\nname = \"gateway\"\n\
         base_url = \"{}\"\nenv_key = \"GW_KEY\"\nwire_api = \"responses\"\n\
         request_max_retries = 0\nstream_max_retries = 0\n",
        gw.url("/v1")
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let mut cmd = Command::new(cli("codex"));
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
    ])
    .arg(prompt)
    .env("CODEX_HOME", home.path())
    .env("GW_KEY", KEY);
    run(cmd, work.path())
}

#[test]
fn codex_runs_a_command_through_its_tool_on_a_translated_model() {
    let gw = gateway();
    // A model Codex does not know: its tools at the top level (`exec_command` and a
    // `namespace`), translated to chat functions; the call comes back as Codex's own.
    let o = codex(
        &gw,
        Some("gw-model"),
        "Use exec_command to run `echo $((6*7))-gw`",
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Tool result:") && out.contains("42-gw"),
        "{out}"
    );
    let seen = calls(&gw, "/v1/responses", "gw-model");
    assert_eq!(seen.len(), 2, "the call, then the tool's result: {seen:?}");
    assert!(seen
        .iter()
        .all(|l| l.contains("status=200") && l.contains("provider=\"mock\"")));

    // Codex's default model: no top-level tools; they come in an `additional_tools` item,
    // in namespaces, the shell reached through the custom `exec` tool (JavaScript, defined
    // by a grammar), whose call comes back as a `custom_tool_call`.
    let script = "text(await tools.exec_command({cmd: \"echo $((6*7))-sol\"}))";
    let o = codex(&gw, None, &format!("Use exec to run `{script}`"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Tool result:") && out.contains("42-sol"),
        "{out}"
    );
    assert_eq!(
        calls(&gw, "/v1/responses", "gpt-6.2-sol").len(),
        2,
        "{}",
        gw.logs()
    );
}

#[test]
fn claude_code_completes_a_tool_round_trip_on_a_translated_model() {
    let gw = gateway();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(cli("claude"));
    // Its default model, with every beta it sends for it (system messages mid-conversation
    // among them), on a chat deployment.
    cmd.args([
        "-p",
        "Use Bash to run `echo $((6*7))-cc`",
        "--allowedTools",
        "Bash",
    ])
    .env("HOME", home.path())
    .env("ANTHROPIC_BASE_URL", gw.url(""))
    .env("ANTHROPIC_API_KEY", KEY)
    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    .env("DISABLE_AUTOUPDATER", "1")
    .env_remove("ANTHROPIC_MODEL");
    let o = run(cmd, work.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Tool result: 42-cc"), "{out}");
    let seen = calls(&gw, "/v1/messages", "claude-opus-5-5");
    assert_eq!(seen.len(), 2, "the call, then the tool's result: {seen:?}");
    assert!(seen.iter().all(|l| l.contains("status=200")), "{seen:?}");
}
