//! Raw HTTP/1.1 against the real binary: what Pingora alone would answer with a bare 400
//! or a silent close is answered by the gateway in the OpenAI error shape with an
//! `x-request-id`; a client trickling its head is cut at the total deadline; pipelined
//! requests get the first answer with `connection: close`; a streamed answer is chunked and
//! the connection serves the next request (an HTTP/1.0 client's stream ends with the close).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn gateway() -> Gw {
    Gw::start(
        r#"
server: {header_read_timeout: 2s}
consumers: [{name: c, keys: ["sk-front"]}]
providers: [{name: mock, kind: mock}]
models: [{name: m, deployments: [{provider: mock}]}]
"#,
    )
}

/// Send `bytes`, read until the server closes (or 10 s); returns the raw answer.
fn exchange(gw: &Gw, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Status, headers (lower-case names) and body of the first response in `raw`.
fn first_response(raw: &str) -> (u16, String, serde_json::Value) {
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{raw:?}"));
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(rest.len());
    let body = serde_json::from_str(&rest[..len]).unwrap_or(serde_json::Value::Null);
    (status, head.to_ascii_lowercase(), body)
}

fn assert_openai_error(raw: &str, status: u16, code: &str) {
    let (got, head, body) = first_response(raw);
    assert_eq!(got, status, "{raw}");
    assert!(head.contains("x-request-id: req_"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"]["code"], code, "{raw}");
    for k in ["message", "type", "param", "code"] {
        assert!(body["error"].get(k).is_some(), "{k} missing: {body}");
    }
}

#[test]
fn oversized_heads_get_431_in_the_openai_shape() {
    let gw = gateway();
    for size in [40 * 1024, 500 * 1024] {
        let req = format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-front\r\nx-big: {}\r\n\r\n",
            "a".repeat(size)
        );
        assert_openai_error(
            &exchange(&gw, req.as_bytes()),
            431,
            "request_header_too_large",
        );
    }
    let many: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let req = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    assert_openai_error(
        &exchange(&gw, req.as_bytes()),
        431,
        "request_header_too_large",
    );
    // Under the limit everything works as before.
    let ok = format!(
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-front\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(first_response(&exchange(&gw, ok.as_bytes())).0, 200);
    assert!(
        gw.metric(
            "gateway_requests_total",
            &[("endpoint", "none"), ("status_class", "4xx")]
        ) >= 3.0
    );
}

#[test]
fn malformed_requests_get_400_in_the_openai_shape() {
    let gw = gateway();
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET / HTTP/1.1\r\nx-a: \x01\x02\r\n\r\n",
    ] {
        assert_openai_error(&exchange(&gw, bad), 400, "invalid_http_request");
    }
}

#[test]
fn a_trickled_head_is_cut_at_the_total_deadline() {
    let gw = gateway();
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let head = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut answer = Vec::new();
    // One byte every 200 ms: each read is quick, the whole head would take 14 s.
    for b in head.iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let raw = String::from_utf8_lossy(&answer);
    assert_openai_error(&raw, 408, "request_timeout");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "cut after {elapsed:?}"
    );
}

#[test]
fn pipelined_requests_get_the_first_answer_then_a_close() {
    let gw = gateway();
    let one = "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-front\r\n\r\n";
    let raw = exchange(&gw, format!("{one}{one}{one}").as_bytes());
    let (status, head, body) = first_response(&raw);
    assert_eq!(status, 200, "{raw}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body["object"], "list");
    assert_eq!(
        raw.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then the close: {raw}"
    );

    // Sequential requests on one keep-alive connection are unaffected.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..3 {
        s.write_all(one.as_bytes()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (status, head, _) = first_response(&raw);
        assert_eq!(status, 200);
        assert!(head.contains("connection: keep-alive"), "{head}");
    }
}

#[test]
fn a_rate_limited_answer_keeps_the_connection_and_an_unread_body_closes_it() {
    let gw = Gw::start(
        r#"
consumers:
  - {name: c, keys: ["sk-front"], limits: [{name: rpm, count: {count: 1, time_window: 60s}}]}
providers: [{name: mock, kind: mock}]
models: [{name: m, deployments: [{provider: mock}]}]
"#,
    );
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let req = |key: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 200, then 429s: the body was read, so the connection stays open for the retries.
    for want in [200, 429, 429] {
        s.write_all(req("sk-front").as_bytes()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (status, head, _) = first_response(&raw);
        assert_eq!(status, want, "{raw}");
        assert!(head.contains("connection: keep-alive"), "{head}");
    }
    // A refusal before the body is read (bad key) closes the connection.
    let raw = exchange(&gw, req("sk-wrong").as_bytes());
    let (status, head, _) = first_response(&raw);
    assert_eq!(status, 401);
    assert!(head.contains("connection: close"), "{head}");
}

#[test]
fn a_streamed_answer_is_chunked_and_keeps_the_connection() {
    let gw = gateway();
    let req = |stream: bool| {
        let body = format!(
            r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-front\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req(true).as_bytes()).unwrap();
    // Read up to the last chunk: the body ends without the connection ending.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before the last chunk: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, _) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(raw.contains("data: [DONE]"), "{raw}");
    // The same connection answers the next request.
    s.write_all(req(false).as_bytes()).unwrap();
    let n = s.read(&mut buf).unwrap();
    let (status, _, body) = first_response(&String::from_utf8_lossy(&buf[..n]));
    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
}

#[test]
fn an_http_1_0_client_gets_its_stream_to_the_close() {
    let gw = gateway();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\nauthorization: Bearer sk-front\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // HTTP/1.0 has no chunks: the body is everything up to the close.
    let raw = exchange(&gw, req.as_bytes());
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.contains(" 200 "), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        rest.starts_with("data: ") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
}
