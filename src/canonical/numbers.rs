//! The numbers of a request that limits and budgets rely on — the completion cap
//! (`max_tokens`, `max_completion_tokens`, `max_output_tokens`) and the number of
//! choices (`n`, `best_of`) — validated as the provider's API types them: an integer in
//! range, or a 400 in OpenAI's wording. A string, a decimal, a negative or an absurd
//! value never reaches a reservation, so a reservation is never smaller than what the
//! upstream may bill.

use super::Endpoint;
use crate::errors::GatewayError;

/// The largest completion cap taken (an API integer: 2^31 − 1).
pub const MAX_TOKENS: u64 = i32::MAX as u64;
/// The most choices one request may ask for (OpenAI's bound on `n`).
pub const MAX_CHOICES: u64 = 128;

/// What a request's numbers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    /// The completion cap per choice the client asked for, if any.
    pub max_tokens: Option<u64>,
    /// How many completions the upstream generates (and bills): `n`, or `best_of` when
    /// larger; at least 1.
    pub choices: u64,
}

/// The numbers of a body whose raw top-level fields `raw` reads.
pub fn read<'a>(
    endpoint: Endpoint,
    raw: impl Fn(&str) -> Option<&'a str>,
) -> Result<Numbers, GatewayError> {
    let caps: &[&str] = match endpoint {
        Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Endpoint::Completions | Endpoint::Messages => &["max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
        Endpoint::Embeddings => &[],
    };
    let mut max_tokens = None;
    for name in caps {
        let min = u64::from(endpoint != Endpoint::Completions);
        let v = integer(name, raw(name), min, MAX_TOKENS)?;
        max_tokens = max_tokens.or(v);
    }
    let mut choices = 1;
    if matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        choices = integer("n", raw("n"), 1, MAX_CHOICES)?.unwrap_or(1);
    }
    if endpoint == Endpoint::Completions {
        let best_of = integer("best_of", raw("best_of"), 1, 20)?.unwrap_or(1);
        choices = choices.max(best_of);
    }
    Ok(Numbers {
        max_tokens,
        choices,
    })
}

/// An optional integer field in `min..=max` (`null` or absent: `None`).
fn integer(name: &str, raw: Option<&str>, min: u64, max: u64) -> Result<Option<u64>, GatewayError> {
    let Some(raw) = raw.map(str::trim).filter(|r| *r != "null") else {
        return Ok(None);
    };
    let bad = |message: String, code: &'static str| GatewayError::BadRequest {
        message,
        param: Some(static_name(name)),
        code: Some(code),
    };
    let kind = match raw.as_bytes()[0] {
        b'"' => Some("a string"),
        b't' | b'f' => Some("a boolean"),
        b'{' => Some("an object"),
        b'[' => Some("an array"),
        _ if raw.contains(['.', 'e', 'E']) => Some("a decimal number"),
        _ => None,
    };
    if let Some(kind) = kind {
        return Err(bad(
            format!("Invalid type for '{name}': expected an integer, but got {kind} instead."),
            "invalid_type",
        ));
    }
    if raw.starts_with('-') {
        return Err(bad(
            format!(
                "Invalid '{name}': integer below minimum value. Expected a value >= {min}, but got {raw} instead."
            ),
            "integer_below_min_value",
        ));
    }
    // Digits only by now; past u64 is past any maximum.
    let v = raw.parse::<u64>().unwrap_or(u64::MAX);
    if v < min {
        return Err(bad(
            format!(
                "Invalid '{name}': integer below minimum value. Expected a value >= {min}, but got {raw} instead."
            ),
            "integer_below_min_value",
        ));
    }
    if v > max {
        return Err(bad(
            format!(
                "Invalid '{name}': integer above maximum value. Expected a value <= {max}, but got {raw} instead."
            ),
            "integer_above_max_value",
        ));
    }
    Ok(Some(v))
}

/// The error's `param` (a static string: the fields are few and known).
fn static_name(name: &str) -> &'static str {
    match name {
        "max_completion_tokens" => "max_completion_tokens",
        "max_tokens" => "max_tokens",
        "max_output_tokens" => "max_output_tokens",
        "n" => "n",
        "best_of" => "best_of",
        _ => "body",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(field: &str, raw: &str) -> Result<Numbers, GatewayError> {
        read(Endpoint::ChatCompletions, |k| (k == field).then_some(raw))
    }

    #[test]
    fn integers_in_range_only() {
        assert_eq!(chat("max_tokens", "100").unwrap().max_tokens, Some(100));
        assert_eq!(chat("max_tokens", "null").unwrap().max_tokens, None);
        assert_eq!(chat("n", "8").unwrap().choices, 8);
        for (field, raw, code) in [
            ("max_tokens", "\"20000\"", "invalid_type"),
            ("max_tokens", "100.5", "invalid_type"),
            ("max_tokens", "1e5", "invalid_type"),
            ("max_tokens", "true", "invalid_type"),
            ("max_tokens", "-1", "integer_below_min_value"),
            ("max_tokens", "0", "integer_below_min_value"),
            (
                "max_tokens",
                "18446744073709551608",
                "integer_above_max_value",
            ),
            (
                "max_tokens",
                "99999999999999999999999",
                "integer_above_max_value",
            ),
            (
                "max_completion_tokens",
                "2147483648",
                "integer_above_max_value",
            ),
            ("n", "129", "integer_above_max_value"),
            ("n", "0", "integer_below_min_value"),
        ] {
            match chat(field, raw) {
                Err(GatewayError::BadRequest { code: c, param, .. }) => {
                    assert_eq!((c, param), (Some(code), Some(field)), "{field}: {raw}")
                }
                other => panic!("{field}: {raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn best_of_counts_as_choices_and_responses_read_their_own_cap() {
        let raw = |k: &str| match k {
            "n" => Some("2"),
            "best_of" => Some("5"),
            "max_tokens" => Some("0"),
            _ => None,
        };
        let n = read(Endpoint::Completions, raw).unwrap();
        assert_eq!((n.max_tokens, n.choices), (Some(0), 5));
        let n = read(Endpoint::Responses, |k| {
            (k == "max_output_tokens").then_some("64")
        })
        .unwrap();
        assert_eq!((n.max_tokens, n.choices), (Some(64), 1));
        let n = read(Endpoint::Embeddings, |_| Some("\"x\"")).unwrap();
        assert_eq!((n.max_tokens, n.choices), (None, 1));
    }
}
