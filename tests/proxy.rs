//! The realtime path through the real binary: a front gateway in front of a second gateway
//! that plays an OpenAI-compatible upstream (mock models behind a canary provider key).

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-consumer";
const CANARY: &str = "sk-canary-7f3a9c1e5b2d";

fn front_yaml(up: &Gw, extra: &str) -> String {
    format!(
        r#"
server: {{threads: 1, max_body_bytes: 16777216}}
consumers: [{{name: tester, keys: ["{KEY}"]}}]
providers:
  - {{name: up, kind: openai-compatible, base_url: "{base}", api_key: "{CANARY}"}}
  - {{name: dead, kind: openai-compatible, base_url: "http://127.0.0.1:{dead}/v1", api_key: "{CANARY}"}}
  - {{name: local, kind: mock}}
models:
  - {{name: ok, deployments: [{{provider: up}}]}}
  - {{name: slow, deployments: [{{provider: up}}]}}
  - {{name: cut, deployments: [{{provider: up}}]}}
  - {{name: rl429, deployments: [{{provider: up}}]}}
  - {{name: fail500, deployments: [{{provider: up}}]}}
  - name: failover
    deployments:
      - {{provider: dead, model: ok}}
      - {{provider: up, model: fail500}}
      - {{provider: up, model: rl429}}
      - {{provider: up, model: ok}}
  - name: org/model-x
    deployments: [{{provider: local}}]
{extra}
"#,
        base = up.base_url(),
        dead = free_port(),
    )
}

fn pair(extra: &str) -> (Gw, Gw) {
    let up = Gw::start(&upstream_yaml(CANARY));
    let front = Gw::start(&front_yaml(&up, extra));
    (up, front)
}

#[test]
fn large_bodies_reach_upstream_intact_and_oversize_is_413() {
    let (_up, front) = pair("");
    for size in [1usize << 20, 10 << 20] {
        let prompt: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let r = post(
            &front.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("ok", &prompt, false),
        );
        assert_eq!(
            r.status,
            200,
            "{size}: {}",
            &r.body[..r.body.len().min(300)]
        );
        let v = r.json();
        assert_eq!(v["mock"]["prompt_bytes"], size);
        assert_eq!(
            v["mock"]["prompt_sha256"],
            hex::encode(Sha256::digest(prompt.as_bytes()))
        );
        assert_eq!(v["model"], "ok");
    }
    let big = "x".repeat(17 << 20);
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("ok", &big, false),
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn failover_through_connect_error_5xx_and_429() {
    let (_up, front) = pair("routing: {strategy: ordered, retries: 3}");
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("failover", "hello", false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "chat.completion");
    let m = front.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "gateway_upstream_errors_total",
            &[("provider", "dead"), ("kind", "connect")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "gateway_upstream_errors_total",
            &[("provider", "up"), ("kind", "status_5xx")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "gateway_upstream_errors_total",
            &[("provider", "up"), ("kind", "status_429")]
        ),
        1.0
    );
    let log = front.wait_log(|l| l.contains("attempts=4"));
    let line = log
        .lines()
        .find(|l| l.contains("target") || l.contains("access"))
        .unwrap_or("");
    assert!(
        log.contains("attempts=4"),
        "access log should show 4 attempts: {line}"
    );
}

#[test]
fn exhausted_budget_returns_last_upstream_error_in_openai_shape() {
    let (_up, front) = pair("routing: {strategy: ordered, retries: 1}");
    // dead (connect error) then fail500: the client gets the upstream's 500.
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("failover", "x", false),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    let e = r.json()["error"].clone();
    assert_eq!(e["type"], "server_error");
    assert!(e.get("param").is_some() && e.get("code").is_some());
    // A 429 passes through with its retry-after.
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("rl429", "x", false),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
}

#[test]
fn only_connect_errors_give_502() {
    let up = Gw::start(&upstream_yaml(CANARY));
    let front = Gw::start(&front_yaml(&up, ""));
    drop(up);
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("ok", "x", false),
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "server_error");
}

