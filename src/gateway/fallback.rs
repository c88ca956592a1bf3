//! APISIX ai-proxy-multi's retry rule (a model's `fallback`): which failed upstream answers
//! move on to the next deployment, and what the client gets when none is left. Pure, so
//! it is unit-tested without a binary.

use crate::config::schema::{FallbackConfig, FallbackOn};
use std::time::Duration;

/// What to do after an attempt answered `status` (a transport failure counts as 504 for a
/// timeout, 500 otherwise, as APISIX's transport reports them) in `took`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Give the client this answer as it is.
    Relay,
    /// Try the next deployment, if the retry budget and the deployments allow.
    Retry,
}

pub fn step(f: &FallbackConfig, status: u16, took: Duration) -> Step {
    let wanted = (status == 429 && f.on.contains(&FallbackOn::Http429))
        || ((500..600).contains(&status) && f.on.contains(&FallbackOn::Http5xx))
        || f.statuses.contains(&status);
    if !wanted || f.retry_within.is_some_and(|w| took > w) {
        return Step::Relay;
    }
    Step::Retry
}

/// Whether deployments at their limits are skipped (APISIX's rate-limit pre-check).
pub fn skips_limited(f: &FallbackConfig) -> bool {
    f.on.contains(&FallbackOn::RateLimiting)
}

/// The most failed attempts that may still be followed by another (APISIX `max_retries`;
/// without it, every deployment may be tried).
pub fn retry_budget(f: &FallbackConfig) -> u32 {
    f.max_retries.unwrap_or(u32::MAX)
}

/// The client's status when a retry was wanted but no deployment is left: APISIX answers
/// 502 with the last upstream body; when `max_retries` stopped it, the answer as it is.
pub fn exhausted_status(status: u16, budget_spent: bool) -> u16 {
    if budget_spent {
        status
    } else {
        502
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(on: &[FallbackOn]) -> FallbackConfig {
        FallbackConfig {
            on: on.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn retries_only_what_the_strategy_names() {
        let t = Duration::from_millis(5);
        // "instance_health_and_rate_limiting" alone retries nothing.
        let rl = conf(&[FallbackOn::RateLimiting]);
        assert_eq!(step(&rl, 429, t), Step::Relay);
        assert_eq!(step(&rl, 500, t), Step::Relay);
        assert!(skips_limited(&rl));
        let both = conf(&[FallbackOn::Http429, FallbackOn::Http5xx]);
        assert_eq!(step(&both, 429, t), Step::Retry);
        assert_eq!(step(&both, 503, t), Step::Retry);
        assert_eq!(step(&both, 401, t), Step::Relay);
        assert!(!skips_limited(&both));
        // fallback_http_statuses work without a strategy.
        let statuses = FallbackConfig {
            statuses: vec![401],
            ..Default::default()
        };
        assert_eq!(step(&statuses, 401, t), Step::Retry);
        assert_eq!(step(&statuses, 500, t), Step::Relay);
    }

    #[test]
    fn slow_failures_and_spent_budgets_are_relayed() {
        let f = FallbackConfig {
            on: vec![FallbackOn::Http5xx],
            retry_within: Some(Duration::from_millis(100)),
            max_retries: Some(1),
            ..Default::default()
        };
        assert_eq!(step(&f, 500, Duration::from_millis(50)), Step::Retry);
        assert_eq!(step(&f, 500, Duration::from_millis(150)), Step::Relay);
        assert_eq!(retry_budget(&f), 1);
        assert_eq!(exhausted_status(500, true), 500);
        assert_eq!(exhausted_status(429, false), 502);
    }
}
