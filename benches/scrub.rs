//! Cost of masking provider keys in upstream bytes: the streaming scrubber over an SSE
//! body with three configured keys, beside a plain copy of the same bytes (the floor any
//! relay pays). Run: `cargo bench --bench scrub`.

use ai_rate_limiter::providers::scrub::{Scrubber, StreamScrubber};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;

fn body() -> Vec<Bytes> {
    // 1,000 chat.completion.chunk events of a typical stream, one read each.
    (0..1000)
        .map(|i| {
            Bytes::from(format!(
                "data: {{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} of a streamed answer, some text\"}},\"finish_reason\":null}}]}}\n\n"
            ))
        })
        .collect()
}

fn scrub(c: &mut Criterion) {
    let chunks = body();
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let scrubber = Arc::new(Scrubber::new([
        "sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
        "sk-ant-api03-0123456789abcdefghijklmnopqrstuvwxyz",
        "0123456789abcdef0123456789abcdef",
    ]));
    let mut g = c.benchmark_group("upstream bytes");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("copy (floor)", |b| {
        b.iter(|| {
            for ch in &chunks {
                black_box(Bytes::copy_from_slice(ch));
            }
        })
    });
    g.bench_function("scrub (3 keys)", |b| {
        b.iter(|| {
            let mut s = StreamScrubber::new(scrubber.clone());
            for ch in &chunks {
                black_box(s.push(ch.clone()));
            }
            black_box(s.finish());
        })
    });
    g.finish();
}

criterion_group!(benches, scrub);
criterion_main!(benches);
