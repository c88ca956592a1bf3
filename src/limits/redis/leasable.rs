//! Which checks a quota lease may serve, and under which numbers (see
//! [`crate::limits::lease`]): shared by the leased admission and the call that asks for
//! leases.

use super::*;
use crate::limits::tokens::TokenLimit;

/// What a check can be served from, if a lease may serve it (realtime requests only).
#[derive(Clone, Copy)]
pub(super) enum Leasable {
    Count(u64),
    Conn,
    /// Tokens or spend: the amount one request reserves.
    Tokens(u64),
    /// A `nodelay` leaky bucket.
    Req,
}

pub(super) fn leasable(c: &Check<'_>, estimate: Estimate) -> Option<Leasable> {
    // Batch requests pace themselves in Redis; templated numbers change per request.
    if c.yield_to.is_some() || c.rule.templates.is_some() {
        return None;
    }
    let block = |l: TokenLimit| Leasable::Tokens(estimate.of(&c.kind).min(l.limit));
    match c.kind {
        RuleKind::Count(l) if !l.sliding => Some(Leasable::Count(l.count)),
        RuleKind::Conn(_) => Some(Leasable::Conn),
        RuleKind::Tokens(l, _) | RuleKind::Spend(l) => Some(block(l)),
        RuleKind::Req(l) if l.nodelay => Some(Leasable::Req),
        _ => None,
    }
}

/// The numbers a lease was granted under: a lease serves only checks with the same (a
/// reload that lowers a limit must not let leases of the old one be spent under it).
pub(super) fn numbers(kind: &RuleKind) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match kind {
        RuleKind::Req(l) => (0u8, l.rate.to_bits(), l.burst.to_bits(), l.nodelay).hash(&mut h),
        RuleKind::Conn(l) => (1u8, l.conn, l.burst, l.default_conn_delay_ms).hash(&mut h),
        RuleKind::Count(l) => (2u8, l.count, l.window_ms, l.sliding).hash(&mut h),
        RuleKind::Tokens(l, _) => (3u8, l.limit, l.window_ms, l.any_left).hash(&mut h),
        RuleKind::Spend(l) => (4u8, l.limit, l.window_ms).hash(&mut h),
    }
    h.finish()
}
