//! ns per decision of each local limit algorithm (pure functions, state kept by the caller).
//! Run: `cargo bench --bench limiters`.

use ai_rate_limiter::limits::{
    conn::ConnLimit,
    count::CountLimit,
    req::{ReqDecision, ReqLimit},
    tokens::{TokenDecision, TokenLimit},
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn limiters(c: &mut Criterion) {
    let req = ReqLimit {
        rate: 1000.0,
        burst: 50.0,
        nodelay: true,
    };
    c.bench_function("limit-req decide", |b| {
        let (mut state, mut now) = (None, 0u64);
        b.iter(|| {
            now += 1;
            if let ReqDecision::Admit { state: s, .. } = req.decide(black_box(state), now) {
                state = Some(s);
            }
        })
    });
    let conn = ConnLimit {
        conn: 100,
        burst: 20,
        default_conn_delay_ms: 100,
    };
    c.bench_function("limit-conn decide", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = (n + 1) % 130;
            black_box(conn.decide(black_box(n)))
        })
    });
    let count = CountLimit {
        count: 1_000_000,
        window_ms: 60_000,
        sliding: false,
    };
    c.bench_function("limit-count hit", |b| {
        let (mut state, mut now) = (None, 0u64);
        b.iter(|| {
            now += 1;
            state = Some(count.hit(black_box(state), now, 1).state);
        })
    });
    let tokens = TokenLimit {
        limit: 1_000_000_000,
        window_ms: 60_000,
        any_left: false,
    };
    c.bench_function("tokens reserve+reconcile", |b| {
        let (mut state, mut now) = (None, 0u64);
        b.iter(|| {
            now += 1;
            if let TokenDecision::Admit {
                state: s,
                reservation,
                ..
            } = tokens.reserve(black_box(state), now, 500)
            {
                state = Some(tokens.reconcile(Some(s), now, reservation, 300));
            }
        })
    });
}

criterion_group!(benches, limiters);
criterion_main!(benches);
