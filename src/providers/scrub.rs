//! Provider keys never reach a client: every byte read from an upstream (status-line
//! facts, headers, bodies, streams) passes through a [`Scrubber`] holding every provider
//! key of the config, before the proxy, the translators, the batch store or a webhook
//! sees it. An upstream that echoes the key (in an error's `code`, an SSE error event, a
//! non-JSON body, or split across two reads) has it masked.
//!
//! The search is one Aho-Corasick pass over each byte (all keys at once); a chunk without
//! a key is passed on as it is (no copy). A key is masked by bytes of the same length
//! (`[REDACTED]***…`), so `content-length` and JSON stay valid. Across reads,
//! [`StreamScrubber`] holds back only the end of a chunk that could begin a key (for
//! `sk-…` keys, a chunk ending in `…s` or `…sk-`), so events are not delayed in practice.
//!
//! Keys shorter than [`MIN_KEY_LEN`] bytes are not searched for: masking them would
//! mangle ordinary text.

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};

/// Shortest key that is masked.
pub const MIN_KEY_LEN: usize = 8;

/// The keys of one config snapshot.
#[derive(Debug)]
pub struct Scrubber {
    search: Option<AhoCorasick>,
    /// Longest key, in bytes.
    longest: usize,
    /// Keys, to tell whether a chunk ends with the start of one.
    keys: Vec<Vec<u8>>,
    /// `first[b]`: some key starts with byte `b`.
    first: [bool; 256],
}

impl Default for Scrubber {
    fn default() -> Self {
        Scrubber {
            search: None,
            longest: 0,
            keys: Vec::new(),
            first: [false; 256],
        }
    }
}

impl Scrubber {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Scrubber {
        Scrubber::of(keys.into_iter().map(|k| k.as_bytes().to_vec()).collect())
    }

    /// These keys and `extra` (a credential obtained at run time, such as a Vertex
    /// access token, masked in the answers of the calls that carry it).
    pub fn with(&self, extra: &str) -> Scrubber {
        let mut keys = self.keys.clone();
        keys.push(extra.as_bytes().to_vec());
        Scrubber::of(keys)
    }

