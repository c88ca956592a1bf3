//! The mock's answers: determinism, usage, failures, and their exact wire bytes.

use super::*;
use crate::config::schema::MockFailure;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn req(endpoint: Endpoint, body: &str) -> AiRequest {
    AiRequest::parse(endpoint, Bytes::copy_from_slice(body.as_bytes())).unwrap()
}

async fn body_json(r: UpstreamResponse) -> Value {
    let mut b = r.body;
    serde_json::from_slice(&b.read_all(1 << 20).await.unwrap()).unwrap()
}

#[tokio::test]
async fn chat_is_deterministic_with_exact_usage() {
    let m = MockProvider::new(MockConfig::default());
    let r = req(
        Endpoint::ChatCompletions,
        r#"{"model":"x","messages":[{"role":"user","content":"hello there"}]}"#,
    );
    let a = body_json(m.call(&r, "up").await).await;
    let b = body_json(m.call(&r, "up").await).await;
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_eq!(a["usage"]["completion_tokens"], 16);
    assert_eq!(a["usage"]["prompt_tokens"], 3);
    assert_eq!(a["usage"]["total_tokens"], 19);
    assert_eq!(a["model"], "up");
    assert_eq!(
        a["mock"]["prompt_sha256"],
        hex::encode(Sha256::digest(b"hello there"))
    );
    let short = req(
        Endpoint::ChatCompletions,
        r#"{"model":"x","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let c = body_json(m.call(&short, "up").await).await;
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(c["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn failure_every_nth() {
    let m = MockProvider::new(MockConfig {
        failure: Some(MockFailure {
            status: 429,
            every: 2,
            retry_after_secs: Some(3),
        }),
        ..MockConfig::default()
    });
    let r = req(Endpoint::Completions, r#"{"model":"x","prompt":"p"}"#);
    assert_eq!(m.call(&r, "x").await.status, 200);
    let f = m.call(&r, "x").await;
    assert_eq!((f.status, f.retry_after.as_deref()), (429, Some("3")));
    assert_eq!(body_json(f).await["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn stream_frames_and_cut() {
    let m = MockProvider::new(MockConfig {
        cut_stream_after_tokens: Some(2),
        ..MockConfig::default()
    });
    let r = req(
        Endpoint::ChatCompletions,
        r#"{"model":"x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut resp = m.call(&r, "x").await;
    assert!(resp.is_event_stream());
    let mut got = vec![];
    let err = loop {
        match resp.body.next_chunk().await {
            Ok(Some(c)) => got.push(c),
            Ok(None) => panic!("stream should be cut"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind, UpstreamErrorKind::StreamCut);
    assert_eq!(got.len(), 3); // role chunk + 2 tokens
}

#[tokio::test]
async fn embeddings_base64_matches_float() {
    let m = MockProvider::new(MockConfig::default());
    let f = body_json(
        m.call(
            &req(
                Endpoint::Embeddings,
                r#"{"model":"e","input":["a","b"],"encoding_format":"float"}"#,
            ),
            "e",
        )
        .await,
    )
    .await;
    let b = body_json(
        m.call(
            &req(
                Endpoint::Embeddings,
                r#"{"model":"e","input":["a","b"],"encoding_format":"base64","dimensions":8}"#,
            ),
            "e",
        )
        .await,
    )
    .await;
    assert_eq!(f["data"].as_array().unwrap().len(), 2);
    assert_eq!(f["data"][0]["embedding"].as_array().unwrap().len(), 64);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 8 * 4);
}

/// The body with every `id` and `created` value masked (they vary per call).
fn masked(body: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(body).into_owned();
    for key in ["\"id\":\"", "\"created\":"] {
        let mut from = 0;
        while let Some(at) = s[from..].find(key) {
            let start = from + at + key.len();
            let end = start + s[start..].find(['"', ',', '}']).unwrap_or(0);
            s.replace_range(start..end, "X");
            from = start;
        }
    }
    s
}

/// Every kind of answer, byte for byte as OpenAI writes it (ids and times masked).
#[tokio::test]
async fn answers_are_openai_wire_bytes() {
    let m = MockProvider::new(MockConfig {
        completion_tokens: 3,
        embedding_dimensions: 2,
        ..MockConfig::default()
    });
    let tools = r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}}],"tool_choice":"required""#;
    let mut out = String::new();
    for (endpoint, body) in [
        (
            Endpoint::ChatCompletions,
            r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#.to_string(),
        ),
        (
            Endpoint::ChatCompletions,
            r#"{"model":"x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
                .to_string(),
        ),
        (
            Endpoint::ChatCompletions,
            format!(r#"{{"model":"x","messages":[{{"role":"user","content":"hi"}}],{tools}}}"#),
        ),
        (
            Endpoint::ChatCompletions,
            format!(
                r#"{{"model":"x","stream":true,"messages":[{{"role":"user","content":"hi"}}],{tools}}}"#
            ),
        ),
        (
            Endpoint::Completions,
            r#"{"model":"x","prompt":"hi"}"#.to_string(),
        ),
        (
            Endpoint::Completions,
            r#"{"model":"x","stream":true,"prompt":"hi"}"#.to_string(),
        ),
        (
            Endpoint::Embeddings,
            r#"{"model":"x","input":["a","b"]}"#.to_string(),
        ),
        (
            Endpoint::Embeddings,
            r#"{"model":"x","input":"a","encoding_format":"base64"}"#.to_string(),
        ),
    ] {
        let mut b = m.call(&req(endpoint, &body), "up").await.body;
        out.push_str(&masked(&b.read_all(1 << 20).await.unwrap()));
        out.push_str("\n---\n");
    }
    insta::assert_snapshot!(out);
}
