//! APISIX conformance of AI routes on their own URIs (`lua-compat/fixtures/ai_routes`):
//! the sequences of APISIX's `ai-proxy.t`, `ai-rate-limiting.t` and
//! `ai-proxy-multi.balancer.t`, replayed on the imported config under the `local` and the
//! `redis` policy against a fake OpenAI upstream that checks what it receives.

mod common;
use common::apisix::import;
use common::fixture_server::{recording, Recorded, Reply};
use common::redis::Redis;
use common::*;

/// A chat answer for `model` reporting 10 tokens in all (prompt 8, completion 5: a total
/// that is not the sum), as APISIX's own test mock does; `total_tokens` limits charge the
/// reported total.
fn chat_answer(model: &str) -> String {
    format!(
        r#"{{"id":"c","object":"chat.completion","created":1,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":8,"completion_tokens":5,"total_tokens":10}}}}"#
    )
}

fn upstream() -> (u16, Recorded) {
    recording(|r| {
        let body = r.json();
        let model = body["model"].as_str().unwrap_or("").to_string();
        if r.target.starts_with("/v1/responses") {
            return Reply::json(
                "200 OK",
                r#"{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"ok","annotations":[]}]}],"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}"#,
            );
        }
        if body["stream"] == true {
            return Reply::events(format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"ok\"}},\"finish_reason\":null}}]}}\n\ndata: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":8,\"completion_tokens\":5,\"total_tokens\":10}}}}\n\ndata: [DONE]\n\n"
            ));
        }
        if r.target.starts_with("/v1/embeddings") {
            return Reply::json(
                "200 OK",
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"e","usage":{"prompt_tokens":2,"total_tokens":2}}"#,
            );
        }
        match model.as_str() {
            // ai-rate-limiting-expression.t T8: usage 50 / 200 / 100 / 30.
            "expr" => Reply::json(
                "200 OK",
                chat_answer("expr").replace(
                    r#""usage":{"prompt_tokens":8,"completion_tokens":5,"total_tokens":10}"#,
                    r#""usage":{"prompt_tokens":50,"completion_tokens":30,"total_tokens":80,"cache_read_input_tokens":200,"cache_creation_input_tokens":100}"#,
                ),
            ),
            "fail-429" => Reply::json("429 Too Many Requests", r#"{"error":{"message":"busy"}}"#),
            "fail-500" => Reply::json("500 Internal Server Error", "upstream boom"),
            m => Reply::json("200 OK", chat_answer(m)),
        }
    })
}

const CHAT: &str = r#"{"messages":[{"role":"system","content":"You are a mathematician"},{"role":"user","content":"What is 1+1?"}]}"#;

/// One chat request, on a keep-alive connection shared by the sequence (as SDKs and
/// APISIX's test client send them): the gateway charges a request's usage before it reads
/// the connection's next request, so a sequence sees each answer's usage counted. (On a
/// new connection the next request may arrive while the previous answer is still being
/// charged.)
fn chat(gw: &Gw, path: &str) -> Resp {
    static CLIENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    post_on(CLIENT.get_or_init(agent), &gw.url(path), None, CHAT)
}