#[test]
fn sse_passes_through_unbuffered_at_upstream_cadence() {
    let (_up, front) = pair("");
    let resp = agent()
        .post(&front.url("/v1/chat/completions"))
        .set("authorization", &format!("Bearer {KEY}"))
        .send_string(&chat_body("slow", "count", true))
        .unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut reader = resp.into_reader();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let mut text = String::new();
    let mut arrivals = Vec::new(); // time at which each content event arrived
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let before = text.matches("\"content\":\"").count();
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        let after = text.matches("\"content\":\"").count();
        for _ in before..after {
            arrivals.push(start.elapsed());
        }
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // role chunk + 10 tokens, paced 100 ms apart upstream.
    assert_eq!(arrivals.len(), 11, "{text}");
    let spread = arrivals[10] - arrivals[1];
    let distinct_gaps = arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(40))
        .count();
    assert!(
        spread >= Duration::from_millis(600),
        "events arrived together (spread {spread:?}): buffered"
    );
    assert!(
        distinct_gaps >= 7,
        "only {distinct_gaps} paced gaps: {arrivals:?}"
    );
    // The client did not ask for usage: no usage chunk reaches it, though the gateway counted it.
    assert!(!sse_data(&text).iter().any(|d| d.contains("\"choices\":[]")));
    let tokens = &[("model", "slow"), ("kind", "completion")];
    assert_eq!(
        front.wait_metric("gateway_tokens_total", tokens, 10.0),
        10.0
    );
}

#[test]
fn stream_usage_chunk_only_when_asked() {
    let (_up, front) = pair("");
    let body = serde_json::json!({"model": "ok", "stream": true, "stream_options": {"include_usage": true},
                                  "messages": [{"role": "user", "content": "hi"}]});
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &body.to_string(),
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 16);
}

#[test]
fn stream_cut_midway_ends_with_openai_error_event() {
    let (_up, front) = pair("");
    let r = post(
        &front.url("/v1/chat/completions"),
        Some(KEY),
        &chat_body("cut", "x", true),
    );
    assert_eq!(r.status, 200);
    let data = sse_data(&r.body);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{}", r.body);
    let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last["error"]["message"].as_str().unwrap().contains("ended"));
    assert!(data.len() >= 3, "content before the cut: {}", r.body);
    assert_eq!(
        front.metric("gateway_upstream_errors_total", &[("kind", "stream_cut")]),
        1.0
    );
}

#[test]
fn provider_key_never_leaves_the_gateway() {
    let (up, front) = pair("");
    let mut seen = String::new();
    let bodies = [
        ("ok", false),
        ("ok", true),
        ("fail500", false),
        ("rl429", false),
        ("cut", true),
        ("failover", false),
        ("no-such-model", false),
    ];
    for (model, stream) in bodies {
        let r = post(
            &front.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body(model, "hi", stream),
        );
        seen.push_str(&r.everything());
    }
    seen.push_str(
        &post(
            &front.url("/v1/embeddings"),
            Some(KEY),
            r#"{"model":"ok","input":"x"}"#,
        )
        .everything(),
    );
    seen.push_str(&get(&front.url("/v1/models"), Some(KEY)).everything());
    seen.push_str(&get(&front.url("/v1/models/ok"), Some("wrong")).everything());
    // The upstream only accepts the canary: the key was injected (and the client's
    // Authorization was not forwarded, or the upstream would have answered 401).
    let up_log = up.wait_log(|l| l.matches("consumer=\"front\"").count() >= 5);
    assert!(up_log.contains("consumer=\"front\""), "{up_log}");
    assert!(
        !up.logs().contains(KEY),
        "the client's key reached the upstream"
    );
    seen.push_str(&front.metrics());
    seen.push_str(&front.logs());
    assert!(!seen.contains(CANARY), "canary provider key leaked");
    assert!(!front.metrics().contains(KEY), "consumer key in metrics");
}

