//! Body phase: read the request body from the client, bounded by `server.max_body_bytes`
//! (413 past it). The body is then parsed into the canonical request
//! ([`crate::canonical::AiRequest`]).

use crate::errors::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

/// How much of an oversized body is read and discarded before answering 413, so that a
/// client that writes its whole body before reading (as the OpenAI SDKs do) gets the 413
/// instead of a broken pipe. Bodies larger still are answered at once.
const DRAIN_LIMIT: usize = 256 * 1024 * 1024;

/// Read the whole request body, failing with 413 past `limit`.
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared {
        if len > limit {
            if len <= DRAIN_LIMIT {
                drain(session, len).await;
            }
            return Err(GatewayError::PayloadTooLarge { limit });
        }
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    drain(session, DRAIN_LIMIT).await;
                    return Err(GatewayError::PayloadTooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                return Err(GatewayError::bad_request(
                    format!("could not read the request body: {}", e.etype().as_str()),
                    None,
                ))
            }
        }
    }
}

/// Read and discard up to `max` more body bytes.
async fn drain(session: &mut Session, max: usize) {
    let mut seen = 0;
    while seen < max {
        match session.read_request_body().await {
            Ok(Some(chunk)) => seen += chunk.len(),
            _ => return,
        }
    }
}