fn ai_routes(redis: Option<&Redis>) {
    let (port, seen) = upstream();
    let yaml = import("ai_routes.apisix.yaml", redis);
    let gw = Gw::start_with_env(&yaml, &[("LLM", &format!("http://127.0.0.1:{port}"))]);
    let sent = |n: usize| seen.lock().unwrap()[n].clone();

    // ai-proxy.t T11: no model in the body; options overwrite the body's fields and the
    // provider's chat path is called whatever the route's URI.
    // ai-rate-limiting.t T2-T7: limit 30, 10 tokens a response: 200, 200, 200, 503 with
    // Remaining 30, 20, 10, 0 under the instance's name.
    let mut statuses = vec![];
    let mut remaining = vec![];
    for i in 0..4 {
        let r = chat(&gw, "/ai");
        statuses.push(r.status);
        remaining.push(
            r.header("x-ai-ratelimit-remaining-ai-proxy-openai")
                .unwrap_or("-")
                .to_string(),
        );
        if i == 0 {
            assert_eq!(r.header("x-ai-ratelimit-limit-ai-proxy-openai"), Some("30"));
            assert_eq!(r.header("x-ai-ratelimit-reset-ai-proxy-openai"), Some("60"));
            assert_eq!(r.json()["model"], "gpt-4");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 503]);
    assert_eq!(remaining, ["30", "20", "10", "0"]);
    let first = sent(0);
    assert_eq!(first.target, "/v1/chat/completions");
    assert_eq!(first.header("authorization"), Some("Bearer sk-upstream"));
    let body = first.json();
    assert_eq!(
        (&body["model"], &body["foo"], &body["temperature"]),
        (&"gpt-4".into(), &"bar".into(), &1.0.into())
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "the rejected request stays here"
    );

    // Protocol detection on a route without options: the client's model goes upstream;
    // an `input` body is embeddings; `{}` matches no protocol.
    let n = seen.lock().unwrap().len();
    let r = post(
        &gw.url("/anything"),
        None,
        r#"{"model":"my-model","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(
        (r.status, sent(n).json()["model"].clone()),
        (200, "my-model".into())
    );
    let r = post(
        &gw.url("/anything"),
        None,
        r#"{"model":"e","input":"hello"}"#,
    );
    assert_eq!(
        (r.status, sent(n + 1).target.as_str()),
        (200, "/v1/embeddings")
    );
    // A Responses body is the Responses API only on a path ending in /v1/responses.
    let r = post(
        &gw.url("/anything/v1/responses"),
        None,
        r#"{"model":"m","input":"hi","store":false}"#,
    );
    assert_eq!(
        (r.status, sent(n + 2).target.as_str()),
        (200, "/v1/responses")
    );
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "ok");
    // A stream: the upstream is asked for usage (stream_options.include_usage), the
    // client gets every event.
    let r = post(
        &gw.url("/anything"),
        None,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("\"content\":\"ok\"") && r.body.contains("[DONE]"),
        "{}",
        r.body
    );
    assert_eq!(sent(n + 3).json()["stream_options"]["include_usage"], true);
    let r = post(&gw.url("/anything"), None, "{}");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no matching AI protocol"), "{}", r.body);
    let r = post(&gw.url("/anything"), None, CHAT);
    assert_eq!(r.status, 400, "no model anywhere: {}", r.body);
    let r = send(
        "POST",
        &gw.url("/anything"),
        &[("content-type", "text/plain")],
        None,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("unsupported content-type: text/plain"),
        "{}",
        r.body
    );
    // The OpenAI API serves no model by name here (APISIX has no route for it).
    let by_name = r#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), None, by_name).status,
        404
    );

    // ai-rate-limiting.t T14: priorities 1 and 0, 10 tokens each, the rate-limit
    // pre-check: gpt-4, then gpt-3, then 503 `all servers tried`.
    let models: Vec<String> = (0..2)
        .map(|_| {
            let r = chat(&gw, "/multi");
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["model"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(models, ["gpt-4", "gpt-3"]);
    let r = chat(&gw, "/multi");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("all servers tried"), "{}", r.body);

    // ai-proxy-multi.balancer.t T16: instances answering 429 and 500 with
    // ["http_429","http_5xx"]: every request tries both and gets 502 with the last body
    // (a body that is not JSON comes in the OpenAI error shape, its text the message).
    let n = seen.lock().unwrap().len();
    for _ in 0..3 {
        let r = chat(&gw, "/retry");
        assert_eq!(
            (r.status, &r.json()["error"]["message"]),
            (502, &"upstream boom".into())
        );
    }
    let tried: Vec<String> = seen.lock().unwrap()[n..]
        .iter()
        .map(|r| r.json()["model"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(tried, ["fail-429", "fail-500"].repeat(3));

    // max_retries 0: the first failure as it is (the 429 and its body).
    let r = chat(&gw, "/retry-capped");
    assert_eq!(
        (r.status, &r.json()["error"]["message"]),
        (429, &"busy".into())
    );

    // Weights 3 and 1 inside one priority: 6 and 2 of 8 requests.
    let n = seen.lock().unwrap().len();
    for _ in 0..8 {
        assert_eq!(chat(&gw, "/weighted").status, 200);
    }
    let heavy = seen.lock().unwrap()[n..]
        .iter()
        .filter(|r| r.json()["model"] == "heavy")
        .count();
    assert_eq!(heavy, 6);

    // ai-rate-limiting-expression.t T8-T9: 50 + 200 × 0.1 + 100 × 1.25 + 30 = 225.
    let remaining: Vec<String> = (0..2)
        .map(|_| {
            let r = chat(&gw, "/expr");
            r.header("x-ai-ratelimit-remaining-ai-proxy-openai")
                .unwrap_or("-")
                .to_string()
        })
        .collect();
    assert_eq!(remaining, ["1000", "775"]);

    // limit_strategy prompt_tokens / completion_tokens charge that figure as reported
    // (8 and 5 a response), and total_tokens the reported total (10, above), not a sum.
    let sequence = |path: &str, n: usize| -> Vec<(u16, String)> {
        (0..n)
            .map(|_| {
                let r = chat(&gw, path);
                let left = r.header("x-ai-ratelimit-remaining-ai-proxy-openai");
                (r.status, left.unwrap_or("-").to_string())
            })
            .collect()
    };
    let want = |s: &[(u16, &str)]| -> Vec<(u16, String)> {
        s.iter().map(|(c, r)| (*c, r.to_string())).collect()
    };
    assert_eq!(
        sequence("/completion", 4),
        want(&[(200, "12"), (200, "7"), (200, "2"), (503, "0")])
    );
    assert_eq!(
        sequence("/prompt", 3),
        want(&[(200, "16"), (200, "8"), (503, "0")])
    );

    // ai-rate-limiting rules (T28-T29): one budget per rule whichever instance serves,
    // headers X-AI-<prefix or index>-RateLimit-*, rejected_msg in APISIX's body.
    let r = chat(&gw, "/rules");
    assert_eq!(r.header("x-ai-1-ratelimit-limit"), Some("20"));
    assert_eq!(r.header("x-ai-team-ratelimit-limit"), Some("30"));
    assert_eq!(r.header("x-ai-team-ratelimit-remaining"), Some("30"));
    assert_eq!(
        chat(&gw, "/rules").header("x-ai-1-ratelimit-remaining"),
        Some("10")
    );
    let r = chat(&gw, "/rules");
    assert_eq!(r.status, 429);
    assert_eq!(r.body, "{\"error_msg\":\"token budget exceeded\"}\n");
}

#[test]
fn ai_routes_local_policy() {
    ai_routes(None);
}

#[test]
fn ai_routes_redis_policy() {
    let redis = Redis::start();
    ai_routes(Some(&redis));
}
