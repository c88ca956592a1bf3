//! Hostile clients against the real binary, the process and its streams: signals in the
//! middle of a burst, a client that leaves while its upstream is silent, and an upstream
//! event that never ends.

mod common;
use common::*;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn sigint_and_sigterm_end_the_process_mid_burst_every_time() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut slowest = Duration::ZERO;
    for round in 0..8 {
        let mut gw = Gw::start(
            r#"
server: {threads: 2, shutdown_grace_period: 2s}
auth: {enabled: false}
providers: [{name: slow, kind: mock, mock: {latency_ms: 40}}]
models: [{name: m, deployments: [{provider: slow}]}]
"#,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let url = gw.url("/v1/chat/completions");
        let burst: Vec<_> = (0..16)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                std::thread::spawn(move || {
                    let a = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(5))
                        .build();
                    let body = chat_body("m", "hi", false);
                    while !stop.load(Ordering::Relaxed) {
                        let _ = a
                            .post(&url)
                            .set("content-type", "application/json")
                            .send_string(&body);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let sig = if round % 2 == 0 {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        let t = std::time::Instant::now();
        gw.signal(sig);
        // Grace period 2 s, and the watchdog's 5 s past it at most.
        let exited = gw.wait_exit(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        for b in burst {
            let _ = b.join();
        }
        assert!(
            exited.is_some(),
            "round {round}: still running 10 s after the signal"
        );
        slowest = slowest.max(t.elapsed());
        let logs = gw.logs();
        assert!(
            logs.len() < 1 << 20,
            "round {round}: {} bytes of logs",
            logs.len()
        );
    }
    println!("8 signals mid-burst: every process ended, the slowest in {slowest:?}");
}

/// An upstream that answers nothing (or, for a stream, its head and one event) and then
/// holds the connection: how many requests reached it, and how many of its connections
/// the gateway has closed.
fn silent_upstream() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reached, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, c) = (reached.clone(), closed.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (r, c) = (r.clone(), c.clone());
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // The whole request: its head, then content-length bytes of body.
                loop {
                    let n = conn.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                if String::from_utf8_lossy(&got).contains("\"stream\":true") {
                    let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"}}]}\n\n";
                    let _ = conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                            event.len()
                        )
                        .as_bytes(),
                    );
                }
                // Silent from now on; the gateway closing the connection ends the wait.
                conn.set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                while conn.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, reached, closed)
}

/// Send a request and give up after `wait`: its status, or 0 when nothing came.
fn send_and_leave(port: u16, body: &str, wait: Duration, first_event: bool) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let answered = !first_event || text.contains("data:") || !text.starts_with("HTTP/1.1 200");
        if answered && text.contains("\r\n\r\n") {
            break;
        }
    }
    drop(s); // the client leaves
    String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_leaves_frees_its_slot_and_ends_the_upstream_call() {
    let (port, reached, closed) = silent_upstream();
    let gw = Gw::start(&format!(
        r#"
auth: {{enabled: false}}
providers: [{{name: silent, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: k}}]
models: [{{name: m, deployments: [{{provider: silent}}], limits: [{{name: one, conn: {{conn: 1}}}}]}}]
"#
    ));
    for stream in [false, true] {
        let base = closed.load(Ordering::SeqCst);
        let body = chat_body("m", "hi", stream);
        // The client waits, then leaves (before any answer, or after the first event).
        let first = send_and_leave(gw.port, &body, Duration::from_millis(700), stream);
        assert_eq!(first, if stream { 200 } else { 0 });
        let t = std::time::Instant::now();
        while closed.load(Ordering::SeqCst) < base + 1 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let freed_in = t.elapsed();
        assert_eq!(
            closed.load(Ordering::SeqCst),
            base + 1,
            "the gateway ended the upstream call when the client left"
        );
        println!("stream={stream}: upstream call ended {freed_in:?} after the client left");
        // The conn slot (limit 1) is free again: the next request reaches the upstream
        // instead of a 429 (before: held until upstream.read_timeout, 600 s).
        std::thread::sleep(Duration::from_millis(300));
        let before = reached.load(Ordering::SeqCst);
        let next = send_and_leave(gw.port, &body, Duration::from_millis(500), stream);
        assert_ne!(next, 429, "the slot was given back");
        assert_eq!(reached.load(Ordering::SeqCst), before + 1);
        // Let that one go too before the next round.
        let t = std::time::Instant::now();
        while closed.load(Ordering::SeqCst) < base + 2 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn an_upstream_event_without_an_end_is_cut_at_the_bound() {
    // Head, one good event, then 8 MiB with no line end, then silence.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 65536];
                let _ = conn.read(&mut buf);
                std::thread::sleep(Duration::from_millis(50));
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
                let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
                let _ = conn.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
                let junk = format!("data: {}", "x".repeat(64 * 1024));
                for _ in 0..128 {
                    if conn
                        .write_all(format!("{:x}\r\n{junk}\r\n", junk.len()).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    let gw = Gw::start(&format!(
        r#"
auth: {{enabled: false}}
upstream: {{max_event_bytes: 1048576}}
providers: [{{name: bad, kind: openai-compatible, base_url: "http://127.0.0.1:{port}/v1", api_key: k}}]
models: [{{name: m, deployments: [{{provider: bad}}]}}]
"#
    ));
    let r = post(
        &gw.url("/v1/chat/completions"),
        None,
        &chat_body("m", "hi", true),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"hi\""), "the good event came through");
    assert!(
        r.body.contains("ended before it was complete (protocol)"),
        "{}",
        &r.body[r.body.len().saturating_sub(400)..]
    );
    assert!(
        r.body.len() < 64 * 1024,
        "none of the oversized event was relayed"
    );
    assert!(gw.logs().contains("max_event_bytes"), "{}", gw.logs());
}
