//! An Anthropic Messages API upstream that replays the recorded-style fixtures of
//! `tests/fixtures/anthropic/` and records every request it receives.
//!
//! The request's `model` picks the answer: `claude-text`, `claude-tool` (a tool call),
//! `claude-overloaded` (529, or an `error` event mid-stream), `claude-ratelimited` (429
//! with `retry-after` and `anthropic-ratelimit-*` headers). It insists on Anthropic's
//! auth: `x-api-key` (the key given) and `anthropic-version`, else a 401 error body.

use super::fixture_server::{self, Reply, Request};

pub struct AnthropicUpstream {
    pub port: u16,
    pub requests: fixture_server::Recorded,
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

impl AnthropicUpstream {
    pub fn start(key: &str) -> AnthropicUpstream {
        let key = key.to_string();
        let (port, requests) = fixture_server::recording(move |req| answer(req, &key));
        AnthropicUpstream { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The last request's headers and JSON body.
    pub fn last(&self) -> (Vec<(String, String)>, serde_json::Value) {
        let r = self
            .requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request");
        let json = r.json();
        (r.headers, json)
    }
}

fn answer(req: &Request, key: &str) -> Reply {
    let authorised =
        req.header("x-api-key") == Some(key) && req.header("anthropic-version").is_some();
    if !authorised || req.target != "/v1/messages" {
        return Reply::json(
            "401 Unauthorized",
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
    }
    let json = req.json();
    let reply = match (json["model"].as_str().unwrap_or(""), json["stream"] == true) {
        ("claude-text", false) => Reply::json("200 OK", fixture("message_text.json")),
        ("claude-tool", false) => Reply::json("200 OK", fixture("message_tool_use.json")),
        ("claude-text", true) => Reply::events(fixture("stream_text.sse")),
        ("claude-tool", true) => Reply::events(fixture("stream_tool_use.sse")),
        ("claude-overloaded", true) => Reply::events(fixture("stream_overloaded.sse")),
        ("claude-overloaded", false) => {
            Reply::json("529 Overloaded", fixture("error_overloaded.json"))
        }
        ("claude-ratelimited", _) => {
            Reply::json("429 Too Many Requests", fixture("error_rate_limit.json"))
                .with("retry-after", "3")
                .with("anthropic-ratelimit-requests-remaining", "0")
                .with("anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z")
        }
        _ => Reply::json("404 Not Found", fixture("error_not_found.json")),
    };
    reply.with("request-id", "req_fixture")
}
