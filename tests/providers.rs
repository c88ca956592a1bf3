//! Providers whose API differs from OpenAI's, through the real gateway against upstreams
//! that replay recorded-style fixtures of each provider's wire format.

mod common;
use common::anthropic::AnthropicUpstream;
use common::azure::AzureUpstream;
use common::deepseek::DeepSeekUpstream;
use common::*;
use serde_json::{json, Value};

const KEY: &str = "sk-providers";
const ANTHROPIC_KEY: &str = "sk-ant-fixture-key-123";

fn anthropic_gateway(up: &AnthropicUpstream) -> Gw {
    Gw::start(&format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: c, keys: ["{KEY}"]}}]
routing: {{default_max_tokens: 333}}
providers:
  - {{name: claude, kind: anthropic, base_url: "{base}", api_key: "{ANTHROPIC_KEY}"}}
  - {{name: claude-open, kind: anthropic, base_url: "{base}", api_key: "{ANTHROPIC_KEY}", pass_ratelimit_headers: true}}
models:
  - {{name: open-limits, deployments: [{{provider: claude-open, model: claude-ratelimited}}]}}
  - {{name: claude-text, deployments: [{{provider: claude}}], limits: [{{name: tpm, tokens: {{limit: 100000, time_window: 60s}}}}]}}
  - {{name: claude-tool, deployments: [{{provider: claude}}]}}
  - {{name: claude-overloaded, deployments: [{{provider: claude}}]}}
  - {{name: claude-ratelimited, deployments: [{{provider: claude}}]}}
"#,
        base = up.base_url()
    ))
}

fn chat(gw: &Gw, body: Value) -> Resp {
    post(
        &gw.url("/v1/chat/completions"),
        Some(KEY),
        &body.to_string(),
    )
}

#[test]
fn anthropic_non_stream_is_translated_both_ways() {
    let up = AnthropicUpstream::start(ANTHROPIC_KEY);
    let gw = anthropic_gateway(&up);
    let r = chat(
        &gw,
        json!({"model": "claude-text", "stop": "END", "temperature": 1.5,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.json();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "claude-text");
    assert_eq!(
        c["choices"][0]["message"]["content"],
        "Hello! How can I help?"
    );
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["prompt_tokens"], 20, "input + cache tokens");
    assert_eq!(c["usage"]["completion_tokens"], 9);
    let (headers, sent) = up.last();
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(h("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        h("authorization"),
        None,
        "the client's key is never forwarded"
    );
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(
        sent["max_tokens"], 333,
        "required by Anthropic: the configured default"
    );
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["temperature"], 1.0);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    );
    assert_eq!(
        gw.wait_metric(
            "gateway_tokens_total",
            &[("model", "claude-text"), ("kind", "prompt")],
            20.0
        ),
        20.0
    );
}

