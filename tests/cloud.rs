//! Bedrock and Vertex AI behind the gateway, against the real binary and fake upstreams
//! that check what they receive: Bedrock's SigV4 signature (recomputed over the bytes
//! received), paths, Converse bodies and binary event streams split across reads; Vertex's
//! JWT (verified with the test key's public half at a fake token endpoint), the cached
//! bearer token, Gemini and Claude paths and bodies.

mod common;

use ai_rate_limiter::providers::aws_auth::AwsCredentials;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use common::fixture_server::{last, recording, Body, Recorded, Reply, Request};
use common::{send, sse_events, Gw, Resp};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const KEY: &str = "sk-client";
const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "session-token-0123456789";
const BEARER: &str = "bedrock-api-key-0123456789";

fn post(gw: &Gw, path: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {KEY}");
    send(
        "POST",
        &gw.url(path),
        &[("authorization", &auth)],
        Some(body),
    )
}

fn chat(gw: &Gw, model: &str, extra: Value) -> Resp {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(gw, "/v1/chat/completions", &body)
}

/// One event-stream frame.
fn frame(kind: &str, name: &str, payload: Value) -> Vec<u8> {
    let (type_header, message_type) = if kind == "exception" {
        (":exception-type", "exception")
    } else {
        (":event-type", "event")
    };
    let m = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            type_header,
            HeaderValue::String(name.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.into()),
        ));
    let mut out = Vec::new();
    write_message_to(&m, &mut out).unwrap();
    out
}

/// Cut a byte stream into pieces of awkward sizes (frames split across reads).
fn pieces(bytes: Vec<u8>) -> Vec<Vec<u8>> {
    bytes.chunks(37).map(<[u8]>::to_vec).collect()
}

/// Recompute the SigV4 `authorization` of a request the fake received.
fn expected_signature(req: &Request, token: Option<&str>) -> String {
    let date = req.header("x-amz-date").expect("x-amz-date");
    let t = chrono_free_parse(date);
    let host = req.header("host").unwrap().to_string();
    let creds = AwsCredentials::new("us-east-1", AKID, SECRET, token);
    let signed = vec![
        ("host".to_string(), host.clone()),
        (
            "content-type".to_string(),
            req.header("content-type").unwrap().to_string(),
        ),
    ];
    let added = creds
        .sign(
            &format!("https://{host}{}", req.target),
            &signed,
            &req.body,
            t,
        )
        .unwrap();
    added
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1
}

