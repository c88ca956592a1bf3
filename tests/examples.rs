//! The configs of `examples/` pass `check` and serve: each is started as it is written,
//! its providers' URLs pointed at fake upstreams through the environment variables the
//! example reads, and called as a client would.

mod common;
use common::anthropic::AnthropicUpstream;
use common::fixture_server::{self, Reply};
use common::redis::Redis;
use common::upstream::CountingUpstream;
use common::*;
use std::time::Duration;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn chat(gw: &Gw, path: &str, key: &str, model: &str) -> Resp {
    post(&gw.url(path), Some(key), &chat_body(model, "hi", false))
}

#[test]
fn every_example_passes_check() {
    for name in [
        "failover.yaml",
        "teams.yaml",
        "redis-fleet.yaml",
        "apisix-after.yaml",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
            .args([
                "check",
                &format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR")),
            ])
            .env("GATEWAY_KEY", "sk-app")
            .env("OPENAI_API_KEY", "sk-openai")
            .env("ANTHROPIC_API_KEY", "sk-ant")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn failover_goes_to_anthropic_when_openai_fails() {
    let failing = fixture_server::start(std::sync::Arc::new(|_: &fixture_server::Request| {
        Reply::json(
            "500 Internal Server Error",
            r#"{"error":{"message":"down"}}"#,
        )
    }));
    let anthropic = AnthropicUpstream::start("sk-ant");
    let gw = Gw::start_with_env(
        &example("failover.yaml"),
        &[
            ("GATEWAY_KEY", "sk-app"),
            ("OPENAI_API_KEY", "sk-openai"),
            ("OPENAI_BASE_URL", &format!("http://127.0.0.1:{failing}/v1")),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("ANTHROPIC_BASE_URL", &anthropic.base_url()),
            ("ANTHROPIC_MODEL", "claude-text"),
        ],
    );
    let r = chat(&gw, "/v1/chat/completions", "sk-app", "smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(anthropic.last().1["model"], "claude-text");
}

#[test]
fn teams_and_the_redis_fleet_serve_with_their_limits() {
    let up = CountingUpstream::start(Duration::ZERO);
    let base = up.base_url();
    let gw = Gw::start_with_env(
        &example("teams.yaml"),
        &[("OPENAI_API_KEY", "sk-openai"), ("OPENAI_BASE_URL", &base)],
    );
    for key in ["sk-product", "sk-research"] {
        let r = chat(&gw, "/v1/chat/completions", key, "gpt-4o-mini");
        assert_eq!(r.status, 200, "{key}: {}", r.body);
        assert!(
            r.header("x-gateway-budget-remaining-usd").is_some(),
            "{key}"
        );
    }
    let redis = Redis::start();
    let env = [
        ("OPENAI_API_KEY", "sk-openai"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("REDIS_URL", &redis.url()),
    ];
    let (a, b) = (
        Gw::start_with_env(&example("redis-fleet.yaml"), &env),
        Gw::start_with_env(&example("redis-fleet.yaml"), &env),
    );
    for gw in [&a, &b] {
        assert_eq!(
            chat(gw, "/v1/chat/completions", "sk-app", "gpt-4o-mini").status,
            200
        );
    }
    assert_eq!(up.total(), 4);
}

#[test]
fn the_imported_apisix_example_answers_on_its_routes() {
    // The example is what the importer prints for apisix-before.yaml.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .args([
            "import-apisix",
            &format!("{}/examples/apisix-before.yaml", env!("CARGO_MANIFEST_DIR")),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        example("apisix-after.yaml")
    );
    let up = CountingUpstream::start(Duration::ZERO);
    let host = format!("127.0.0.1:{}", up.port);
    let gw = Gw::start_with_env(
        &example("apisix-after.yaml"),
        &[
            ("OPENAI_API_KEY", "sk-openai"),
            ("OPENAI_ENDPOINT", &format!("http://{host}")),
            ("SEARCH_HOST", &host),
        ],
    );
    assert_eq!(chat(&gw, "/chat", "sk-team-a", "any").status, 200);
    assert_eq!(chat(&gw, "/chat", "sk-wrong", "any").status, 401);
    let r = get(&gw.url("/search/x"), Some("sk-team-a"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
}