#[test]
fn every_gateway_answer_is_openai_shaped_with_request_id() {
    let (_up, front) = pair("");
    let cases = [
        (
            post(
                &front.url("/v1/chat/completions"),
                None,
                &chat_body("ok", "x", false),
            ),
            401,
            Some("invalid_api_key"),
        ),
        (
            post(
                &front.url("/v1/chat/completions"),
                Some("sk-nope"),
                &chat_body("ok", "x", false),
            ),
            401,
            Some("invalid_api_key"),
        ),
        (
            post(&front.url("/v1/assistants"), Some(KEY), "{}"),
            404,
            None,
        ),
        (
            post(&front.url("/v1/responses"), Some(KEY), "{}"),
            400,
            None,
        ),
        (
            get(&front.url("/v1/chat/completions"), Some(KEY)),
            404,
            None,
        ),
        (
            post(
                &front.url("/v1/chat/completions"),
                Some(KEY),
                &chat_body("nope", "x", false),
            ),
            404,
            Some("model_not_found"),
        ),
        (
            get(&front.url("/v1/models/nope"), Some(KEY)),
            404,
            Some("model_not_found"),
        ),
        (
            post(&front.url("/v1/chat/completions"), Some(KEY), "{not json"),
            400,
            None,
        ),
        (
            post(
                &front.url("/v1/chat/completions"),
                Some(KEY),
                r#"{"model":"ok","messages":[]}"#,
            ),
            400,
            Some("empty_array"),
        ),
    ];
    for (r, status, code) in cases {
        assert_eq!(r.status, status, "{}", r.body);
        let e = r.json()["error"].clone();
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "missing {k}: {}", r.body);
        }
        assert_eq!(e["code"].as_str(), code, "{}", r.body);
        assert!(r
            .header("x-request-id")
            .is_some_and(|v| v.starts_with("req_")));
    }
    let ok = get(&front.url("/v1/models/org%2Fmodel-x"), Some(KEY));
    assert_eq!(ok.json()["id"], "org/model-x");
    assert_eq!(
        get(&front.url("/v1/models/org/model-x"), Some(KEY)).json()["id"],
        "org/model-x"
    );
    // A client-supplied request id is kept.
    let r = agent()
        .get(&front.url("/v1/models"))
        .set("authorization", &format!("Bearer {KEY}"))
        .set("x-request-id", "trace-123")
        .call()
        .unwrap();
    assert_eq!(r.header("x-request-id"), Some("trace-123"));
}

#[test]
fn completions_and_embeddings_through_http_upstream() {
    let (_up, front) = pair("");
    let r = post(
        &front.url("/v1/completions"),
        Some(KEY),
        r#"{"model":"ok","prompt":"Say this","max_tokens":5}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let r = post(
        &front.url("/v1/embeddings"),
        Some(KEY),
        r#"{"model":"ok","input":["a","b"],"encoding_format":"float"}"#,
    );
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let prompt = &[("model", "ok"), ("kind", "prompt")];
    assert_eq!(front.wait_metric("gateway_tokens_total", prompt, 4.0), 4.0);
}

