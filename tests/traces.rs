//! OpenTelemetry traces through the real binary to a real OTLP/HTTP receiver (decoded by
//! the `opentelemetry-proto` package): the span tree of a request with its GenAI
//! attributes, W3C `traceparent` accepted from the client and sent upstream, sampling,
//! batch requests, no content or keys in spans, and a dead collector that costs nothing
//! but a counter.

mod common;
use common::deepseek::DeepSeekUpstream;
use common::otlp::OtlpReceiver;
use common::*;
use serde_json::Value;

const PROVIDER_KEY: &str = "sk-ds-provider-secret-4242";
const CONSUMER_KEY: &str = "sk-tracer-consumer";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const MARKER: &str = "PROMPT-MARKER-7f3a";

fn yaml(endpoint: &str, ratio: f64, upstream: &DeepSeekUpstream) -> String {
    format!(
        r#"
traces:
  endpoint: "{endpoint}"
  sampling_ratio: {ratio}
  service_name: gw-under-test
  headers: {{authorization: "Bearer collector-token"}}
consumers: [{{name: team-a, keys: ["{CONSUMER_KEY}"], limits: [{{name: rpm, count: {{count: 1000, time_window: 60s}}}}]}}]
providers:
  - {{name: ds, kind: openai-compatible, base_url: "{base}", api_key: "{PROVIDER_KEY}"}}
models:
  - name: chat
    price: {{input: 0.27, output: 1.1}}
    deployments: [{{provider: ds, model: deepseek-chat}}]
"#,
        base = upstream.base_url()
    )
}

fn chat(gw: &Gw, stream: bool, traceparent: Option<&str>) -> Resp {
    let body = serde_json::json!({"model": "chat", "stream": stream, "max_tokens": 50,
        "temperature": 0.25, "stop": ["\n\n"],
        "messages": [{"role": "user", "content": format!("tell me about {MARKER}")}]})
    .to_string();
    let mut headers = vec![("authorization", format!("Bearer {CONSUMER_KEY}"))];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp.to_string()));
    }
    let agent = agent();
    let mut req = agent.post(&gw.url("/v1/chat/completions"));
    for (k, v) in &headers {
        req = req.set(k, v);
    }
    to_resp(
        req.set("content-type", "application/json")
            .send_string(&body),
    )
}

/// The attributes the GenAI and HTTP semantic conventions require or recommend on each
/// span kind, as far as the request carries them (conventions 1.40, GenAI "development").
fn conventions(span: &Value, kind: &str, stream: bool) {
    let mut want = vec![
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.request.max_tokens",
        "gen_ai.request.temperature",
        "gen_ai.request.stop_sequences",
        "gen_ai.request.stream",
        "gen_ai.response.id",
        "gen_ai.response.model",
        "gen_ai.response.finish_reasons",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    ];
    if stream {
        want.push("gen_ai.response.time_to_first_chunk");
    }
    match kind {
        "server" => want.extend([
            "http.request.method",
            "http.route",
            "url.path",
            "url.scheme",
            "http.response.status_code",
        ]),
        _ => want.extend(["server.address", "server.port", "http.response.status_code"]),
    }
    let a = &span["attributes"];
    let missing: Vec<&&str> = want.iter().filter(|k| a[**k].is_null()).collect();
    assert!(missing.is_empty(), "{kind} span lacks {missing:?}: {a}");
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
}

