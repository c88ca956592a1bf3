//! OpenAI and OpenAI-compatible upstreams over HTTP/1.1, plain or TLS (rustls).
//!
//! The gateway drives the upstream call itself with pingora-core's connector (pooled
//! keep-alive connections, rustls with the system roots plus an optional extra CA). It does
//! so instead of using Pingora's proxy flow because that flow can replay at most 64 KiB of
//! a pre-read body and never retries once a response header has arrived, while an LLM
//! gateway must route on the body's `model` field, forward multi-megabyte prompts and fail
//! over on an upstream 429/5xx.

use super::scrub::{Scrubber, StreamScrubber};
use super::{UpstreamBody, UpstreamErrorKind, UpstreamFailure, UpstreamResponse};
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::url::{split_authority, BaseUrl};

/// Timeouts of one call, taken from the current config snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub idle: Duration,
}

/// One header to send: the gateway's own names are static (no allocation per request);
/// configured ones are parsed once per config snapshot.
pub type Header = (http::HeaderName, http::HeaderValue);

/// A header whose value was built from a secret or an outside string: invalid bytes (a
/// key with a line break) are an error, not a panic, and the value is marked sensitive.
pub fn header(name: http::HeaderName, value: &str) -> Result<Header, String> {
    let mut v = http::HeaderValue::from_str(value)
        .map_err(|_| format!("the {name} header's value is not a valid header value"))?;
    v.set_sensitive(true);
    Ok((name, v))
}

/// One request to send upstream.
#[derive(Clone)]
pub struct HttpCall<'a> {
    pub base: &'a BaseUrl,
    /// The whole path (the base prefix included) and query, e.g. `/v1/chat/completions`;
    /// empty: the base URL's own path.
    pub path: &'a str,
    pub headers: Vec<Header>,
    pub body: Bytes,
    pub timeouts: Timeouts,
    /// Masks the provider keys in everything read back (headers and body).
    pub scrubber: Arc<Scrubber>,
}

/// The shared upstream client: one connection pool for the process.
pub struct HttpClient {
    connector: Connector,
}

impl HttpClient {
    /// `ca_bundle`: a PEM file with every CA to trust (system roots plus extras), or `None`
    /// for the system roots only.
    pub fn new(pool_size: usize, ca_bundle: Option<String>) -> Self {
        let mut opts = ConnectorOptions::new(pool_size);
        opts.ca_file = ca_bundle;
        HttpClient {
            connector: Connector::new(Some(opts)),
        }
    }

    /// Send one request and read the response header: to the addresses of its host (see
    /// [`crate::dns`]: async, cached for each record's TTL) in turn, the next one when a
    /// connection cannot be made.
    pub async fn send(
        self: &Arc<Self>,
        call: HttpCall<'_>,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        let host = &call.base.host;
        let mut addrs = crate::dns::lookup(host, call.base.port)
            .await
            .map_err(|e| {
                UpstreamFailure::new(UpstreamErrorKind::Connect, format!("resolving {host}: {e}"))
            })?;
        let last = addrs.pop().ok_or_else(|| {
            UpstreamFailure::new(UpstreamErrorKind::Connect, format!("{host} has no address"))
        })?;
        for addr in addrs {
            match self.send_at(addr, call.clone()).await {
                Err(f) if f.kind == UpstreamErrorKind::Connect => continue,
                answered => return answered,
            }
        }
        self.send_at(last, call).await
    }

    /// [`Self::send`] to an address resolved (and checked) by the caller, e.g. under an
    /// egress policy: the connection goes to exactly this address.
    pub async fn send_at(
        self: &Arc<Self>,
        addr: SocketAddr,
        call: HttpCall<'_>,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        // Boxed (as is the session below): they travel with the response body through
        // several futures, and moving them by value costs a large memcpy per request.
        let mut peer = Box::new(HttpPeer::new(addr, call.base.tls, call.base.host.clone()));
        peer.options.connection_timeout = Some(call.timeouts.connect);
        peer.options.total_connection_timeout = Some(call.timeouts.connect * 2);
        peer.options.idle_timeout = Some(call.timeouts.idle);

        let build = || -> Result<Box<RequestHeader>, UpstreamFailure> {
            let path = request_target(call.path, &call.base.prefix);
            // Written straight into the header map (no case map: standard names go out
            // title-cased): Pingora's `insert_header` would parse each name again.
            let invalid = |what: &str| UpstreamFailure::new(UpstreamErrorKind::Protocol, what);
            let uri = http::Uri::try_from(path).map_err(|_| invalid("invalid upstream path"))?;
            let mut parts = http::Request::post(uri)
                .body(())
                .map_err(|_| invalid("invalid upstream request"))?
                .into_parts()
                .0;
            let headers = &mut parts.headers;
            headers.reserve(call.headers.len() + 2);
            let host = http::HeaderValue::from_str(call.base.authority.as_str())
                .map_err(|_| invalid("invalid upstream host"))?;
            headers.insert(http::header::HOST, host);
            headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(call.body.len()),
            );
            for (k, v) in &call.headers {
                headers.insert(k.clone(), v.clone());
            }
            Ok(Box::new(RequestHeader::from(parts)))
        };

