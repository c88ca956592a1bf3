//! W3C Trace Context (`traceparent`) and the sampling decision: pure functions.
//!
//! A client's `traceparent` makes the gateway's spans children of the client's span, in the
//! client's trace, and its sampled flag is followed (parent-based sampling, as the
//! OpenTelemetry SDKs do by default). Without one, a new trace is sampled when its id falls
//! under the configured ratio (the SDKs' `TraceIdRatioBased`: the same ids are sampled by
//! every service that uses the ratio).

use opentelemetry::trace::{SpanId, TraceId};

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// Parse a header value; `None` for anything the W3C spec says to ignore (a wrong
    /// length, uppercase or non-hex digits, the all-zero ids, version `ff`). A future
    /// version's longer value is read by its first four fields, as the spec asks.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.trim();
        let mut parts = v.splitn(5, '-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) {
            return None;
        }
        if !hex(flags, 2) || (version == "00" && rest.is_some()) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let parent_id = SpanId::from_hex(parent).ok()?;
        if trace_id == TraceId::INVALID || parent_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// The `traceparent` that tells the next hop its parent is `span` of `trace`.
pub fn format(trace: TraceId, span: SpanId, sampled: bool) -> String {
    format!("00-{trace}-{span}-{:02x}", u8::from(sampled))
}

/// Whether a new trace with this id is sampled at `ratio` (the SDKs' `TraceIdRatioBased`:
/// the id's low 8 bytes below `ratio × 2^63`).
pub fn sampled_by_ratio(trace: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bytes = trace.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    x < bound
}

/// A random non-zero trace id.
pub fn new_trace_id() -> TraceId {
    loop {
        let id = TraceId::from_bytes(rand::random::<[u8; 16]>());
        if id != TraceId::INVALID {
            return id;
        }
    }
}

/// A random non-zero span id.
pub fn new_span_id() -> SpanId {
    loop {
        let id = SpanId::from_bytes(rand::random::<[u8; 8]>());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_as_the_w3c_spec_says() {
        // The spec's own example.
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A future version with more fields is read by its first four.
        assert!(TraceParent::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
        )
        .is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let s = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(
            format(t, s, true),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            TraceParent::parse(&format(t, s, false)).unwrap().parent_id,
            s
        );
    }

    #[test]
    fn the_ratio_samples_that_share_of_trace_ids() {
        assert!(sampled_by_ratio(new_trace_id(), 1.0));
        assert!(!sampled_by_ratio(new_trace_id(), 0.0));
        let n = 20_000;
        let hit = (0..n)
            .filter(|_| sampled_by_ratio(new_trace_id(), 0.1))
            .count();
        assert!((1_600..2_400).contains(&hit), "{hit} of {n} at 10%");
        // The decision depends on the id only.
        let id = TraceId::from_hex("00000000000000000000000000000001").unwrap();
        assert!(sampled_by_ratio(id, 0.01));
        let id = TraceId::from_hex("0000000000000000ffffffffffffffff").unwrap();
        assert!(!sampled_by_ratio(id, 0.99));
    }
}
