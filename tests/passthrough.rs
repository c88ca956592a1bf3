//! Pass-through routes through the real gateway: requests for paths outside the OpenAI
//! API that a configured route serves are proxied as they are, by weight, under the
//! route's limits, with APISIX-style rejections when the rule asks for them.

mod common;
use common::fixture_server::{last, recording, Reply};
use common::*;

fn gateway(a: u16, b: u16, extra_route_fields: &str) -> Gw {
    Gw::start(&format!(
        r#"
server: {{threads: 2}}
consumers: [{{name: jack, keys: [jack-key]}}]
providers: [{{name: mock, kind: mock}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
routes:
  - name: hello
    uris: [/hello, "/api/*"]
    methods: [GET, POST]
    upstream:
      nodes: [{{url: "http://127.0.0.1:{a}", weight: 3}}, {{url: "http://127.0.0.1:{b}", weight: 1}}]
    limits:
      - {{name: per-ip, key: $remote_addr, count: {{count: 6, time_window: 60s}}, rejected_code: 503, rejected_msg: "too many", show_limit_quota_header: true}}
{extra_route_fields}
"#
    ))
}

#[test]
fn requests_are_proxied_as_they_are_by_weight_under_the_route_limits() {
    let (a, seen_a) = recording(|_| Reply::json("200 OK", r#"{"from":"a"}"#));
    let (b, seen_b) = recording(|_| Reply::json("200 OK", r#"{"from":"b"}"#));
    let gw = gateway(a, b, "");
    // No key needed on a route without auth; method, path, query and body go through.
    let r = post(&gw.url("/api/things?x=1"), None, r#"{"k":"v"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("6"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("5"));
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/hello"), None).status, 200);
    }
    let first = seen_a.lock().unwrap()[0].clone();
    assert_eq!(
        (first.method.as_str(), first.target.as_str()),
        ("POST", "/api/things?x=1")
    );
    assert_eq!(first.body, br#"{"k":"v"}"#);
    // Weights 3:1 over four requests.
    assert_eq!(
        (seen_a.lock().unwrap().len(), seen_b.lock().unwrap().len()),
        (3, 1)
    );
    // Two more are admitted, then APISIX's rejection as configured.
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/hello"), None).status, 200);
    }
    let r = get(&gw.url("/hello"), None);
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "{\"error_msg\":\"too many\"}\n");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // Paths and methods no route serves are still 404s; the OpenAI API is unaffected.
    assert_eq!(get(&gw.url("/other"), Some("jack-key")).status, 404);
    assert_eq!(
        agent()
            .delete(&gw.url("/hello"))
            .set("authorization", "Bearer jack-key")
            .call()
            .map_or_else(
                |e| match e {
                    ureq::Error::Status(s, _) => s,
                    _ => 0,
                },
                |r| r.status()
            ),
        404
    );
    let r = post(
        &gw.url("/v1/chat/completions"),
        Some("jack-key"),
        &chat_body("m", "hi", false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_route_with_auth_takes_apisix_key_auth_keys() {
    let (a, seen) = recording(|_| Reply::json("200 OK", "{}"));
    let gw = gateway(a, a, "    auth: true");
    assert_eq!(get(&gw.url("/hello"), None).status, 401);
    let r = agent()
        .get(&gw.url("/hello"))
        .set("apikey", "jack-key")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&gw.url("/hello"), Some("jack-key")).status, 200);
    assert_eq!(get(&gw.url("/hello"), Some("nope")).status, 401);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn a_prefix_route_fronting_an_openai_server_keeps_the_openai_paths() {
    // APISIX in front of vLLM with only limits (no ai-proxy): `/v1/*` must keep receiving
    // /v1/chat/completions, not the gateway's own API (which would answer 404 for an unknown
    // model).
    let (port, seen) = recording(|_| {
        Reply::json(
            "200 OK",
            r#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        )
    });
    let cfg = |models: &str| {
        format!(
            r#"
consumers: [{{name: jack, keys: [jack-key]}}]
providers: [{{name: mock, kind: mock}}]
models: {models}
routes:
  - name: vllm
    uris: ["/v1/*"]
    auth: true
    upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}
    limits: [{{name: rpm, count: {{count: 2, time_window: 60s}}, rejected_code: 429}}]
  - name: exact
    uris: [/v1/embeddings]
    upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}
"#
        )
    };
    let body = r#"{"model":"served-by-vllm","messages":[{"role":"user","content":"hi"}]}"#;
    // No models: the prefix route gets the OpenAI paths, under its limits.
    let gw = Gw::start(&cfg("[]"));
    let s: Vec<u16> = (0..3)
        .map(|_| post(&gw.url("/v1/chat/completions"), Some("jack-key"), body).status)
        .collect();
    assert_eq!(s, [200, 200, 429]);
    assert_eq!(
        seen.lock().unwrap().last().unwrap().target,
        "/v1/chat/completions"
    );
    drop(gw);
    // With models, the gateway's own endpoints are the more specific routes; an exact
    // pass-through path still wins over them.
    let gw = Gw::start(&cfg("[{name: m, deployments: [{provider: mock}]}]"));
    let r = post(&gw.url("/v1/chat/completions"), Some("jack-key"), body);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let before = seen.lock().unwrap().len();
    let r = post(
        &gw.url("/v1/embeddings"),
        None,
        r#"{"model":"x","input":"hi"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen.lock().unwrap().len(), before + 1);
}

/// APISIX `proxy-rewrite` and `cors` on a pass-through route: the backend receives the
/// rewritten path (query kept), method, host and headers; a browser preflight is answered
/// 200 before auth; every answer, the gateway's own 401 included, carries the CORS
/// headers of a listed origin, and none for an origin not listed.
#[test]
fn a_route_rewrites_what_the_backend_receives_and_answers_cors() {
    let (port, seen) = recording(|_| Reply::json("200 OK", r#"{"ok":true}"#));
    let gw = Gw::start(&format!(
        r#"
consumers: [{{name: jack, keys: [jack-key]}}]
providers: [{{name: mock, kind: mock}}]
models: [{{name: m, deployments: [{{provider: mock}}]}}]
routes:
  - name: regex
    uris: ["/iresty/*"]
    auth: true
    upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}
    rewrite:
      regex_uri: ["^/iresty/(.*)/(.*)", "/backend/$1_$2"]
      method: PUT
      host: backend.internal
      headers: {{set: {{x-api-version: v2, x-drop-me-too: x}}, add: {{x-extra: one}}, remove: [x-drop-me, x-drop-me-too]}}
    cors:
      allow_origins: "https://a.example,https://b.example"
      allow_methods: "GET,POST"
      allow_headers: "**"
      allow_credential: true
      expose_headers: x-request-id
  - name: fixed
    uris: [/old]
    upstream: {{nodes: [{{url: "http://127.0.0.1:{port}"}}]}}
    rewrite: {{uri: /new}}
"#
    ));
    let r = agent()
        .get(&gw.url("/iresty/a/b?q=1"))
        .set("authorization", "Bearer jack-key")
        .set("x-drop-me", "secret")
        .set("x-api-version", "v1")
        .set("origin", "https://b.example")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    let got = last(&seen);
    assert_eq!(
        (got.method.as_str(), got.target.as_str()),
        ("PUT", "/backend/a_b?q=1")
    );
    assert_eq!(got.header("host"), Some("backend.internal"));
    assert_eq!(got.header("x-api-version"), Some("v2"));
    assert_eq!(got.header("x-extra"), Some("one"));
    assert_eq!(got.header("x-drop-me"), None);
    assert_eq!(got.header("x-drop-me-too"), None);
    // A preflight: 200 at once, no key asked, the requested headers echoed (`**`).
    let before = seen.lock().unwrap().len();
    let r = agent()
        .request("OPTIONS", &gw.url("/iresty/a/b"))
        .set("origin", "https://a.example")
        .set("access-control-request-method", "POST")
        .set(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "a preflight never reaches the backend"
    );
    // The gateway's own answers carry them too; an origin not listed gets none.
    let r = to_resp(
        agent()
            .get(&gw.url("/iresty/a/b"))
            .set("origin", "https://a.example")
            .call(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    let r = to_resp(
        agent()
            .get(&gw.url("/iresty/a/b"))
            .set("origin", "https://evil.example")
            .call(),
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    // `uri`: the path replaced, the client's query kept.
    assert_eq!(get(&gw.url("/old?x=1"), None).status, 200);
    assert_eq!(last(&seen).target, "/new?x=1");
}
