//! A latency histogram fine enough for percentiles: log-linear buckets (HDR-style), exact
//! below 16 ms and 16 buckets per power of two above, so a bucket spans at most 1/16 of
//! its lower bound and its middle is within 3.2% of any value in it. Sparse: only the
//! buckets a slot saw take memory (a few for steady traffic, at most [`BUCKETS`]).

/// Buckets per power of two (and the exact range below 16 ms).
const SUB: u64 = 16;
/// Every bucket index is below this (latencies up to 2^40 ms).
pub const BUCKETS: u16 = 16 + 37 * 16;

/// The bucket of a latency in ms.
fn bucket(ms: u64) -> u16 {
    if ms < SUB {
        return ms as u16;
    }
    let e = u64::from(63 - ms.leading_zeros()).min(40); // 2^e <= ms
    let sub = (ms >> (e - 4)) & (SUB - 1);
    (SUB + (e - 4) * SUB + sub).min(u64::from(BUCKETS) - 1) as u16
}

/// The middle of a bucket, in ms (a value below 16 ms exactly).
fn middle(b: u16) -> u64 {
    let b = u64::from(b);
    if b < SUB {
        return b;
    }
    let e = (b - SUB) / SUB + 4;
    let sub = (b - SUB) % SUB;
    let width = 1u64 << (e - 4);
    ((SUB + sub) << (e - 4)) + width / 2
}

/// Counts per bucket, sorted by bucket.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    counts: Vec<(u16, u32)>,
}

impl Latency {
    /// Count one latency.
    pub fn add(&mut self, ms: u64) {
        let b = bucket(ms);
        match self.counts.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(1),
            Err(i) => self.counts.insert(i, (b, 1)),
        }
    }

    /// The `q`-th percentile (0 < q ≤ 100) in ms: the middle of its bucket (within 3.2%
    /// of the true value at or above 16 ms, exact below); `None` without samples.
    pub fn percentile(&self, q: u64) -> Option<u64> {
        let n: u64 = self.counts.iter().map(|(_, c)| u64::from(*c)).sum();
        if n == 0 {
            return None;
        }
        let want = (n * q).div_ceil(100).max(1);
        let mut seen = 0;
        for (b, c) in &self.counts {
            seen += u64::from(*c);
            if seen >= want {
                return Some(middle(*b));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_near_its_buckets_middle() {
        for ms in (0..100_000u64).chain([1 << 30, u64::MAX / 2]) {
            let m = middle(bucket(ms));
            if ms < 16 {
                assert_eq!(m, ms);
            } else if ms < 1 << 40 {
                let err = (m as f64 - ms as f64).abs() / ms as f64;
                assert!(err <= 1.0 / 32.0 + 1e-9, "{ms} ms → {m} ms");
            }
        }
    }

    #[test]
    fn p95_is_within_ten_percent_of_the_true_one() {
        // A skewed spread, as model latencies are (most fast, a long tail).
        let mut seed = 7u64;
        let mut all = Vec::new();
        let mut h = Latency::default();
        for _ in 0..5000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let ms = (30.0 + 200.0 * u * u * u * 10.0) as u64;
            all.push(ms);
            h.add(ms);
        }
        all.sort_unstable();
        let truth = all[(all.len() * 95).div_ceil(100) - 1];
        let got = h.percentile(95).unwrap();
        let err = (got as f64 - truth as f64).abs() / truth as f64;
        assert!(err < 0.04, "p95 {got} ms, true {truth} ms");
        assert!(h.counts.len() < 200, "sparse: {} buckets", h.counts.len());
        assert_eq!(Latency::default().percentile(95), None);
    }
}
