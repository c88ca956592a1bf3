//! Gemini behind the gateway, against the real binary and a fake Gemini API that replays
//! `tests/fixtures/gemini/` and checks what it receives (path, key header, body): chat,
//! streams (CRLF events), embeddings, Google's errors feeding failover and cool-downs,
//! and the Responses and Messages surfaces on a Gemini model.

mod common;

use common::fixture_server::{last, recording, Recorded, Reply, Request};
use common::{send, Gw, Resp};
use serde_json::{json, Value};

const KEY: &str = "sk-client";
const GOOD: &str = "AIza-good-key-0123456789";
const LIMITED: &str = "AIza-limited-key-0123456789";
const INVALID: &str = "AIza-invalid-key-0123456789";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/gemini/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn gemini(req: &Request) -> Reply {
    match req.header("x-goog-api-key") {
        Some(LIMITED) => return Reply::json("429 Too Many Requests", fixture("error_429.json")),
        Some(INVALID) => return Reply::json("400 Bad Request", fixture("error_key_invalid.json")),
        Some(GOOD) => {}
        _ => {
            return Reply::json(
                "403 Forbidden",
                r#"{"error":{"code":403,"message":"no key","status":"PERMISSION_DENIED"}}"#,
            )
        }
    }
    let body = req.json();
    let asks_tool = body["toolConfig"]["functionCallingConfig"]["mode"] == "ANY";
    match req.target.rsplit_once(':').map(|(_, m)| m) {
        Some("batchEmbedContents") => Reply::json("200 OK", fixture("embeddings.json")),
        Some("streamGenerateContent?alt=sse") if asks_tool => {
            Reply::events(fixture("stream_call.sse"))
        }
        Some("streamGenerateContent?alt=sse") => Reply::events(fixture("stream_text.sse")),
        Some("generateContent") if asks_tool => {
            Reply::json("200 OK", fixture("function_call.json"))
        }
        Some("generateContent") => Reply::json("200 OK", fixture("text.json")),
        _ => Reply::json(
            "404 Not Found",
            r#"{"error":{"code":404,"message":"no such method","status":"NOT_FOUND"}}"#,
        ),
    }
}

fn gateway() -> (Gw, Recorded) {
    let (port, seen) = recording(gemini);
    let base = format!("http://127.0.0.1:{port}/v1beta");
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: g-good, kind: gemini, base_url: "{base}", api_key: "{GOOD}"}}
  - {{name: g-limited, kind: gemini, base_url: "{base}", api_key: "{LIMITED}"}}
  - {{name: g-invalid, kind: gemini, base_url: "{base}", api_key: "{INVALID}"}}
  # The same keys again, cooling down apart from the pool's.
  - {{name: solo-limited, kind: gemini, base_url: "{base}", api_key: "{LIMITED}"}}
  - {{name: solo-invalid, kind: gemini, base_url: "{base}", api_key: "{INVALID}"}}
routing: {{strategy: ordered}}
models:
  - {{name: gem, deployments: [{{provider: g-good, model: gemini-2.5-flash}}]}}
  - {{name: gem-failover, deployments: [{{provider: g-limited, model: gemini-2.5-flash}}, {{provider: g-invalid, model: gemini-2.5-flash}}, {{provider: g-good, model: gemini-2.5-flash}}]}}
  - {{name: gem-limited, deployments: [{{provider: solo-limited, model: gemini-2.5-flash}}]}}
  - {{name: gem-invalid, deployments: [{{provider: solo-invalid, model: gemini-2.5-flash}}]}}
  - {{name: gem-embed, deployments: [{{provider: g-good, model: text-embedding-004}}]}}
reload: {{watch: false}}
"#
    ));
    (gw, seen)
}

fn post(gw: &Gw, path: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {KEY}");
    let headers = [("authorization", auth.as_str()), ("x-api-key", KEY)];
    send("POST", &gw.url(path), &headers, Some(body))
}

#[test]
fn gemini_chat_streams_and_embeddings() {
    let (gw, seen) = gateway();
    let r = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gem", "max_tokens": 50, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.json();
    assert_eq!(c["choices"][0]["message"]["content"], "Hello from Gemini.");
    assert_eq!(
        c["choices"][0]["message"]["reasoning_content"],
        "Thinking about it."
    );
    assert_eq!(
        c["usage"]["completion_tokens"], 10,
        "6 visible + 4 thinking"
    );
    let sent = last(&seen);
    assert_eq!(
        sent.target,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some(GOOD));
    assert!(
        !sent.target.contains("key="),
        "the key never goes in the URL"
    );
    assert_eq!(
        sent.json(),
        json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
               "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
               "generationConfig": {"maxOutputTokens": 50}})
    );
    // A stream (CRLF-framed, no [DONE] upstream) ends with a usage chunk and [DONE].
    let r = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gem", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let text: String = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello!");
    assert!(r.body.contains("\"total_tokens\":12") && r.body.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        last(&seen).target,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    // Tools: a function call comes back as a tool call.
    let r = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gem", "tool_choice": "required", "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}),
    );
    let c = r.json();
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Oslo"}"#
    );
    // Embeddings through batchEmbedContents.
    let r = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "gem-embed", "input": ["one", "two"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["data"][1]["embedding"],
        json!([0.004, 0.019, -0.011])
    );
    assert_eq!(
        last(&seen).target,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
}

#[test]
fn google_errors_drive_failover_retry_after_and_cool_downs() {
    let (gw, seen) = gateway();
    let chat = |model: &str| {
        post(
            &gw,
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}),
        )
    };
    // Alone, a 429 reaches the client with Google's retry delay as retry-after.
    let r = chat("gem-limited");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("34"), "33.4s rounded up");
    // An invalid key (Google's 400) is the provider refusing the gateway's credentials.
    let r = chat("gem-invalid");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "provider_auth_failed");
    // In a pool, both fail over to the good key.
    let before = seen.lock().unwrap().len();
    let r = chat("gem-failover");
    assert_eq!(r.status, 200, "{}", r.body);
    let keys: Vec<String> = seen.lock().unwrap()[before..]
        .iter()
        .filter_map(|q| q.header("x-goog-api-key").map(str::to_string))
        .collect();
    assert_eq!(keys, [LIMITED, INVALID, GOOD]);
    // Both are cooling down now: the next request goes straight to the good key.
    let before = seen.lock().unwrap().len();
    assert_eq!(chat("gem-failover").status, 200);
    let keys: Vec<String> = seen.lock().unwrap()[before..]
        .iter()
        .filter_map(|q| q.header("x-goog-api-key").map(str::to_string))
        .collect();
    assert_eq!(keys, [GOOD]);
}

#[test]
fn responses_and_messages_on_a_gemini_model() {
    let (gw, seen) = gateway();
    let r = post(
        &gw,
        "/v1/responses",
        &json!({"model": "gem", "input": "Hi", "instructions": "Be brief."}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let resp = r.json();
    assert_eq!(resp["object"], "response");
    let kinds: Vec<&str> = resp["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning", "message"],
        "thinking comes back as a reasoning item"
    );
    assert_eq!(
        resp["output"][1]["content"][0]["text"],
        "Hello from Gemini."
    );
    assert_eq!(
        resp["usage"]["output_tokens_details"]["reasoning_tokens"],
        4
    );
    assert_eq!(
        last(&seen).json()["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    let r = post(
        &gw,
        "/v1/messages",
        &json!({"model": "gem", "max_tokens": 20, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("event: message_start"));
    assert!(r.body.contains(r#""text":"Hel""#) && r.body.contains("event: message_stop"));
}
