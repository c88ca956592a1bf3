//! An OpenAI-compatible upstream that counts how many requests it serves at once, so a
//! test can check a concurrency limit across several gateways at the place it matters.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Counters {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub total: AtomicUsize,
}

pub struct CountingUpstream {
    pub port: u16,
    pub counters: Arc<Counters>,
}

impl CountingUpstream {
    /// Every chat completion takes `hold` before it is answered.
    pub fn start(hold: Duration) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || serve(conn, &c, hold));
            }
        });
        CountingUpstream { port, counters }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.counters.total.load(Ordering::SeqCst)
    }
}

fn serve(conn: TcpStream, c: &Counters, hold: Duration) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        // Request line and headers.
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
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
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        c.total.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(hold);
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = serde_json::json!({
            "id": "chatcmpl-counting", "object": "chat.completion", "created": 1,
            "model": "counted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        })
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
