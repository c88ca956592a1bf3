//! Rate-limit signals from providers. OpenAI-style upstreams report each key's headroom in
//! `x-ratelimit-remaining-{requests,tokens}` with `x-ratelimit-reset-*` as Go durations;
//! a key that reports nothing left is given a cool-down until its reset, so routing moves
//! to keys with headroom before the provider starts answering 429.

use std::time::Duration;

/// How long the key has nothing left, from the response's rate-limit headers.
pub fn exhausted_for(get: impl Fn(&str) -> Option<String>) -> Option<Duration> {
    ["requests", "tokens"]
        .iter()
        .filter_map(|b| {
            let remaining = get(&format!("x-ratelimit-remaining-{b}"))?;
            if remaining.trim().parse::<f64>().ok()? > 0.0 {
                return None;
            }
            parse_go_duration(&get(&format!("x-ratelimit-reset-{b}"))?)
        })
        .max()
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
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let left = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(exhausted_for(left), None);
        let none = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(exhausted_for(none), Some(Duration::from_secs(360)));
    }
}
