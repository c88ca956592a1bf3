//! Rate-limit signals from providers: each key's headroom as the provider reports it.
//!
//! - OpenAI and compatible upstreams: `x-ratelimit-remaining-{requests,tokens}`, with
//!   `x-ratelimit-reset-*` as Go durations (`6m0s`).
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`,
//!   with `…-reset` as an RFC 3339 time.
//!
//! A key that reports nothing left is given a cool-down until its reset, so routing moves to
//! keys with headroom before the provider starts answering 429; the remaining numbers are
//! exported as metrics. Each provider's [`super::Provider::signals`] picks the reader of
//! its dialect. The headers reach clients only where a provider sets
//! `pass_ratelimit_headers`.

use std::time::{Duration, SystemTime};

/// What one response says about its key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// The key has nothing left for this long.
    pub exhausted_for: Option<Duration>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
}

/// A response's rate-limit headers (lower-case names, keys already masked), as the HTTP
/// client collects them: passed on to clients only where a provider sets
/// `pass_ratelimit_headers`, and read by the provider's [`super::Provider::signals`].
pub type RateLimitHeaders = Vec<(String, String)>;

/// Whether a response header is a provider rate-limit header.
pub fn is_ratelimit_header(name: &str) -> bool {
    name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-")
}

fn lookup<'h>(headers: &'h [(String, String)]) -> impl Fn(&str) -> Option<&'h str> {
    move |name| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn number(v: Option<&str>) -> Option<f64> {
    v.and_then(|v| v.trim().parse::<f64>().ok())
}

/// Keep the longest wait among the budgets that have nothing left.
fn exhausted(s: &mut Signals, remaining: Option<f64>, reset: Option<Duration>) {
    if remaining.is_some_and(|r| r <= 0.0) {
        s.exhausted_for = s.exhausted_for.max(reset);
    }
}

/// OpenAI's (and Azure's, DeepSeek's, most compatible servers') headers:
/// `x-ratelimit-remaining-{requests,tokens}`, resets as Go durations.
pub fn openai(headers: &[(String, String)]) -> Signals {
    read(
        headers,
        &[
            (
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ),
            ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
        ],
        parse_go_duration,
    )
}

/// Anthropic's headers: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
/// remaining`, resets as RFC 3339 times.
pub fn anthropic(headers: &[(String, String)]) -> Signals {
    read(
        headers,
        &[
            (
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ),
            (
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ),
            (
                "anthropic-ratelimit-input-tokens-remaining",
                "anthropic-ratelimit-input-tokens-reset",
            ),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                "anthropic-ratelimit-output-tokens-reset",
            ),
        ],
        until_rfc3339,
    )
}

/// The signals of `headers` in one dialect: its (remaining, reset) header names per
/// budget, the requests' budget first and the tokens' second, and how it writes a reset.
/// Most answers carry no rate-limit header at all: they cost nothing here.
fn read(
    headers: &[(String, String)],
    budgets: &[(&str, &str)],
    reset: fn(&str) -> Option<Duration>,
) -> Signals {
    let mut s = Signals::default();
    if headers.is_empty() {
        return s;
    }
    let get = lookup(headers);
    for (i, (remaining, reset_name)) in budgets.iter().enumerate() {
        let r = number(get(remaining));
        exhausted(&mut s, r, get(reset_name).and_then(reset));
        match i {
            0 => s.remaining_requests = r,
            1 => s.remaining_tokens = r,
            _ => {}
        }
    }
    s
}

/// Time from now until an RFC 3339 instant (zero if it has passed).
fn until_rfc3339(v: &str) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(v.trim()).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parse a Go duration such as `6ms`, `1s`, `17.28s`, `1m0.052s`, `2h0m0s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = |s: &str| parse_go_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("6ms"), Some(6));
        assert_eq!(ms("17.28s"), Some(17_280));
        assert_eq!(ms("1m0.052s"), Some(60_052));
        assert_eq!(ms("2h0m0s"), Some(7_200_000));
        assert_eq!(ms("soon"), None);
        assert_eq!(ms("5"), None);
    }

    #[test]
    fn exhausted_only_when_nothing_is_left() {
        let headers = |pairs: &[(&str, &str)]| -> RateLimitHeaders {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let left = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(openai(&left).exhausted_for, None);
        assert_eq!(openai(&left).remaining_requests, Some(3.0));
        let none = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(openai(&none).exhausted_for, Some(Duration::from_secs(360)));
        // Each dialect reads its own headers only.
        assert_eq!(anthropic(&none), Signals::default());
        let a = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2099-01-01T00:00:00Z"),
            ("anthropic-ratelimit-requests-remaining", "42"),
        ]);
        let s = anthropic(&a);
        assert!(s.exhausted_for.unwrap() > Duration::from_secs(86_400 * 365));
        assert_eq!(
            (s.remaining_requests, s.remaining_tokens),
            (Some(42.0), Some(0.0))
        );
        assert_eq!(openai(&a), Signals::default());
        let past = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2001-01-01T00:00:00Z"),
        ]);
        assert_eq!(anthropic(&past).exhausted_for, Some(Duration::ZERO));
    }
}