#[test]
fn client_disconnect_mid_stream_is_accounted_and_frees_the_request() {
    use std::io::Write;
    let (_up, front) = pair("");
    let body = chat_body("slow", "go", true);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", front.port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    drop(s); // the client goes away after the first bytes of a 1 s stream
    let deadline = Instant::now() + Duration::from_secs(5);
    while front.metric("gateway_requests_in_flight", &[]) != 0.0
        || !front.logs().contains("status=499")
    {
        assert!(
            Instant::now() < deadline,
            "request not released:\n{}",
            front.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(front.logs().contains("client_disconnected"));
    let gone = &[("model", "slow"), ("status_class", "4xx")];
    assert_eq!(front.wait_metric("gateway_requests_total", gone, 1.0), 1.0);
}

#[test]
fn provider_reporting_no_headroom_is_skipped_until_its_reset() {
    // The upstream (a gateway) allows this key one request per minute and says so in its
    // x-ratelimit headers: after the first answer the front routes elsewhere.
    let up = Gw::start(&format!(
        "server: {{threads: 1}}\nconsumers: [{{name: front, keys: [\"{CANARY}\"], \
         limits: [{{name: rpm, count: {{count: 1, time_window: 60s}}}}]}}]\n\
         providers: [{{name: ok, kind: mock}}]\nmodels: [{{name: ok, deployments: [{{provider: ok}}]}}]\n"
    ));
    let front = Gw::start(&format!(
        "consumers: [{{name: t, keys: [\"{KEY}\"]}}]\n\
         providers:\n  - {{name: up, kind: openai-compatible, base_url: \"{}\", api_key: \"{CANARY}\"}}\n  \
         - {{name: local, kind: mock}}\n\
         models: [{{name: pool, deployments: [{{provider: up, model: ok}}, {{provider: local}}]}}]\n\
         routing: {{strategy: ordered}}\n",
        up.base_url()
    ));
    for _ in 0..3 {
        let r = post(
            &front.url("/v1/chat/completions"),
            Some(KEY),
            &chat_body("pool", "x", false),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Access lines are written just after each answer: wait for all three.
    let log = front.wait_log(|l| l.matches("access: request").count() >= 3);
    assert_eq!(log.matches("provider=\"up\"").count(), 1, "{log}");
    assert_eq!(log.matches("provider=\"local\"").count(), 2, "{log}");
    assert_eq!(
        front.metric("gateway_upstream_errors_total", &[("provider", "up")]),
        0.0
    );
}

#[test]
fn aliases_and_pattern_models_route_to_their_upstream_names() {
    use common::fixture_server::{recording, Reply};
    let (port, seen) = recording(|r| {
        let model = r.json()["model"].as_str().unwrap_or("").to_string();
        Reply::json("200 OK", upstream::completion(&model, "ok"))
    });
    let yaml = format!(
        "auth: {{enabled: false}}\n\
         providers: [{{name: up, kind: openai-compatible, base_url: \"http://127.0.0.1:{port}/v1\", api_key: k}}]\n\
         models:\n\
         - {{name: smart, aliases: [gpt-smart], deployments: [{{provider: up, model: real-1}}]}}\n\
         - {{name: \"up/*\", deployments: [{{provider: up}}], limits: [{{name: two, count: {{count: 2, time_window: 60s}}}}]}}\n"
    );
    let gw = Gw::start(&yaml);
    let ask = |model: &str| {
        post(
            &gw.url("/v1/chat/completions"),
            None,
            &chat_body(model, "hi", false),
        )
    };
    let upstream_model = |n: usize| {
        seen.lock().unwrap()[n].json()["model"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(ask("gpt-smart").status, 200);
    assert_eq!(upstream_model(0), "real-1");
    assert_eq!(ask("up/gpt-4o").status, 200);
    assert_eq!(upstream_model(1), "gpt-4o");
    // The pattern's limits hold for every name it matches.
    assert_eq!(ask("up/o3").status, 200);
    assert_eq!(upstream_model(2), "o3");
    assert_eq!(ask("up/gpt-4o-mini").status, 429);
    assert_eq!(
        ask("up/").status,
        404,
        "the `*` stands for at least one character"
    );
    let listed: Vec<String> = get(&gw.url("/v1/models"), None).json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["smart", "gpt-smart", "up/*"]);
    let one = get(&gw.url("/v1/models/up/gpt-4o"), None);
    assert_eq!(
        (one.status, one.json()["id"].as_str()),
        (200, Some("up/gpt-4o"))
    );
    // Two stars, or an alias that is another model's name, are config problems.
    let out = check_config(&yaml.replace("up/*", "up/*/*").replace("gpt-smart", "smart"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("models[1].name: a pattern has one `*`"),
        "{err}"
    );
    assert!(err.contains("models[0].aliases[0]"), "{err}");
}
