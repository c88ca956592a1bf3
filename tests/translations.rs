//! Snapshot tests of every provider translation: a fixture in, the exact bytes out.
//!
//! Each case runs one `Provider` method of one provider (chosen through
//! `providers::registry`, as the gateway does) on an input fixture and compares the
//! rendered result with `tests/fixtures/translations/<provider>/<case>.out`, byte for byte:
//! - `request.*`: what is sent upstream (path, auth and default headers, body);
//! - `answer.*`: a whole answer as an OpenAI client sees it, and the usage the provider
//!   reads from its own answer;
//! - `stream.*`: a stream's events as an OpenAI client sees them, and the usage the
//!   provider reads from its own events;
//! - `signals.*`: what its rate-limit headers say about the key.
//!
//! Inputs are `tests/fixtures/translations/in/*` and the Anthropic wire fixtures of
//! `tests/fixtures/anthropic/`. After an intended change, `UPDATE_SNAPSHOTS=1 cargo test
//! --test translations` rewrites the `.out` files; review their diff like code.

use ai_rate_limiter::canonical::{AiRequest, Endpoint, Usage};
use ai_rate_limiter::config::schema::ProviderKind;
use ai_rate_limiter::providers::api::{plain, Target};
use ai_rate_limiter::providers::{registry, Provider};
use bytes::Bytes;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn input(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Compare with (or, with `UPDATE_SNAPSHOTS=1`, write) a snapshot; returns a mismatch.
fn check(provider: &str, case: &str, got: String) -> Option<String> {
    let path = fixtures()
        .join("translations")
        .join(provider)
        .join(format!("{case}.out"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    (want != got).then(|| {
        format!(
            "{}: snapshot differs\n--- want\n{want}\n--- got\n{got}",
            path.display()
        )
    })
}

fn kind(provider: &str) -> ProviderKind {
    match provider {
        "openai" => ProviderKind::Openai,
        "azure" => ProviderKind::Azure,
        "anthropic" => ProviderKind::Anthropic,
        "mock" => ProviderKind::Mock,
        "gemini" => ProviderKind::Gemini,
        other => panic!("no provider {other}"),
    }
}

fn target(provider: &str) -> Target<'static> {
    Target {
        model: "upstream-model",
        api_key: Some("sk-test-0123456789"),
        api_version: (provider == "azure").then_some("2024-10-21"),
        default_max_tokens: 4096,
        credentials: None,
    }
}

fn usage_line(u: Option<Usage>) -> String {
    match u {
        Some(u) => format!(
            "# native usage: prompt={} completion={}\n",
            u.prompt_tokens, u.completion_tokens
        ),
        None => "# native usage: none\n".into(),
    }
}

fn request(p: &dyn Provider, provider: &str, endpoint: Endpoint, file: &str) -> String {
    if !p.serves(endpoint) {
        return format!("not served: {}\n", endpoint.path());
    }
    let req = AiRequest::parse(endpoint, Bytes::from(input(file))).expect("fixture parses");
    match p.outgoing(&target(provider), &req) {
        Err(e) => format!("error {}: {e}\n", e.status()),
        Ok(out) => {
            let mut s = format!("POST {}\n", out.path);
            for (k, v) in plain(&out.headers)
                .into_iter()
                .chain(plain(p.default_headers()))
            {
                writeln!(s, "{k}: {v}").unwrap();
            }
            s.push('\n');
            // A translated body is written in whatever field order its writer finds
            // cheapest (`canonical::write`): shown with sorted keys, as order carries no
            // meaning in a JSON object. A pass-through body is shown as sent.
            let translated =
                ["anthropic", "gemini"].contains(&provider) && endpoint != Endpoint::Messages;
            match serde_json::from_slice::<Value>(&out.body) {
                Ok(v) if translated => s.push_str(&v.to_string()),
                _ => s.push_str(&String::from_utf8_lossy(&out.body)),
            }
            s.push('\n');
            s
        }
    }
}

fn answer(p: &dyn Provider, status: u16, file: &str) -> String {
    let body = input(file);
    let native = serde_json::from_slice::<Value>(&body).ok();
    let mut s = match p.whole_answer(status, Bytes::from(body), "public-chat", 1_700_000_000) {
        Err(e) => format!("error {}: {e}\n", e.status()),
        Ok(a) => format!(
            "{}{}\n{}\n",
            a.status,
            if a.as_sent { " (as sent)" } else { "" },
            String::from_utf8_lossy(&a.body)
        ),
    };
    let usage = native.filter(|_| status < 400).and_then(|v| p.usage(&v));
    s.push_str(&usage_line(usage));
    s
}

fn stream(p: &dyn Provider, file: &str) -> String {
    // Events end with a blank line of LF or CRLF (Gemini sends CRLF).
    let text = String::from_utf8(input(file))
        .expect("utf-8 fixture")
        .replace("\r\n", "\n");
    let mut translator = p.stream_translator("public-chat", 1_700_000_000);
    let mut usage = Usage::default();
    let mut s = String::new();
    if translator.is_none() {
        s.push_str("(passed through)\n");
    }
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data: String = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n");
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        p.stream_usage(&v, &mut usage);
        if let Some(t) = translator.as_mut() {
            for out in t.event(data.as_bytes()) {
                s.push_str(&String::from_utf8_lossy(&out.to_sse()));
            }
            if t.ended() {
                s.push_str("# ended\n");
                break;
            }
        }
    }
    s.push_str(&usage_line(Some(usage)));
    s
}

fn signals(p: &dyn Provider, file: &str) -> String {
    let headers: Vec<(String, String)> = String::from_utf8(input(file))
        .expect("utf-8 fixture")
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = p.signals(&headers);
    format!(
        "exhausted_for_ms: {:?}\nremaining_requests: {:?}\nremaining_tokens: {:?}\n",
        s.exhausted_for.map(|d| d.as_millis()),
        s.remaining_requests,
        s.remaining_tokens
    )
}

/// One case: provider, snapshot name, what to run.
enum Run {
    Request(Endpoint, &'static str),
    Answer(u16, &'static str),
    Stream(&'static str),
    Signals(&'static str),
}

#[rustfmt::skip]
const CASES: &[(&str, &str, Run)] = {
    use Endpoint::*;
    use Run::*;
    &[
        (
            "openai",
            "request.chat_plain",
            Request(ChatCompletions, "translations/in/chat_plain.json"),
        ),
        (
            "openai",
            "request.chat_tools",
            Request(ChatCompletions, "translations/in/chat_tools.json"),
        ),
        (
            "openai",
            "request.completions",
            Request(Completions, "translations/in/completions.json"),
        ),
        (
            "openai",
            "request.embeddings",
            Request(Embeddings, "translations/in/embeddings.json"),
        ),
        (
            "openai",
            "request.messages",
            Request(Messages, "translations/in/messages.json"),
        ),
        (
            "openai",
            "answer.200",
            Answer(200, "translations/in/openai_answer.json"),
        ),
        (
            "openai",
            "answer.429_azure_shape",
            Answer(429, "translations/in/azure_error.json"),
        ),
        (
            "openai",
            "answer.502_html",
            Answer(502, "translations/in/bad_gateway.html"),
        ),
        (
            "openai",
            "stream.chat",
            Stream("translations/in/openai_stream.sse"),
        ),
        (
            "openai",
            "signals",
            Signals("translations/in/openai_headers.txt"),
        ),
        (
            "azure",
            "request.chat_plain",
            Request(ChatCompletions, "translations/in/chat_plain.json"),
        ),
        (
            "azure",
            "request.embeddings",
            Request(Embeddings, "translations/in/embeddings.json"),
        ),
        (
            "azure",
            "answer.429",
            Answer(429, "translations/in/azure_error.json"),
        ),
        (
            "azure",
            "signals",
            Signals("translations/in/openai_headers.txt"),
        ),
        (
            "anthropic",
            "request.chat_plain",
            Request(ChatCompletions, "translations/in/chat_plain.json"),
        ),
        (
            "anthropic",
            "request.chat_tools",
            Request(ChatCompletions, "translations/in/chat_tools.json"),
        ),
        (
            "anthropic",
            "request.messages",
            Request(Messages, "translations/in/messages.json"),
        ),
        (
            "anthropic",
            "request.embeddings",
            Request(Embeddings, "translations/in/embeddings.json"),
        ),
        (
            "anthropic",
            "answer.200_text",
            Answer(200, "anthropic/message_text.json"),
        ),
        (
            "anthropic",
            "answer.200_tool_use",
            Answer(200, "anthropic/message_tool_use.json"),
        ),
        (
            "anthropic",
            "answer.404",
            Answer(404, "anthropic/error_not_found.json"),
        ),
        (
            "anthropic",
            "answer.429",
            Answer(429, "anthropic/error_rate_limit.json"),
        ),
        (
            "anthropic",
            "answer.529",
            Answer(529, "anthropic/error_overloaded.json"),
        ),
        (
            "anthropic",
            "answer.200_not_a_message",
            Answer(200, "translations/in/azure_error.json"),
        ),
        (
            "anthropic",
            "stream.text",
            Stream("anthropic/stream_text.sse"),
        ),
        (
            "anthropic",
            "stream.tool_use",
            Stream("anthropic/stream_tool_use.sse"),
        ),
        (
            "anthropic",
            "stream.overloaded",
            Stream("anthropic/stream_overloaded.sse"),
        ),
        (
            "anthropic",
            "signals",
            Signals("translations/in/anthropic_headers.txt"),
        ),
        (
            "mock",
            "request.chat_plain",
            Request(ChatCompletions, "translations/in/chat_plain.json"),
        ),
        (
            "mock",
            "answer.200",
            Answer(200, "translations/in/openai_answer.json"),
        ),
        (
            "mock",
            "signals",
            Signals("translations/in/openai_headers.txt"),
        ),
        ("gemini", "request.chat_plain", Request(ChatCompletions, "translations/in/chat_plain.json")),
        ("gemini", "request.chat_tools", Request(ChatCompletions, "translations/in/chat_tools.json")),
        ("gemini", "request.embeddings", Request(Embeddings, "translations/in/embeddings.json")),
        ("gemini", "request.completions", Request(Completions, "translations/in/completions.json")),
        ("gemini", "answer.200_text", Answer(200, "gemini/text.json")),
        ("gemini", "answer.200_function_call", Answer(200, "gemini/function_call.json")),
        ("gemini", "answer.200_blocked", Answer(200, "gemini/blocked.json")),
        ("gemini", "answer.200_embeddings", Answer(200, "gemini/embeddings.json")),
        ("gemini", "answer.429", Answer(429, "gemini/error_429.json")),
        ("gemini", "answer.400_key_invalid", Answer(400, "gemini/error_key_invalid.json")),
        ("gemini", "stream.text", Stream("gemini/stream_text.sse")),
        ("gemini", "stream.call", Stream("gemini/stream_call.sse")),
    ]
};

#[test]
fn every_translation_matches_its_snapshot() {
    let mut failures = Vec::new();
    for (provider, case, run) in CASES {
        let p = registry(kind(provider));
        let got = match run {
            Run::Request(endpoint, file) => request(p, provider, *endpoint, file),
            Run::Answer(status, file) => answer(p, *status, file),
            Run::Stream(file) => stream(p, file),
            Run::Signals(file) => signals(p, file),
        };
        failures.extend(check(provider, case, got));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every snapshot on disk belongs to a case (a renamed case leaves no stale file).
    for dir in ["openai", "azure", "anthropic", "mock", "gemini"] {
        for f in std::fs::read_dir(fixtures().join("translations").join(dir)).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            let case = name.trim_end_matches(".out");
            assert!(
                CASES.iter().any(|(p, c, _)| *p == dir && *c == case),
                "stale snapshot {dir}/{name}"
            );
        }
    }
}
