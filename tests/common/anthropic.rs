//! An Anthropic Messages API upstream that replays the recorded-style fixtures of
//! `tests/fixtures/anthropic/` and records every request it receives.
//!
//! The request's `model` picks the answer: `claude-text`, `claude-tool` (a tool call),
//! `claude-overloaded` (529, or an `error` event mid-stream), `claude-ratelimited` (429
//! with `retry-after` and `anthropic-ratelimit-*` headers). It insists on Anthropic's
//! auth: `x-api-key` (the key given) and `anthropic-version`, else a 401 error body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct AnthropicUpstream {
    pub port: u16,
    pub requests: Arc<Recorded>,
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

impl AnthropicUpstream {
    pub fn start(key: &str) -> AnthropicUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (r, key) = (requests.clone(), key.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, key) = (r.clone(), key.clone());
                std::thread::spawn(move || serve(conn, &r, &key));
            }
        });
        AnthropicUpstream { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The last request's headers and body.
    pub fn last(&self) -> (Vec<(String, String)>, serde_json::Value) {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// Every request received: its headers (lower-case names) and JSON body.
pub type Recorded = Mutex<Vec<(Vec<(String, String)>, serde_json::Value)>>;

fn serve(conn: TcpStream, recorded: &Recorded, key: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        recorded
            .lock()
            .unwrap()
            .push((headers.clone(), json.clone()));
        let ok = header("x-api-key").as_deref() == Some(key)
            && header("anthropic-version").is_some()
            && path == "/v1/messages";
        let stream = json["stream"] == true;
        let reply = |conn: &mut TcpStream, status: &str, extra: &str, body: &str| {
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nrequest-id: req_fixture\r\n{extra}content-length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).is_ok() && conn.write_all(body.as_bytes()).is_ok()
        };
        let sent = if !ok {
            reply(
                &mut conn,
                "401 Unauthorized",
                "",
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            )
        } else {
            match (json["model"].as_str().unwrap_or(""), stream) {
                ("claude-text", false) => reply(&mut conn, "200 OK", "", &fixture("message_text.json")),
                ("claude-tool", false) => reply(&mut conn, "200 OK", "", &fixture("message_tool_use.json")),
                ("claude-text", true) => events(&mut conn, &fixture("stream_text.sse")),
                ("claude-tool", true) => events(&mut conn, &fixture("stream_tool_use.sse")),
                ("claude-overloaded", true) => events(&mut conn, &fixture("stream_overloaded.sse")),
                ("claude-overloaded", false) => {
                    reply(&mut conn, "529 Overloaded", "", &fixture("error_overloaded.json"))
                }
                ("claude-ratelimited", _) => reply(
                    &mut conn,
                    "429 Too Many Requests",
                    "retry-after: 3\r\nanthropic-ratelimit-requests-remaining: 0\r\nanthropic-ratelimit-requests-reset: 2099-01-01T00:00:00Z\r\n",
                    &fixture("error_rate_limit.json"),
                ),
                _ => reply(&mut conn, "404 Not Found", "", &fixture("error_not_found.json")),
            }
        };
        if !sent {
            return;
        }
    }
}

/// Send an event stream as chunks, one event every 20 ms.
fn events(conn: &mut TcpStream, sse: &str) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if conn.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for event in sse.split_inclusive("\n\n") {
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        if conn.write_all(chunk.as_bytes()).is_err() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.write_all(b"0\r\n\r\n").is_ok()
}