#[test]
fn anthropic_stream_becomes_openai_chunks() {
    let up = AnthropicUpstream::start(ANTHROPIC_KEY);
    let gw = anthropic_gateway(&up);
    let body = json!({"model": "claude-text", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = chat(&gw, body);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(!r.body.contains("ping") && !r.body.contains("event:"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 25);
    assert_eq!(usage["usage"]["completion_tokens"], 15);
    // Without include_usage the usage chunk is counted but not sent.
    let r = chat(
        &gw,
        json!({"model": "claude-text", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert!(!r.body.contains("\"usage\""), "{}", r.body);
    assert_eq!(up.last().1["stream"], true);
}

#[test]
fn anthropic_tool_calls_stream_and_non_stream() {
    let up = AnthropicUpstream::start(ANTHROPIC_KEY);
    let gw = anthropic_gateway(&up);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = chat(
        &gw,
        json!({"model": "claude-tool", "tools": tools, "tool_choice": "auto",
        "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    );
    let c = r.json();
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(
        up.last().1["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(up.last().1["tool_choice"], json!({"type": "auto"}));
    // The tool result goes back as a tool_result block.
    let r = chat(
        &gw,
        json!({"model": "claude-tool", "tools": tools, "stream": true,
        "messages": [{"role": "user", "content": "Weather in Paris?"},
                     {"role": "assistant", "content": null, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": call["id"], "content": "18C"}]}),
    );
    let sent = up.last().1;
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result",
        "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "18C"})
    );
    let args: String = sse_data(&r.body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(args, r#"{"city": "Paris"}"#);
}

#[test]
fn anthropic_errors_map_to_openai_errors() {
    let up = AnthropicUpstream::start(ANTHROPIC_KEY);
    let gw = anthropic_gateway(&up);
    let msg = json!([{"role": "user", "content": "Hi"}]);
    let r = chat(&gw, json!({"model": "claude-overloaded", "messages": msg}));
    assert_eq!(r.status, 503, "529 overloaded becomes a retryable 503");
    assert_eq!(r.json()["error"]["type"], "server_error");
    assert_eq!(r.json()["error"]["message"], "Overloaded");
    let r = chat(&gw, json!({"model": "claude-ratelimited", "messages": msg}));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(
        r.header("anthropic-ratelimit-requests-remaining").is_none(),
        "provider headers stay inside"
    );
    // Mid-stream error: an OpenAI error event ends the stream.
    let r = chat(
        &gw,
        json!({"model": "claude-overloaded", "stream": true, "messages": msg}),
    );
    let data = sse_data(&r.body);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["message"], "Overloaded");
    // An endpoint Anthropic does not have: a clear 400.
    let r = post(
        &gw.url("/v1/embeddings"),
        Some(KEY),
        &json!({"model": "claude-text", "input": "x"}).to_string(),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not support /v1/embeddings"));
    // n > 1 cannot be translated: the client's error, not the upstream's.
    let r = chat(
        &gw,
        json!({"model": "claude-text", "n": 2, "messages": msg}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "n");
}

fn azure_gateway(up: &AzureUpstream) -> Gw {
    Gw::start(&format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: azure-classic, kind: azure, base_url: "{base}", api_key: "{AZURE_KEY}", api_version: "{version}"}}
  - {{name: azure-v1, kind: azure, base_url: "{base}", api_key: "{AZURE_KEY}"}}
models:
  - {{name: gpt-4o, deployments: [{{provider: azure-classic, model: gpt-4o-prod}}]}}
  - {{name: gpt-4o-v1, deployments: [{{provider: azure-v1, model: gpt-4o-prod}}]}}
  - {{name: embed, deployments: [{{provider: azure-classic, model: embed-prod}}]}}
  - {{name: busy, deployments: [{{provider: azure-classic, model: throttled}}]}}
  - {{name: gone, deployments: [{{provider: azure-v1, model: missing}}]}}
"#,
        base = up.base_url(),
        version = azure::API_VERSION
    ))
}

const AZURE_KEY: &str = "azure-fixture-key-456";

#[test]
fn azure_both_url_schemes_and_error_shapes() {
    let up = AzureUpstream::start(AZURE_KEY);
    let gw = azure_gateway(&up);
    let msg = json!([{"role": "user", "content": "Hi"}]);
    for model in ["gpt-4o", "gpt-4o-v1"] {
        let r = chat(&gw, json!({"model": model, "messages": msg}));
        assert_eq!(r.status, 200, "{model}: {}", r.body);
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "Hi from Azure"
        );
        let r = chat(
            &gw,
            json!({"model": model, "stream": true, "messages": msg}),
        );
        let text: String = streamed_text(&r.body);
        assert_eq!(text, "Hi from Azure");
        assert!(
            !r.body.contains("\"usage\""),
            "usage chunk dropped unless asked"
        );
    }
    let targets = up.targets();
    assert_eq!(
        targets[0],
        format!(
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version={}",
            azure::API_VERSION
        )
    );
    assert_eq!(targets[2], "/openai/v1/chat/completions");
    let r = post(
        &gw.url("/v1/embeddings"),
        Some(KEY),
        &json!({"model": "embed", "input": "x"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"][0]["embedding"], json!([0.25, -0.5]));
    // Azure's error shapes become OpenAI's.
    let r = chat(&gw, json!({"model": "busy", "messages": msg}));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("33"));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "429");
    assert!(e["type"].is_string() && e.get("param").is_some());
    let r = chat(&gw, json!({"model": "gone", "messages": msg}));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "DeploymentNotFound");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn deepseek_keep_alives_blank_lines_402_and_422() {
    let up = DeepSeekUpstream::start();
    let gw = Gw::start(&format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: c, keys: ["{KEY}"]}}]
routing: {{strategy: ordered}}
providers:
  - {{name: ds-broke, kind: openai-compatible, base_url: "{base}", api_key: sk-ds-broke}}
  - {{name: ds, kind: openai-compatible, base_url: "{base}", api_key: sk-ds-ok}}
models:
  - {{name: deepseek-v4-flash, deployments: [{{provider: ds-broke}}, {{provider: ds}}]}}
  - {{name: bad, deployments: [{{provider: ds}}]}}
"#,
        base = up.base_url()
    ));
    let msg = json!([{"role": "user", "content": "Hi"}]);
    // 402 on the first key: fail over to the next, and leave the broke key alone.
    let r = chat(&gw, json!({"model": "deepseek-v4-flash", "messages": msg}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with('{'),
        "blank keep-alive lines are not passed on"
    );
    let c = r.json();
    assert_eq!(c["choices"][0]["message"]["content"], "Hello from DeepSeek");
    assert_eq!(c["choices"][0]["message"]["reasoning_content"], "Thinking.");
    assert_eq!(
        gw.metric("gateway_upstream_errors_total", &[("kind", "no_credit")]),
        1.0
    );
    let r = chat(
        &gw,
        json!({"model": "deepseek-v4-flash", "stream": true, "stream_options": {"include_usage": true}, "messages": msg}),
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = streamed_text(&r.body);
    assert_eq!(text, "Hello from DeepSeek");
    assert!(r.body.contains("prompt_cache_hit_tokens"));
    assert_eq!(
        up.keys(),
        vec!["Bearer sk-ds-broke", "Bearer sk-ds-ok", "Bearer sk-ds-ok"],
        "the key without credit cools down"
    );
    // 422 is the client's error: passed on in OpenAI shape, no failover.
    let r = chat(&gw, json!({"model": "bad", "messages": msg}));
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown variant"));
}

fn messages(gw: &Gw, key: &str, body: Value) -> Resp {
    let headers = [("x-api-key", key), ("anthropic-version", "2023-06-01")];
    send("POST", &gw.url("/v1/messages"), &headers, Some(&body))
}

#[test]
fn native_messages_pass_through_with_limits_and_accounting() {
    let up = AnthropicUpstream::start(ANTHROPIC_KEY);
    let gw = anthropic_gateway(&up);
    let body = json!({"model": "claude-text", "max_tokens": 50, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = messages(&gw, KEY, body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["text"], "Hello! How can I help?");
    let (headers, sent) = up.last();
    assert_eq!(sent, body, "passed through unchanged");
    let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        h("x-api-key").as_deref(),
        Some(ANTHROPIC_KEY),
        "the provider key, not the client's"
    );
    assert_eq!(
        h("anthropic-beta"),
        None,
        "no beta unless the client enabled one"
    );
    // The client's betas go with it (Anthropic serves them); a malformed value is refused.
    let beta = "mid-conversation-tool-changes-2026-07-01,effort-2025-11-24";
    let headers = [("x-api-key", KEY), ("anthropic-beta", beta)];
    let url = gw.url("/v1/messages");
    let r = send("POST", &url, &headers, Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let (headers, _) = up.last();
    let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(h("anthropic-beta").as_deref(), Some(beta));
    let r = send(
        "POST",
        &url,
        &[("x-api-key", KEY), ("anthropic-beta", "a;b=1")],
        Some(&body),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
    // Streams pass through event by event; usage is accounted from message_start/delta.
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = messages(&gw, KEY, stream);
    assert!(r.body.starts_with("event: message_start"), "{}", r.body);
    assert!(r.body.contains("event: message_stop"));
    assert_eq!(
        gw.wait_metric(
            "gateway_tokens_total",
            &[("model", "claude-text"), ("kind", "completion")],
            33.0
        ),
        33.0,
        "9 from each of two messages + 15 from the stream"
    );
    // The gateway's own errors come in Anthropic's shape for these clients.
    let r = messages(&gw, "sk-wrong", body.clone());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    // Upstream errors are passed through as Anthropic sent them.
    let mut over = body;
    over["model"] = json!("claude-overloaded");
    let r = messages(&gw, KEY, over);
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}