#[test]
fn a_request_is_a_span_tree_in_the_clients_trace_with_genai_attributes() {
    let otlp = OtlpReceiver::start();
    let upstream = DeepSeekUpstream::start();
    let gw = Gw::start_with_env(
        &yaml(&otlp.endpoint(), 1.0, &upstream),
        &[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci")],
    );
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = chat(&gw, false, Some(&tp));
    assert_eq!(r.status, 200, "{}", r.body);

    let spans = otlp.trace(CLIENT_TRACE, 3);
    let root = named(&spans, "chat chat");
    assert_eq!(
        root["parent_span_id"], CLIENT_SPAN,
        "a child of the client's span"
    );
    assert_eq!(root["kind"], 2, "SERVER");
    // The resource: the config's name, the standard variables, what tells instances apart.
    let res = &root["resource"];
    assert_eq!(res["service.name"], "gw-under-test");
    assert_eq!(res["deployment.environment.name"], "ci");
    assert_eq!(res["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        res["service.instance.id"].as_str().unwrap().len(),
        36,
        "a UUID"
    );
    assert_eq!(res["telemetry.sdk.language"], "rust");
    assert!(res["telemetry.sdk.version"].is_string());
    conventions(root, "server", false);
    assert_eq!(root["scope"], "ai-rate-limiter");
    assert_eq!(root["authorization"], "Bearer collector-token");
    let a = &root["attributes"];
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.provider.name"], "ds");
    assert_eq!(a["gen_ai.request.model"], "chat");
    // The deployment asked for deepseek-chat; the provider says which model answered.
    assert_eq!(a["gen_ai.response.model"], "deepseek-v4-flash");
    assert_eq!(a["gen_ai.usage.input_tokens"], 11);
    assert_eq!(a["gen_ai.usage.output_tokens"], 5);
    assert_eq!(a["gen_ai.usage.cache_read.input_tokens"], 0);
    assert_eq!(a["gateway.consumer"], "team-a");
    assert_eq!(a["gateway.limit.outcome"], "admitted");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["gateway.request_id"], r.header("x-request-id").unwrap());
    let cost: f64 = r.header("x-gateway-cost-usd").unwrap().parse().unwrap();
    assert!((a["gateway.cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);
    // Names from the config only (no digest of the provider key).
    assert_eq!(a["gateway.deployment"], "ds/deepseek-chat");
    assert_eq!(a["http.route"], "/v1/chat/completions");
    assert_eq!(a["url.path"], "/v1/chat/completions");
    assert_eq!(a["url.scheme"], "http");
    assert_eq!(a["gen_ai.request.max_tokens"], 50);
    assert_eq!(a["gen_ai.request.temperature"], 0.25);
    assert_eq!(
        a["gen_ai.request.stop_sequences"],
        serde_json::json!(["\n\n"])
    );
    assert_eq!(a["gen_ai.request.stream"], false);
    assert_eq!(
        a["gen_ai.response.finish_reasons"],
        serde_json::json!(["stop"])
    );
    assert!(
        a["gen_ai.response.id"].as_str().unwrap().starts_with("ds-"),
        "the provider's id: {a}"
    );

    let root_id = root["span_id"].as_str().unwrap();
    let admission = named(&spans, "gateway.admission");
    assert_eq!(admission["parent_span_id"], root_id);
    assert_eq!(admission["attributes"]["gateway.queue.wait_ms"], 0);
    let attempt = named(&spans, "chat deepseek-chat");
    assert_eq!(
        attempt["attributes"]["gen_ai.request.model"],
        "deepseek-chat"
    );
    assert_eq!(attempt["parent_span_id"], root_id);
    assert_eq!(attempt["kind"], 3, "CLIENT");
    assert_eq!(attempt["attributes"]["http.response.status_code"], 200);
    // The host alone, and its port; the attempt that answered carries the tokens.
    assert_eq!(attempt["attributes"]["server.address"], "127.0.0.1");
    assert!(attempt["attributes"]["server.port"].as_u64().unwrap() > 0);
    assert_eq!(attempt["attributes"]["gen_ai.usage.output_tokens"], 5);
    conventions(attempt, "client", false);
    // The upstream was told its parent is the attempt's span, in the client's trace.
    let sent = fixture_server::last(&upstream.requests);
    assert_eq!(
        sent.header("traceparent"),
        Some(
            format!(
                "00-{CLIENT_TRACE}-{}-01",
                attempt["span_id"].as_str().unwrap()
            )
            .as_str()
        )
    );
    for s in &spans {
        assert!(s["start"].as_u64() <= s["end"].as_u64());
    }

    // A stream gets its own span; without a traceparent the trace is new.
    let s = chat(&gw, true, None);
    assert_eq!(s.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let stream = loop {
        if let Some(s) = otlp
            .spans()
            .into_iter()
            .find(|s| s["name"] == "gateway.stream")
        {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no stream span");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_ne!(stream["trace_id"], CLIENT_TRACE);
    let streamed = otlp.trace(stream["trace_id"].as_str().unwrap(), 4);
    let root = named(&streamed, "chat chat");
    assert_eq!(root["parent_span_id"], "", "a new trace has no parent");
    assert_eq!(root["attributes"]["gen_ai.request.stream"], true);
    conventions(root, "server", true);
    conventions(named(&streamed, "chat deepseek-chat"), "client", true);
    assert_eq!(root["attributes"]["gen_ai.usage.output_tokens"], 5);
    assert_eq!(
        root["attributes"]["gen_ai.response.model"],
        "deepseek-v4-flash"
    );

    // No prompt, no completion, no key went to the collector.
    let raw = otlp.raw();
    let text = String::from_utf8_lossy(&raw);
    for secret in [MARKER, PROVIDER_KEY, CONSUMER_KEY, "Hello from DeepSeek"] {
        assert!(!text.contains(secret), "{secret} in the spans");
    }
    assert_eq!(
        gw.wait_metric("gateway_trace_spans_total", &[("outcome", "exported")], 7.0),
        7.0
    );
}

#[test]
fn sampling_follows_the_ratio_and_the_clients_decision() {
    let otlp = OtlpReceiver::start();
    let upstream = DeepSeekUpstream::start();
    let gw = Gw::start(&yaml(&otlp.endpoint(), 0.0, &upstream));
    for _ in 0..5 {
        assert_eq!(chat(&gw, false, None).status, 200);
    }
    // A client that samples its trace gets it traced whatever the ratio; one that does not
    // is not traced, and the upstream hears the same decision.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    assert_eq!(chat(&gw, false, Some(unsampled)).status, 200);
    let tp = upstream
        .requests
        .lock()
        .unwrap()
        .last()
        .and_then(|r| r.header("traceparent").map(str::to_string))
        .expect("traceparent sent upstream");
    assert!(tp.starts_with("00-11111111111111111111111111111111-") && tp.ends_with("-00"));
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(chat(&gw, false, Some(&sampled)).status, 200);
    otlp.trace(CLIENT_TRACE, 3);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let traces: std::collections::BTreeSet<String> = otlp
        .spans()
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(traces.into_iter().collect::<Vec<_>>(), [CLIENT_TRACE]);
}

#[test]
fn batch_requests_are_traced_too() {
    use common::batches::{chat_requests, create_inline, wait_status};
    let otlp = OtlpReceiver::start();
    let upstream = DeepSeekUpstream::start();
    let gw = Gw::start(&yaml(&otlp.endpoint(), 1.0, &upstream));
    let id = create_inline(&gw, CONSUMER_KEY, &chat_requests(2, "t", "chat"));
    wait_status(&gw, CONSUMER_KEY, &id, &["completed"], 30);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let batch_roots: Vec<Value> = otlp
            .spans()
            .into_iter()
            .filter(|s| s["attributes"]["gateway.batch"] == true && s["name"] == "chat chat")
            .collect();
        if batch_roots.len() == 2 {
            for r in &batch_roots {
                assert_eq!(r["attributes"]["gateway.consumer"], "team-a");
                assert_eq!(r["attributes"]["http.response.status_code"], 200);
                assert_eq!(r["attributes"]["gen_ai.usage.output_tokens"], 5);
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{batch_roots:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_dead_collector_costs_nothing_but_a_counter() {
    let upstream = DeepSeekUpstream::start();
    let dead = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let gw = Gw::start(&yaml(&dead, 1.0, &upstream));
    for _ in 0..10 {
        assert_eq!(chat(&gw, false, None).status, 200);
    }
    // Three spans a request, every one counted as failed (none exported).
    assert_eq!(
        gw.wait_metric("gateway_trace_spans_total", &[("outcome", "failed")], 30.0),
        30.0
    );
    assert_eq!(
        gw.metric("gateway_trace_spans_total", &[("outcome", "exported")]),
        0.0
    );
    assert!(!gw.logs().contains(PROVIDER_KEY));
}

#[test]
fn the_last_spans_are_flushed_at_shutdown() {
    let otlp = OtlpReceiver::start();
    let upstream = DeepSeekUpstream::start();
    let mut gw = Gw::start(&yaml(&otlp.endpoint(), 1.0, &upstream));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(chat(&gw, false, Some(&tp)).status, 200);
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(std::time::Duration::from_secs(15)).is_some());
    // Exported before the process ended (the batch would have waited up to a second).
    let spans: Vec<Value> = otlp
        .spans()
        .into_iter()
        .filter(|s| s["trace_id"] == CLIENT_TRACE)
        .collect();
    assert_eq!(spans.len(), 3, "{spans:?}");
}

#[test]
fn a_reload_switches_traces_on_and_off() {
    let otlp = OtlpReceiver::start();
    let upstream = DeepSeekUpstream::start();
    let untraced = yaml(&otlp.endpoint(), 1.0, &upstream);
    let untraced = &untraced[untraced.find("consumers:").unwrap()..];
    let gw = Gw::start(untraced);
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(chat(&gw, false, Some(&tp)).status, 200);
    gw.write_config(&yaml(&otlp.endpoint(), 1.0, &upstream));
    gw.wait_log(|l| l.contains("exporting traces"));
    assert_eq!(chat(&gw, false, Some(&tp)).status, 200);
    assert_eq!(
        otlp.trace(CLIENT_TRACE, 3).len(),
        3,
        "only the request after the reload"
    );
    gw.write_config(untraced);
    gw.wait_log(|l| l.matches("config reloaded").count() >= 2);
    assert_eq!(chat(&gw, false, Some(&tp)).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(otlp.trace(CLIENT_TRACE, 3).len(), 3, "off again");
}

#[test]
fn a_bad_traces_section_is_refused_with_its_path() {
    let out = check_config(
        "traces: {endpoint: 'ftp://x', sampling_ratio: 2}\nproviders: [{name: l, kind: mock}]\nmodels: [{name: m, deployments: [{provider: l}]}]\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("traces.endpoint") && err.contains("traces.sampling_ratio"),
        "{err}"
    );
}
