//! Writing responses the gateway makes itself: JSON bodies and OpenAI errors, each with an
//! `x-request-id`.

use super::RequestCtx;
use crate::errors::GatewayError;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// The request id: the client's `x-request-id` when it is short and plain, else a new one.
pub fn request_id(session: &Session) -> String {
    if let Some(v) = session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        if !v.is_empty()
            && v.len() <= 128
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return v.to_string();
        }
    }
    format!("req_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// A response header with the gateway's common headers.
pub fn header(status: u16, content_type: &str, ctx: &RequestCtx) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, Some(4))
        .unwrap_or_else(|_| ResponseHeader::build(500, None).expect("500 is valid"));
    // These names and values are constants or validated: insertion cannot fail.
    let _ = h.insert_header("content-type", content_type);
    let _ = h.insert_header("x-request-id", ctx.request_id.as_str());
    h
}

/// Send a complete body.
pub async fn full(session: &mut Session, ctx: &mut RequestCtx, mut h: ResponseHeader, body: Bytes) {
    ctx.status = h.status.as_u16();
    let _ = h.insert_header("content-length", body.len().to_string());
    let head_only = session.req_header().method == http::Method::HEAD;
    let result = async {
        session
            .write_response_header(Box::new(h), head_only || body.is_empty())
            .await?;
        if !head_only && !body.is_empty() {
            session.write_response_body(Some(body), true).await?;
        }
        Ok::<_, Box<pingora::Error>>(())
    }
    .await;
    if result.is_err() {
        ctx.status = 499;
        ctx.error.get_or_insert("client_disconnected");
    }
}

/// Send JSON with status 200.
pub async fn json(session: &mut Session, ctx: &mut RequestCtx, value: &serde_json::Value) {
    let h = header(200, "application/json", ctx);
    full(session, ctx, h, Bytes::from(value.to_string())).await;
}

/// Send an OpenAI error.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, e: &GatewayError) {
    ctx.error = Some(e.label());
    let mut h = header(e.status(), "application/json", ctx);
    if let Some(retry) = e.should_retry() {
        let _ = h.insert_header("x-should-retry", if retry { "true" } else { "false" });
    }
    // Any request body the client is still sending is not wanted: close after answering.
    session.set_keepalive(None);
    full(session, ctx, h, e.body()).await;
}