/// `YYYYMMDDTHHMMSSZ` → a time (enough calendar arithmetic for a test).
fn chrono_free_parse(s: &str) -> std::time::SystemTime {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(9, 11) * 3600 + n(11, 13) * 60 + n(13, 15);
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn bedrock(req: &Request) -> Reply {
    let signed = req.header("authorization").unwrap_or_default();
    if signed.starts_with("AWS4-HMAC-SHA256") {
        let token = req.header("x-amz-security-token");
        if signed != expected_signature(req, token) {
            return Reply::json(
                "403 Forbidden",
                r#"{"message":"The request signature we calculated does not match the signature you provided."}"#,
            );
        }
    } else if signed != format!("Bearer {BEARER}") {
        return Reply::json(
            "403 Forbidden",
            r#"{"message":"Missing Authentication Token"}"#,
        );
    }
    let body = req.json();
    let model = req.target.split('/').nth(2).unwrap_or_default();
    if model == "throttled" {
        return Reply::json(
            "429 Too Many Requests",
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        )
        .with(
            "x-amzn-ErrorType",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        );
    }
    if req.target.ends_with("/converse-stream") {
        let mut bytes = frame("event", "messageStart", json!({"role": "assistant"}));
        bytes.extend(frame(
            "event",
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Checking"}, "p": "abc"}),
        ));
        if model == "cut" {
            bytes.extend(frame(
                "exception",
                "throttlingException",
                json!({"message": "Too many tokens"}),
            ));
        } else {
            bytes.extend(frame(
                "event",
                "contentBlockStop",
                json!({"contentBlockIndex": 0}),
            ));
            bytes.extend(frame("event", "contentBlockStart", json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_Ab1", "name": "get_weather"}}})));
            bytes.extend(frame(
                "event",
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}}),
            ));
            bytes.extend(frame(
                "event",
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Oslo\"}"}}}),
            ));
            bytes.extend(frame(
                "event",
                "contentBlockStop",
                json!({"contentBlockIndex": 1}),
            ));
            bytes.extend(frame(
                "event",
                "messageStop",
                json!({"stopReason": "tool_use"}),
            ));
            bytes.extend(frame("event", "metadata", json!({"usage": {"inputTokens": 412, "outputTokens": 38, "totalTokens": 450}, "metrics": {"latencyMs": 903}})));
        }
        return Reply {
            status: "200 OK",
            headers: Vec::new(),
            body: Body::Binary("application/vnd.amazon.eventstream", pieces(bytes)),
        };
    }
    if body["toolConfig"].is_object() {
        return Reply::json("200 OK", json!({"output": {"message": {"role": "assistant", "content": [
            {"text": "Checking."}, {"toolUse": {"toolUseId": "tooluse_Ab1", "name": "get_weather", "input": {"city": "Oslo"}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 412, "outputTokens": 38, "totalTokens": 450,
            "cacheReadInputTokens": 12}, "metrics": {"latencyMs": 903}}).to_string());
    }
    Reply::json("200 OK", json!({"output": {"message": {"role": "assistant", "content": [{"text": "Hello from Bedrock."}]}},
        "stopReason": "max_tokens", "usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13},
        "metrics": {"latencyMs": 100}}).to_string())
}

fn bedrock_gateway() -> (Gw, Recorded) {
    let (port, seen) = recording(bedrock);
    let base = format!("http://127.0.0.1:{port}");
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: aws, kind: bedrock, region: us-east-1, base_url: "{base}", access_key_id: "{AKID}", secret_access_key: "{SECRET}", session_token: "{TOKEN}"}}
  - {{name: aws-bearer, kind: bedrock, region: us-east-1, base_url: "{base}", api_key: "{BEARER}"}}
models:
  - {{name: claude-bedrock, deployments: [{{provider: aws, model: "anthropic.claude-3-haiku-20240307-v1:0"}}]}}
  - {{name: bearer, deployments: [{{provider: aws-bearer, model: "anthropic.claude-3-haiku-20240307-v1:0"}}]}}
  - {{name: throttled, deployments: [{{provider: aws, model: throttled}}]}}
  - {{name: cut, deployments: [{{provider: aws, model: cut}}]}}
reload: {{watch: false}}
"#
    ));
    (gw, seen)
}

