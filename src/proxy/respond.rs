//! Writing responses the gateway makes itself: JSON bodies and OpenAI errors, each with an
//! `x-request-id`.

use super::RequestCtx;
use crate::config::schema::QuotaHeaderNames;
use crate::errors::GatewayError;
use crate::limits::admission::{Budget, Quota};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
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
    // Written in place: one allocation, no formatting machinery.
    let mut hex = [0u8; 32];
    let mut id = String::with_capacity(36);
    id.push_str("req_");
    if hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut hex).is_ok() {
        id.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    }
    id
}

/// Where the gateway writes headers: a response header Pingora holds (an upstream's, with
/// a case map maybe), or the header map of a response the gateway builds, written
/// straight into (Pingora's `insert_header` parses every name again, even a built one).
pub trait PutHeader {
    fn put(&mut self, name: HeaderName, value: HeaderValue);
}

impl PutHeader for ResponseHeader {
    fn put(&mut self, name: HeaderName, value: HeaderValue) {
        // A built name and value: insertion cannot fail.
        let _ = self.insert_header(name, value);
    }
}

impl PutHeader for http::HeaderMap {
    fn put(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
}

/// A response header with the gateway's common headers.
pub fn header(status: u16, content_type: &str, ctx: &RequestCtx) -> ResponseHeader {
    // Room for every header below, so the header map never grows (a rehash each time):
    // three per quota, the framing header added later. No case map: the names are
    // written as HTTP/1 clients commonly see them (standard ones title-cased, as nginx
    // and so APISIX write them; the others lowercase), and each header is inserted once
    // instead of twice.
    let room = 6 + ctx.cors.len() + 3 * ctx.quotas.len() + ctx.provider_headers.len();
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = &mut parts.headers;
    h.reserve(room);
    // A value that is no header value (an upstream's odd content type) is left out.
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.put(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        h.put(X_REQUEST_ID, v);
    }
    for (k, v) in &ctx.cors {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.put(k, v);
        }
    }
    quota_headers(h, ctx, &ctx.quotas);
    if let Some(cost) = ctx.cost_usd() {
        if let Ok(v) = HeaderValue::try_from(crate::cost::usd(cost)) {
            h.put(HeaderName::from_static("x-gateway-cost-usd"), v);
        }
    }
    for (k, v) in &ctx.provider_headers {
        // The gateway's own limit headers win over the provider's of the same name.
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            if !h.contains_key(&k) {
                h.put(k, v);
            }
        }
    }
    ResponseHeader::from(parts)
}

