//! The Admin API's HTTP side: a request read whole (its body bounded), its answers, and
//! the one error shape, `{"error": {"message", "type", "param"}}`.

use super::idempotency;
use super::MAX_BODY;
use crate::config::schema::AdminRole;
use bytes::Bytes;
use http::Response;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// An answer of the Admin API that is not a success.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 about the field at `param` (empty: the body).
    pub fn invalid(message: impl Into<String>, param: &str) -> ApiError {
        ApiError {
            param: (!param.is_empty()).then(|| param.to_string()),
            ..ApiError::new(400, "invalid_request_error", message)
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("admin api: {e}");
        ApiError::new(
            500,
            "api_error",
            "the admin store failed; see the gateway's log",
        )
    }
}

/// Who is calling.
pub struct Caller {
    pub id: String,
    pub role: AdminRole,
}

/// One request, read whole.
pub struct Request {
    pub method: http::Method,
    /// The path's segments after `/admin/`.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
    /// `If-Match`: the version (ETag) a write expects the object to be at.
    pub if_match: Option<String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn dry_run(&self) -> bool {
        matches!(self.param("dry_run"), Some("true" | "1"))
    }
}

pub fn reply(status: u16, body: &Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

pub fn error_reply(e: &ApiError) -> Response<Vec<u8>> {
    reply(
        e.status,
        &json!({"error": {"message": e.message, "type": e.kind, "param": e.param}}),
    )
}

/// The first answer again, for a retried write.
pub fn replayed(k: &idempotency::Kept) -> Response<Vec<u8>> {
    let mut r = match (&k.body, &k.created) {
        (Some(body), _) => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            reply(k.status, &v)
        }
        (None, created) => error_reply(&ApiError::new(
            409,
            "conflict_error",
            format!(
                "this write was done already and created {:?}: its secret was shown once, in \
                 the first answer",
                created.as_deref().unwrap_or_default()
            ),
        )),
    };
    r.headers_mut().insert(
        "idempotent-replayed",
        http::HeaderValue::from_static("true"),
    );
    r
}

/// `a=b&c=d` as pairs (percent-decoded).
pub fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

fn too_large() -> ApiError {
    ApiError::new(413, "invalid_request_error", "the body is over 1 MiB")
}

/// The request body, at most [`MAX_BODY`] bytes (else 413). A body somewhat over the
/// limit is read to its end (up to four times the limit more, discarded) before the 413,
/// so a client still sending it reads the answer instead of a broken pipe.
pub async fn read_body(session: &mut ServerSession) -> Result<Bytes, ApiError> {
    let mut body = bytes::BytesMut::new();
    let mut over = 0usize;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if over > 0 || body.len() + chunk.len() > MAX_BODY => {
                over = over.saturating_add(chunk.len());
                body = bytes::BytesMut::new();
                if over > 4 * MAX_BODY {
                    return Err(too_large());
                }
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) if over > 0 => return Err(too_large()),
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(ApiError::invalid(format!("reading the body: {e}"), ""));
            }
        }
    }
}
