//! The connection front of the proxy listener: reads every HTTP/1.x request head itself
//! before Pingora sees it, so that the answers Pingora would otherwise make on its own
//! (a bare 400 without a body, or a silent close) come from the gateway, in the OpenAI
//! error shape with an `x-request-id`:
//!
//! - a head larger than `server.max_header_bytes`, or with more than [`MAX_HEADERS`]
//!   fields: **431** `request_header_too_large`;
//! - a head not complete within `server.header_read_timeout` of its first byte (on a new
//!   connection: of the connection's start), however slowly it trickles: **408**
//!   `request_timeout`, then close (Pingora alone only bounds each read);
//! - a request line or header that does not parse: **400** `invalid_http_request`.
//!
//! A good head is handed to Pingora as the session's pre-read bytes (it parses them again
//! without another read). HTTP/1.1 pipelining: when the bytes read with a request already
//! hold the next one, the first request is answered with `connection: close` and the
//! connection is closed; the client sends the rest again on a new connection (RFC 9112
//! §9.3.2). HTTP/2 connections (TLS with ALPN `h2`) go straight to Pingora, whose HTTP/2
//! layer bounds header lists itself.

use crate::errors::GatewayError;
use crate::proxy::Gateway;
use crate::state::AppState;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Most header fields in one request (Pingora's own bound).
pub const MAX_HEADERS: usize = 256;
/// How long an idle keep-alive connection waits for its next request (Pingora's default).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The proxy listener's application: this front, then Pingora's HTTP proxy.
pub struct Front {
    proxy: Arc<HttpProxy<Gateway>>,
    state: Arc<AppState>,
    max_head: usize,
    head_timeout: Duration,
}

/// Marks a request that arrived with the next one behind it (see [`Front`]).
pub struct Pipelined;

/// What reading one request head gave.
enum Head {
    /// The head is complete: `buf` holds it and whatever followed it.
    Complete { buf: BytesMut, pipelined: bool },
    /// The client closed (or stayed idle) between requests: nothing to answer.
    Closed,
    /// Answer this and close.
    Refused(GatewayError),
}

impl Front {
    pub fn new(proxy: HttpProxy<Gateway>, state: Arc<AppState>) -> Front {
        let server = &state.runtime.load().config.server;
        Front {
            max_head: server.max_header_bytes,
            head_timeout: server.header_read_timeout,
            proxy: Arc::new(proxy),
            state,
        }
    }

    /// Read one request head. `idle`: how long to wait for its first byte.
    async fn read_head(&self, stream: &mut Stream, idle: Duration, first: bool) -> Head {
        let mut buf = BytesMut::with_capacity(4096);
        let start = Instant::now();
        // A new connection has the head deadline from its start; a reused one from the
        // first byte of its next request.
        let mut deadline = first.then(|| start + self.head_timeout);
        let mut scanned: usize = 0;
        loop {
            let wait_until = deadline.unwrap_or(start + idle);
            let read = tokio::time::timeout_at(wait_until, stream.read_buf(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
                Ok(Ok(_)) => {}
                Err(_) if buf.is_empty() && !first => return Head::Closed,
                Err(_) => {
                    return Head::Refused(GatewayError::HeaderTimeout(self.head_timeout.as_secs()))
                }
            }
            if deadline.is_none() {
                deadline = Some(Instant::now() + self.head_timeout);
            }
            // Look for the blank line only in what is new (plus 3 bytes of overlap): the
            // work stays linear however the head is cut into reads.
            let from = scanned.saturating_sub(3);
            let end = head_end(&buf[from..]).map(|e| from + e);
            scanned = buf.len();
            match end {
                Some(end) if end > self.max_head => return Head::Refused(self.too_large()),
                Some(end) => return self.parse(buf, end),
                None if buf.len() > self.max_head => return Head::Refused(self.too_large()),
                None => {}
            }
        }
    }

    fn too_large(&self) -> GatewayError {
        GatewayError::HeaderTooLarge {
            limit: self.max_head,
            fields: MAX_HEADERS,
        }
    }

    /// Check a complete head of `len` bytes at the start of `buf`.
    fn parse(&self, buf: BytesMut, len: usize) -> Head {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut fields);
        let body_len = match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                if header("transfer-encoding").is_some() {
                    None // chunked: its end is Pingora's business
                } else {
                    match header("content-length").map(std::str::from_utf8) {
                        None => Some(0),
                        Some(Ok(v)) => v.trim().parse::<usize>().ok(),
                        Some(Err(_)) => None,
                    }
                }
            }
            Ok(httparse::Status::Partial) => {
                return Head::Refused(GatewayError::MalformedRequest("incomplete request head"))
            }
            Err(httparse::Error::TooManyHeaders) => return Head::Refused(self.too_large()),
            Err(e) => return Head::Refused(GatewayError::MalformedRequest(parse_error(e))),
        };
        // Bytes beyond this request's body already read: the client is pipelining.
        let pipelined = body_len.is_some_and(|b| buf.len() > len.saturating_add(b));
        Head::Complete { buf, pipelined }
    }

    /// Answer `e` on a connection Pingora never saw, then close it.
    async fn refuse(&self, mut stream: Stream, e: &GatewayError) {
        let request_id = format!("req_{}", hex::encode(rand::random::<[u8; 16]>()));
        let body = e.body();
        let status =
            http::StatusCode::from_u16(e.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        tracing::info!(
            request_id = %request_id,
            status = status.as_u16(),
            error = e.label(),
            "request refused before routing"
        );
        self.state
            .metrics
            .requests
            .with_label_values(&[
                "none",
                "none",
                "none",
                crate::metrics::status_class(e.status()),
            ])
            .inc();
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
}

/// Where the head ends (just past its blank line, `\r\n\r\n` or `\n\n`), if it does:
/// the first line feed that a blank line follows.
fn head_end(b: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', b).find_map(|i| {
        let rest = &b[i + 1..];
        if rest.first() == Some(&b'\n') {
            Some(i + 2)
        } else if i > 0 && b[i - 1] == b'\r' && rest.starts_with(b"\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version => "bad HTTP version",
        httparse::Error::Token | httparse::Error::NewLine => "bad request line",
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        _ => "bad request head",
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut settings = None;
        let mut first = true;
        loop {
            let mut watch = shutdown.clone();
            let head = tokio::select! {
                h = self.read_head(&mut stream, KEEPALIVE, first) => h,
                _ = watch.changed(), if !first => Head::Closed,
            };
            let (buf, pipelined) = match head {
                Head::Complete { buf, pipelined } => (buf, pipelined),
                Head::Closed => return None,
                Head::Refused(e) => {
                    self.refuse(stream, &e).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                None => {
                    session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
                    session.set_keepalive_reuses_remaining(
                        self.proxy
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            if pipelined {
                // Answered with `connection: close` (by `Gateway::on_connection_reuse`,
                // once Pingora has read the request); the client sends the rest again.
                session.set_connection_user_context(Some(Box::new(Pipelined)));
            }
            session.set_pipelined_prefix(buf);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let (s, persistent) = reused.consume();
            stream = s;
            settings = persistent;
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nhost: x\n\n"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nhost: x\r\n"), None);
        // The first blank line wins, whichever way it is written.
        assert_eq!(head_end(b"GET / HTTP/1.1\nhost: x\n\n\r\n\r\n"), Some(24));
        assert_eq!(head_end(b"a\r\n\r\nb\n\n"), Some(5));
        // A CR LF blank line after a bare LF is no end (as before: neither pattern).
        assert_eq!(head_end(b"a\n\r\nb"), None);
        assert_eq!(head_end(b"\r\n\r\n"), Some(4));
        assert_eq!(head_end(b"\n\n"), Some(2));
        assert_eq!(head_end(b"\n"), None);
    }
}