        // A pooled connection may have been closed by the server in the meantime: retry
        // such a failure on another connection before calling it a failed attempt.
        let mut tries = 0;
        loop {
            tries += 1;
            let (session, reused) = self
                .connector
                .get_http_session(&*peer)
                .await
                .map_err(|e| classify(&e, "connecting"))?;
            let mut session = Box::new(session);
            // The session does not take these from the peer options: set them per call.
            session.set_read_timeout(Some(call.timeouts.read));
            session.set_write_timeout(Some(call.timeouts.read));
            match exchange(&mut session, build()?, call.body.clone()).await {
                Ok(()) => {
                    let header = session.response_header().ok_or_else(|| {
                        UpstreamFailure::new(UpstreamErrorKind::Protocol, "no response header")
                    })?;
                    let scrub = &*call.scrubber;
                    let get = |name: &str| {
                        header
                            .headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| scrub.string(v.to_string()))
                    };
                    return Ok(UpstreamResponse {
                        status: header.status.as_u16(),
                        content_type: get("content-type"),
                        retry_after: get("retry-after"),
                        ratelimit_headers: header
                            .headers
                            .iter()
                            .filter(|(k, _)| super::signals::is_ratelimit_header(k.as_str()))
                            .filter_map(|(k, v)| {
                                Some((k.to_string(), scrub.string(v.to_str().ok()?.into())))
                            })
                            .collect(),
                        body: UpstreamBody::Http(HttpBody {
                            session: Some(session),
                            client: self.clone(),
                            peer,
                            idle: call.timeouts.idle,
                            scrub: StreamScrubber::new(call.scrubber.clone()),
                            ended: false,
                        }),
                    });
                }
                Err(e) if reused && tries < 3 => {
                    tracing::debug!(error = %e, "pooled upstream connection failed, retrying on another");
                }
                Err(e) => return Err(classify(&e, "exchanging with upstream")),
            }
        }
    }
}

async fn exchange(
    session: &mut HttpSession,
    req: Box<RequestHeader>,
    body: Bytes,
) -> pingora::Result<()> {
    session.write_request_header(req).await?;
    session.write_request_body(body, true).await?;
    session.finish_request_body().await?;
    loop {
        session.read_response_header().await?;
        match session.response_header() {
            Some(h) if h.status.is_informational() => continue,
            _ => return Ok(()),
        }
    }
}

/// The request-target of a call: its path, or the base URL's own path when it has none
/// (a webhook or token URL), `/` for a base URL without one.
fn request_target<'a>(path: &'a str, prefix: &'a str) -> &'a str {
    match (path, prefix) {
        ("", "") => "/",
        ("", prefix) => prefix,
        (path, _) => path,
    }
}

fn classify(e: &pingora::Error, doing: &str) -> UpstreamFailure {
    let kind = match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::ConnectProxyFailure => UpstreamErrorKind::Connect,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => UpstreamErrorKind::Timeout,
        _ => UpstreamErrorKind::Protocol,
    };
    UpstreamFailure::new(kind, format!("{doing}: {e}"))
}

/// A response body being read from an upstream connection. The connection returns to the
/// pool when the body has been read to its end; dropped early, it is closed.
pub struct HttpBody {
    session: Option<Box<HttpSession>>,
    client: Arc<HttpClient>,
    peer: Box<HttpPeer>,
    idle: Duration,
    /// Every chunk passes through it: no consumer of the body sees a provider key.
    scrub: StreamScrubber,
    ended: bool,
}

impl HttpBody {
    /// The next chunk (scrubbed of provider keys), `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamFailure> {
        loop {
            match self.next_raw().await? {
                Some(b) => {
                    let out = self.scrub.push(b);
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                    // All of it held back (the start of a key, perhaps): read on.
                }
                None if !self.ended => {
                    self.ended = true;
                    let rest = self.scrub.finish();
                    if !rest.is_empty() {
                        return Ok(Some(rest));
                    }
                    return Ok(None);
                }
                None => return Ok(None),
            }
        }
    }

    async fn next_raw(&mut self) -> Result<Option<Bytes>, UpstreamFailure> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        match session.read_response_body().await {
            Ok(Some(b)) => Ok(Some(b)),
            Ok(None) => {
                if let Some(s) = self.session.take() {
                    self.client
                        .connector
                        .release_http_session(*s, &*self.peer, Some(self.idle))
                        .await;
                }
                Ok(None)
            }
            Err(e) => {
                self.session = None;
                let mut f = classify(&e, "reading upstream body");
                if f.kind == UpstreamErrorKind::Protocol {
                    f.kind = UpstreamErrorKind::StreamCut;
                }
                Err(f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn a_base_url_without_a_path_gets_slash() {
        assert_eq!(request_target("", ""), "/");
        assert_eq!(request_target("", "/hook"), "/hook");
        assert_eq!(
            request_target("/v1/chat/completions", "/v1"),
            "/v1/chat/completions"
        );
        // Every target built goes into a URI as it is.
        for t in ["/", "/hook", "/v1/models/m:generateContent?alt=sse"] {
            assert_eq!(http::Uri::try_from(t).unwrap().to_string(), t);
        }
    }
}
