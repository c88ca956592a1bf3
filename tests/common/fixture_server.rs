//! A minimal HTTP/1.1 server for fake upstreams: keep-alive, `content-length` request
//! bodies, whole or chunked event-stream answers. Each upstream module supplies a handler.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// An answer: status line, extra headers, and a JSON body or an event stream sent one
/// event every 20 ms.
pub struct Reply {
    pub status: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

pub enum Body {
    Json(String),
    Events(String),
    /// An event stream sent as these exact chunks, 20 ms apart (to split a value
    /// across reads).
    Chunks(Vec<String>),
    /// A binary body of this content type, sent chunked in these pieces, 20 ms apart
    /// (AWS's event stream).
    Binary(&'static str, Vec<Vec<u8>>),
}

impl Reply {
    pub fn json(status: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Json(body.into()),
        }
    }

    pub fn events(sse: impl Into<String>) -> Reply {
        Reply {
            status: "200 OK",
            headers: Vec::new(),
            body: Body::Events(sse.into()),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Every request a recording server received, in order.
pub type Recorded = Arc<std::sync::Mutex<Vec<Request>>>;

/// The last request a recording server received.
pub fn last(seen: &Recorded) -> Request {
    seen.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the upstream got a request")
}

/// Serve `answer`, recording every request first; returns the port and the record.
pub fn recording(answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> (u16, Recorded) {
    let requests: Recorded = Arc::default();
    let r = requests.clone();
    let port = start(Arc::new(move |req: &Request| {
        r.lock().unwrap().push(req.clone());
        answer(req)
    }));
    (port, requests)
}

/// Serve `handler` on a free loopback port; returns the port.
pub fn start(handler: Handler) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let h = handler.clone();
            std::thread::spawn(move || serve(conn, &h));
        }
    });
    port
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn serve(conn: TcpStream, handler: &Handler) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    while let Some(req) = read_request(&mut reader) {
        let reply = handler(&req);
        let extra: String = reply
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let ok = match reply.body {
            Body::Json(body) => {
                let head = format!(
                    "HTTP/1.1 {}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
                    reply.status,
                    body.len()
                );
                conn.write_all(head.as_bytes()).is_ok() && conn.write_all(body.as_bytes()).is_ok()
            }
            Body::Events(sse) => {
                let parts = sse.split_inclusive("\n\n").map(str::to_string).collect();
                events(&mut conn, reply.status, &extra, parts)
            }
            Body::Chunks(parts) => events(&mut conn, reply.status, &extra, parts),
            Body::Binary(content_type, parts) => {
                binary(&mut conn, reply.status, content_type, &extra, parts)
            }
        };
        if !ok {
            return;
        }
    }
}

fn binary(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra: &str,
    parts: Vec<Vec<u8>>,
) -> bool {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{extra}transfer-encoding: chunked\r\n\r\n"
    );
    if conn.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for part in &parts {
        let ok = conn
            .write_all(format!("{:x}\r\n", part.len()).as_bytes())
            .is_ok()
            && conn.write_all(part).is_ok()
            && conn.write_all(b"\r\n").is_ok();
        if !ok {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.write_all(b"0\r\n\r\n").is_ok()
}

fn events(conn: &mut TcpStream, status: &str, extra: &str, parts: Vec<String>) -> bool {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\n{extra}transfer-encoding: chunked\r\n\r\n"
    );
    if conn.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for event in &parts {
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        if conn.write_all(chunk.as_bytes()).is_err() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.write_all(b"0\r\n\r\n").is_ok()
}