    fn of(keys: Vec<Vec<u8>>) -> Scrubber {
        let mut keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| k.len() >= MIN_KEY_LEN)
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Scrubber::default();
        }
        let search = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&keys)
            .ok();
        let mut first = [false; 256];
        for k in &keys {
            first[k[0] as usize] = true;
        }
        Scrubber {
            search,
            longest: keys.iter().map(Vec::len).max().unwrap_or(0),
            keys,
            first,
        }
    }

    /// Whether there is any key to look for.
    pub fn is_active(&self) -> bool {
        self.search.is_some()
    }

    /// Mask every key in `buf`; returns whether anything was masked.
    fn mask(&self, buf: &mut [u8]) -> bool {
        let Some(ac) = &self.search else {
            return false;
        };
        let spans: Vec<(usize, usize)> =
            ac.find_iter(&*buf).map(|m| (m.start(), m.end())).collect();
        for &(s, e) in &spans {
            mask_span(&mut buf[s..e]);
        }
        !spans.is_empty()
    }

    /// Whether `buf` holds a key (cheap check before copying).
    fn finds(&self, buf: &[u8]) -> bool {
        self.search.as_ref().is_some_and(|ac| ac.is_match(buf))
    }

    /// A string value (a header), masked.
    pub fn string(&self, s: String) -> String {
        if !self.finds(s.as_bytes()) {
            return s;
        }
        let mut b = s.into_bytes();
        self.mask(&mut b);
        // Masking replaces whole keys (valid UTF-8) by ASCII: still valid.
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Length of the longest end of `buf` that is the start of a key (and not a whole
    /// key): those bytes must wait for the next chunk.
    fn partial_end(&self, buf: &[u8]) -> usize {
        let from = buf.len().saturating_sub(self.longest.saturating_sub(1));
        for p in from..buf.len() {
            if !self.first[buf[p] as usize] {
                continue;
            }
            let tail = &buf[p..];
            if self
                .keys
                .iter()
                .any(|k| k.len() > tail.len() && k.starts_with(tail))
            {
                return buf.len() - p;
            }
        }
        0
    }
}

fn mask_span(span: &mut [u8]) {
    const LABEL: &[u8] = b"[REDACTED]";
    for (i, b) in span.iter_mut().enumerate() {
        *b = if span_len_fits(i) { LABEL[i] } else { b'*' };
    }
    fn span_len_fits(i: usize) -> bool {
        i < LABEL.len()
    }
}

/// Scrubs one body read chunk by chunk, including keys split across chunks.
#[derive(Debug)]
pub struct StreamScrubber {
    scrubber: std::sync::Arc<Scrubber>,
    /// The held-back end of the previous chunk (the start of a key, perhaps).
    carry: BytesMut,
}

impl StreamScrubber {
    pub fn new(scrubber: std::sync::Arc<Scrubber>) -> StreamScrubber {
        StreamScrubber {
            scrubber,
            carry: BytesMut::new(),
        }
    }

    /// The part of `chunk` (after what was held back) that can be passed on now.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let s = &*self.scrubber;
        if !s.is_active() {
            return chunk;
        }
        if self.carry.is_empty() {
            let hold = s.partial_end(&chunk);
            if hold == 0 && !s.finds(&chunk) {
                return chunk; // the common case: nothing to mask, nothing to hold
            }
            self.carry.extend_from_slice(&chunk);
        } else {
            self.carry.extend_from_slice(&chunk);
        }
        s.mask(&mut self.carry);
        let hold = s.partial_end(&self.carry);
        let ready = self.carry.len() - hold;
        self.carry.split_to(ready).freeze()
    }

    /// What was held back, at the end of the body (not a key: it never completed).
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.carry).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KEY: &str = "sk-canary-0123456789abcdef";

    #[test]
    fn masks_every_key_keeping_the_length() {
        let s = Arc::new(Scrubber::new([KEY, "short", "sk-other-key-987654"]));
        let body = format!(r#"{{"error":{{"code":"{KEY}","param":"Bearer {KEY}"}}}}"#);
        let mut st = StreamScrubber::new(s.clone());
        let mut out = st.push(Bytes::from(body.clone())).to_vec();
        out.extend_from_slice(&st.finish());
        assert_eq!(out.len(), body.len());
        let text = std::str::from_utf8(&out).unwrap();
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("Bearer [REDACTED]****"), "{text}");
        serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        assert_eq!(s.string("short words".into()), "short words");
        assert_eq!(
            s.string("x sk-other-key-987654".into()),
            "x [REDACTED]*********"
        );
    }

    #[test]
    fn keys_split_across_chunks_are_masked_and_nothing_is_lost() {
        let s = Arc::new(Scrubber::new([KEY]));
        let text = format!("data: {{\"error\":\"bad key {KEY} given\"}}\n\ndata: [DONE]\n\n");
        for cut in 0..text.len() {
            for cut2 in cut..text.len() {
                let mut st = StreamScrubber::new(s.clone());
                let mut out = Vec::new();
                for part in [&text[..cut], &text[cut..cut2], &text[cut2..]] {
                    out.extend_from_slice(&st.push(Bytes::copy_from_slice(part.as_bytes())));
                }
                out.extend_from_slice(&st.finish());
                let out = String::from_utf8(out).unwrap();
                assert_eq!(out.len(), text.len());
                assert!(!out.contains(KEY), "cut at {cut},{cut2}: {out}");
                assert_eq!(out.replace("[REDACTED]****************", KEY), text);
            }
        }
    }

    #[test]
    fn chunks_without_keys_pass_untouched_and_undelayed() {
        let s = Arc::new(Scrubber::new([KEY]));
        let mut st = StreamScrubber::new(s);
        let chunk = Bytes::from_static(b"data: {\"choices\":[]}\n\n");
        let out = st.push(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "no copy");
        // A chunk ending with the start of a key waits for the next one; a false alarm
        // comes out with it.
        assert_eq!(&st.push(Bytes::from_static(b"ask-can"))[..], b"a");
        assert_eq!(&st.push(Bytes::from_static(b"dy\n\n"))[..], b"sk-candy\n\n");
        assert!(st.finish().is_empty());
        let none = Scrubber::new(["tiny"]);
        assert!(!none.is_active(), "keys under 8 bytes are not searched");
    }
}