/// `x-request-id`, on every answer.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The rate-limit headers of `quotas`, APISIX's under the names of the request's config.
pub fn quota_headers(h: &mut impl PutHeader, ctx: &RequestCtx, quotas: &[Quota]) {
    if quotas.is_empty() {
        return;
    }
    let default_names;
    let names = match ctx.runtime.as_deref() {
        Some(rt) => &rt.config.limits.quota_headers,
        None => {
            default_names = QuotaHeaderNames::default();
            &default_names
        }
    };
    rate_limit_headers(h, quotas, names);
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, from the tightest
/// quota of each budget seen at admission.
pub fn rate_limit_headers(h: &mut impl PutHeader, quotas: &[Quota], names: &QuotaHeaderNames) {
    // Static names and integer values: no formatting or allocation of their own (these
    // headers are on every limited answer).
    const OPENAI: [(Budget, [HeaderName; 3]); 2] = [
        (
            Budget::Requests,
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
        ),
        (
            Budget::Tokens,
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ),
    ];
    for (budget, [limit, remaining, reset]) in OPENAI {
        let Some(q) = quotas
            .iter()
            .filter(|q| q.budget == budget)
            .min_by_key(|q| q.remaining)
        else {
            continue;
        };
        h.put(limit, HeaderValue::from(q.limit));
        h.put(remaining, HeaderValue::from(q.remaining));
        if let Ok(v) = HeaderValue::try_from(go_duration(q.reset_ms)) {
            h.put(reset, v);
        }
    }
    // The tightest spend budget: what is left in USD (after this request's reservation)
    // and when its window ends.
    if let Some(q) = quotas
        .iter()
        .filter(|q| q.budget == Budget::Spend)
        .min_by_key(|q| q.remaining)
    {
        if let Ok(v) = HeaderValue::try_from(crate::cost::usd(q.remaining as f64 / 1e6)) {
            h.put(HeaderName::from_static("x-gateway-budget-remaining-usd"), v);
        }
        if let Ok(v) = HeaderValue::try_from(go_duration(q.reset_ms)) {
            h.put(HeaderName::from_static("x-gateway-budget-reset"), v);
        }
    }
    // APISIX's quota headers (limit-count with show_limit_quota_header), under the
    // configured names, one trio per rule prefix (the tightest quota of the rules that
    // share one); reset in seconds floored to 2 decimals, as APISIX 3.18 writes it.
    let mut seen: Vec<&crate::quota::ApisixHeader> = Vec::new();
    for q in quotas {
        if let Some(a) = &q.apisix_header {
            if !seen.contains(&a) {
                seen.push(a);
            }
        }
    }
    let configured = [&*names.limit, &*names.remaining, &*names.reset];
    for a in seen {
        let Some(q) = quotas
            .iter()
            .filter(|q| q.apisix_header.as_ref() == Some(a))
            .min_by_key(|q| q.remaining)
        else {
            continue;
        };
        let values = [
            Ok(HeaderValue::from(q.limit)),
            Ok(HeaderValue::from(q.remaining)),
            HeaderValue::try_from(apisix_reset(q.reset_ms)),
        ];
        for (name, value) in a.header_names(configured).into_iter().zip(values) {
            if let (Some(name), Ok(value)) = (name, value) {
                h.put(name, value);
            }
        }
    }
}

/// A duration as Go prints it, as OpenAI's reset headers do: `6ms`, `1s`, `17.28s`,
/// `1m0.052s`, `6m0s`, `2h0m0s`.
pub fn go_duration(ms: u64) -> String {
    // Written digit by digit into one string: two of these are on every limited answer.
    let mut digits = itoa::Buffer::new();
    let mut s = String::with_capacity(16);
    if ms < 1000 {
        s.push_str(digits.format(ms));
        s.push_str("ms");
        return s;
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    if h > 0 {
        s.push_str(digits.format(h));
        s.push('h');
    }
    if h > 0 || m > 0 {
        s.push_str(digits.format(m));
        s.push('m');
    }
    s.push_str(digits.format(rem / 1000));
    push_fraction(&mut s, rem % 1000, 1000);
    s.push('s');
    s
}

/// `.` and the digits of `part / whole` (`whole` a power of ten), trailing zeros left
/// out; nothing when `part` is 0.
fn push_fraction(s: &mut String, part: u64, mut whole: u64) {
    if part == 0 || part >= whole {
        return;
    }
    s.push('.');
    let mut rest = part;
    while rest > 0 && whole > 1 {
        whole /= 10;
        s.push(char::from(b'0' + (rest / whole) as u8));
        rest %= whole;
    }
}

/// APISIX's reset in seconds, floored to 2 decimals and written as Lua writes the number
/// (`59.99`, `59.9`, `60`).
fn apisix_reset(ms: u64) -> String {
    let hundredths = ms / 10;
    let mut s = String::with_capacity(12);
    s.push_str(itoa::Buffer::new().format(hundredths / 100));
    push_fraction(&mut s, hundredths % 100, 100);
    s
}

/// Frame a body whose length is not known yet (a stream, a generated file): chunked for an
/// HTTP/1.1 client, so the connection stays open for its next request. Without it the body
/// would be close-delimited (the end of the body is the end of the connection) while
/// Pingora still announced `Connection: keep-alive`. HTTP/2 frames bodies itself, and an
/// HTTP/1.0 client gets a close-delimited body.
pub fn open_ended(session: &Session, h: &mut ResponseHeader) {
    if !session.is_http2() && session.req_header().version == http::Version::HTTP_11 {
        let _ = h.insert_header("transfer-encoding", "chunked");
    }
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
    match e {
        GatewayError::RateLimited {
            limit,
            retry_after_ms,
            ..
        } => ctx.limited = Some((limit.clone(), *retry_after_ms)),
        GatewayError::RequestTooLarge { limit, .. } => ctx.limited = Some((limit.clone(), 0)),
        _ => {}
    }
    let mut h = header(e.status(), "application/json", ctx);
    if let Some(retry) = e.should_retry() {
        let _ = h.insert_header("x-should-retry", if retry { "true" } else { "false" });
    }
    if let GatewayError::RateLimited {
        retry_after_ms,
        quotas,
        ..
    }
    | GatewayError::AllServersTried {
        retry_after_ms,
        quotas,
        ..
    } = e
    {
        // Whole seconds, at most 60, so every SDK version honours it; the exact value in ms.
        // An answer the SDKs are told not to retry (a spend budget that frees in more than
        // a minute) says when it frees, for the client's own scheduling.
        let cap = match e.should_retry() {
            Some(false) => u64::MAX,
            _ => 60_000,
        };
        let retry_after_ms: u64 = (*retry_after_ms).min(cap);
        let secs = retry_after_ms.div_ceil(1000).max(1);
        let _ = h.insert_header("retry-after", secs.to_string());
        let _ = h.insert_header("retry-after-ms", retry_after_ms.to_string());
        quota_headers(&mut h, ctx, quotas);
    }
    if let GatewayError::AuthThrottled { retry_after_ms } = e {
        let secs = retry_after_ms.div_ceil(1000).max(1);
        let _ = h.insert_header("retry-after", secs.to_string());
        let _ = h.insert_header("retry-after-ms", retry_after_ms.to_string());
    }
    // A request body the client is still sending is not wanted: close after answering.
    // When the body has been read (a 429 after admission, a 400 on its content) the
    // connection stays open, so a rate-limited client does not reconnect for every retry.
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    // Anthropic's SDKs read their own error shape.
    let body = if ctx.endpoint == "messages" {
        e.anthropic_body()
    } else {
        e.body()
    };
    full(session, ctx, h, body).await;
}

#[cfg(test)]
mod tests {
    use super::{apisix_reset, go_duration};

    #[test]
    fn go_durations() {
        for (ms, want) in [
            (6, "6ms"),
            (1000, "1s"),
            (17_280, "17.28s"),
            (60_052, "1m0.052s"),
            (360_000, "6m0s"),
            (7_200_000, "2h0m0s"),
        ] {
            assert_eq!(go_duration(ms), want);
        }
    }

    #[test]
    fn apisix_resets_read_as_the_float_did() {
        for ms in [
            0, 9, 10, 990, 1000, 1009, 1010, 1100, 59_990, 59_999, 60_000, 86_400_000,
        ] {
            let float = ((ms / 10) as f64 / 100.0).to_string();
            assert_eq!(apisix_reset(ms), float, "{ms}");
        }
        assert_eq!(go_duration(17_200), "17.2s");
        assert_eq!(go_duration(3_600_000 + 5), "1h0m0.005s");
        assert_eq!(go_duration(61_500), "1m1.5s");
    }
}
