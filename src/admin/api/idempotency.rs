//! `Idempotency-Key` on the Admin API's writes: a retried write (same admin key, same
//! `Idempotency-Key`) gets the first answer again instead of acting twice. Kept in memory
//! for 24 hours, at most [`MAX_ENTRIES`] (the oldest go first), per instance. The same key
//! with another request (method, path or body) is a 422. An answer that held a key's
//! secret is not kept: its replay is a 409 naming the key's id, as a secret is shown once.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most remembered answers.
pub const MAX_ENTRIES: usize = 10_000;
/// How long an answer is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// A remembered answer.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The request it answered (method, path, body), digested.
    fingerprint: [u8; 32],
    at: Instant,
    pub status: u16,
    /// The body, or `None` when it held a secret.
    pub body: Option<Vec<u8>>,
    /// What the secret-bearing answer created (its id), for the replay's 409.
    pub created: Option<String>,
}

/// What to do with a write that carries an `Idempotency-Key`.
#[derive(Debug)]
pub enum Seen {
    /// Not seen: run it.
    New,
    /// Answered before: this again.
    Replay(Kept),
    /// The key was used for another request.
    Mismatch,
}

#[derive(Default)]
pub struct Idempotency {
    kept: HashMap<(String, String), Kept>,
}

/// A request's fingerprint.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
        h.update(part);
    }
    h.finalize().into()
}

impl Idempotency {
    /// Look `key` of `actor` up for a request with `fingerprint`.
    pub fn check(&mut self, actor: &str, key: &str, fingerprint: [u8; 32], now: Instant) -> Seen {
        match self.kept.get(&(actor.to_string(), key.to_string())) {
            Some(k) if now.duration_since(k.at) < TTL => {
                if k.fingerprint == fingerprint {
                    Seen::Replay(k.clone())
                } else {
                    Seen::Mismatch
                }
            }
            _ => Seen::New,
        }
    }

    /// Remember the answer to `key` of `actor`.
    #[allow(clippy::too_many_arguments)]
    pub fn keep(
        &mut self,
        actor: &str,
        key: &str,
        fingerprint: [u8; 32],
        now: Instant,
        status: u16,
        body: Option<Vec<u8>>,
        created: Option<String>,
    ) {
        if self.kept.len() >= MAX_ENTRIES {
            self.kept.retain(|_, k| now.duration_since(k.at) < TTL);
        }
        if self.kept.len() >= MAX_ENTRIES {
            if let Some(oldest) = self
                .kept
                .iter()
                .min_by_key(|(_, k)| k.at)
                .map(|(key, _)| key.clone())
            {
                self.kept.remove(&oldest);
            }
        }
        self.kept.insert(
            (actor.to_string(), key.to_string()),
            Kept {
                fingerprint,
                at: now,
                status,
                body,
                created,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_refuses_another_request_and_stays_bounded() {
        let mut i = Idempotency::default();
        let t = Instant::now();
        let f = fingerprint("POST", "/admin/consumers", b"{}");
        assert!(matches!(i.check("ops", "k1", f, t), Seen::New));
        i.keep("ops", "k1", f, t, 201, Some(b"x".to_vec()), None);
        assert!(matches!(i.check("ops", "k1", f, t), Seen::Replay(k) if k.status == 201));
        assert!(
            matches!(i.check("other", "k1", f, t), Seen::New),
            "per admin key"
        );
        let g = fingerprint("POST", "/admin/consumers", b"{\"a\":1}");
        assert!(matches!(i.check("ops", "k1", g, t), Seen::Mismatch));
        assert!(
            matches!(i.check("ops", "k1", f, t + TTL), Seen::New),
            "forgotten"
        );
        for n in 0..MAX_ENTRIES + 5 {
            i.keep("ops", &n.to_string(), f, t, 200, None, None);
        }
        assert!(i.kept.len() <= MAX_ENTRIES);
    }
}
