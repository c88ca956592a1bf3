//! An OpenAI-compatible upstream that counts how many requests it serves at once, so a
//! test can check a concurrency limit across several gateways at the place it matters.

use super::fixture_server::{self, Reply, Request};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Counters {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub total: AtomicUsize,
}

pub struct CountingUpstream {
    pub port: u16,
    pub counters: Arc<Counters>,
}

impl CountingUpstream {
    /// Every chat completion takes `hold` before it is answered.
    pub fn start(hold: Duration) -> CountingUpstream {
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let port = fixture_server::start(Arc::new(move |_: &Request| {
            let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            c.max_in_flight.fetch_max(now, Ordering::SeqCst);
            c.total.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(hold);
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
            Reply::json("200 OK", completion("counted", "ok"))
        }));
        CountingUpstream { port, counters }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.counters.total.load(Ordering::SeqCst)
    }
}

/// A `chat.completion` body.
pub fn completion(model: &str, content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-fixture", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    })
    .to_string()
}