fn data_events(body: &str) -> Vec<Value> {
    sse_events(body)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn bedrock_converse_signed_translated_and_streamed() {
    let (gw, seen) = bedrock_gateway();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let r = chat(
        &gw,
        "claude-bedrock",
        json!({"tools": tools, "tool_choice": "required", "max_tokens": 64,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.json();
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c["choices"][0]["message"]["content"], "Checking.");
    assert_eq!(
        c["choices"][0]["message"]["tool_calls"][0]["id"],
        "tooluse_Ab1"
    );
    assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 12);
    let sent = last(&seen);
    assert_eq!(
        sent.target,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    assert_eq!(
        sent.header("x-amz-security-token"),
        Some(TOKEN),
        "signed temporary credentials"
    );
    assert!(sent
        .header("authorization")
        .unwrap()
        .contains("/us-east-1/bedrock/aws4_request"));
    assert_eq!(
        sent.json(),
        json!({"system": [{"text": "Be brief."}], "messages": [{"role": "user", "content": [{"text": "Weather?"}]}],
               "inferenceConfig": {"maxTokens": 64},
               "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}],
                              "toolChoice": {"any": {}}}})
    );
    // The event stream, split at awkward offsets, becomes OpenAI chunks.
    let r = chat(
        &gw,
        "claude-bedrock",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        last(&seen).target,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    );
    let ev = data_events(&r.body);
    let text: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Checking");
    let call = ev
        .iter()
        .find_map(|e| {
            e["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
        })
        .unwrap();
    assert_eq!(call["index"], 0, "OpenAI numbers only the calls");
    let args: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city":"Oslo"}"#);
    assert!(ev
        .iter()
        .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(ev.iter().any(|e| e["usage"]["total_tokens"] == 450));
    assert!(r.body.ends_with("data: [DONE]\n\n"));
    // A bearer Bedrock key instead of AWS keys.
    let r = chat(&gw, "bearer", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    assert!(last(&seen).header("x-amz-date").is_none());
}

#[test]
fn bedrock_errors_and_mid_stream_exceptions() {
    let (gw, _seen) = bedrock_gateway();
    let r = chat(&gw, "throttled", json!({}));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    // An exception frame after a delta: an in-band error, then the stream ends.
    let r = chat(&gw, "cut", json!({"stream": true}));
    assert_eq!(r.status, 200);
    let ev = data_events(&r.body);
    assert_eq!(
        ev.last().unwrap()["error"]["message"],
        "throttlingException: Too many tokens"
    );
    assert!(!r.body.contains("[DONE]"));
    // It counts as the provider's 429 (the key cools down as after one), for the metrics
    // and the access log.
    let labels = [("provider", "aws"), ("kind", "status_429")];
    assert_eq!(
        gw.wait_metric("gateway_upstream_errors_total", &labels, 2.0),
        2.0
    );
    gw.wait_log(|l| l.contains("stream_throttled"));
    // The Responses API reaches Bedrock through chat.
    let r = post(
        &gw,
        "/v1/responses",
        &json!({"model": "bearer", "input": "Hi"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "Hello from Bedrock."
    );
    assert_eq!(r.json()["status"], "incomplete");
}

struct Vertex {
    tokens: AtomicUsize,
    refuse_next: AtomicUsize,
}

fn vertex_upstream(v: Arc<Vertex>, public: String) -> impl Fn(&Request) -> Reply {
    move |req: &Request| {
        if req.target == "/token" {
            let form = String::from_utf8_lossy(&req.body).to_string();
            let Some(jwt) = form.strip_prefix(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
            ) else {
                return Reply::json("400 Bad Request", r#"{"error":"unsupported_grant_type"}"#);
            };
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap();
            let mut check = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            check.set_audience(&[format!("http://{}/token", req.header("host").unwrap())]);
            let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &key, &check) else {
                return Reply::json("400 Bad Request", r#"{"error":"invalid_grant"}"#);
            };
            let (c, h) = (data.claims, data.header);
            if c["iss"] != "gateway@p1.iam.gserviceaccount.com"
                || c["scope"] != "https://www.googleapis.com/auth/cloud-platform"
                || h.kid.as_deref() != Some("key-1")
            {
                return Reply::json("400 Bad Request", r#"{"error":"invalid_grant"}"#);
            }
            let n = v.tokens.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::json("200 OK", json!({"access_token": format!("ya29.token-{n}"), "expires_in": 3599, "token_type": "Bearer"}).to_string());
        }
        let n = v.tokens.load(Ordering::SeqCst);
        if req.header("authorization") != Some(format!("Bearer ya29.token-{n}").as_str()) {
            return Reply::json(
                "401 Unauthorized",
                r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
            );
        }
        if v.refuse_next.swap(0, Ordering::SeqCst) == 1 {
            return Reply::json(
                "401 Unauthorized",
                r#"{"error":{"code":401,"message":"token revoked","status":"UNAUTHENTICATED"}}"#,
            );
        }
        let gemini = std::fs::read_to_string(format!(
            "{}/tests/fixtures/gemini/text.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let anthropic = |name: &str| {
            std::fs::read_to_string(format!(
                "{}/tests/fixtures/anthropic/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        if req.target.contains("gemini-echo") {
            // An upstream that echoes the caller's credentials in its error.
            let token = req.header("authorization").unwrap_or_default();
            return Reply::json(
                "400 Bad Request",
                json!({"error": {"code": 400, "message": format!("bad request from {token}"), "status": "INVALID_ARGUMENT"}}).to_string(),
            );
        }
        match req.target.rsplit_once(':').map(|(_, m)| m) {
            Some("generateContent") => Reply::json("200 OK", gemini),
            Some("rawPredict") => Reply::json("200 OK", anthropic("message_text.json")),
            Some("streamRawPredict") => Reply::events(anthropic("stream_text.sse")),
            _ => Reply::json(
                "404 Not Found",
                r#"{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}"#,
            ),
        }
    }
}

#[test]
fn vertex_jwt_bearer_flow_gemini_and_claude() {
    let dir = format!("{}/tests/fixtures/vertex", env!("CARGO_MANIFEST_DIR"));
    let private = std::fs::read_to_string(format!("{dir}/test_key.pem")).unwrap();
    let public = std::fs::read_to_string(format!("{dir}/test_key.pub.pem")).unwrap();
    let state = Arc::new(Vertex {
        tokens: AtomicUsize::new(0),
        refuse_next: AtomicUsize::new(0),
    });
    let (port, seen) = recording(vertex_upstream(state.clone(), public));
    let tmp = tempfile::tempdir().unwrap();
    let sa = tmp.path().join("sa.json");
    std::fs::write(
        &sa,
        json!({"type": "service_account", "project_id": "p1", "private_key_id": "key-1",
        "private_key": private, "client_email": "gateway@p1.iam.gserviceaccount.com",
        "token_uri": format!("http://127.0.0.1:{port}/token")})
        .to_string(),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}/v1/projects/p1/locations/us-central1");
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: c, keys: ["{KEY}"]}}]
providers:
  - {{name: vx, kind: vertex, project: p1, location: us-central1, base_url: "{base}", credentials_file: "{}"}}
models:
  - {{name: gem, deployments: [{{provider: vx, model: gemini-2.5-flash}}]}}
  - {{name: claude, deployments: [{{provider: vx, model: "claude-sonnet-4@20250514"}}]}}
  - {{name: echo, deployments: [{{provider: vx, model: gemini-echo}}]}}
reload: {{watch: false}}
"#,
        sa.display()
    ));
    let r = chat(&gw, "gem", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from Gemini."
    );
    assert_eq!(last(&seen).target, "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent");
    // Claude on Vertex: the model in the URL, anthropic_version in the body.
    let r = chat(&gw, "claude", json!({"max_tokens": 30}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello! How can I help?"
    );
    let sent = last(&seen);
    assert_eq!(sent.target, "/v1/projects/p1/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict");
    let body = sent.json();
    assert!(body.get("model").is_none());
    assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
    let r = chat(&gw, "claude", json!({"stream": true}));
    let text: String = data_events(&r.body)
        .iter()
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello!");
    assert!(last(&seen).target.ends_with(":streamRawPredict"));
    // One token served every request so far; a 401 drops it and the next gets a new one.
    assert_eq!(state.tokens.load(Ordering::SeqCst), 1);
    state.refuse_next.store(1, Ordering::SeqCst);
    assert_eq!(
        chat(&gw, "gem", json!({})).status,
        502,
        "the refusal counts as an auth failure"
    );
    assert_eq!(chat(&gw, "claude", json!({})).status, 200);
    assert_eq!(state.tokens.load(Ordering::SeqCst), 2);
    // The access token is a credential too: an upstream that echoes it has it masked.
    let r = chat(&gw, "echo", json!({}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("bad request from Bearer "), "{}", r.body);
    assert!(!r.body.contains("ya29.token-"), "{}", r.body);
}
