//! The SSE event splitter of streamed upstream answers (bounded events, each byte
//! scanned once), and reading an event's data.

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

/// Splits a byte stream into SSE events, each ending with its blank line. Each byte is
/// scanned once (a search resumes where the last one stopped, 3 bytes back for a line
/// end cut between chunks), and an event may hold at most `max` bytes: a longer one is
/// refused as soon as that many bytes have come without its end.
pub struct EventSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for an event end.
    scanned: usize,
    max: usize,
}

/// An upstream event longer than `upstream.max_event_bytes`.
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl EventSplitter {
    pub fn new(max: usize) -> EventSplitter {
        EventSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    pub fn next_event(&mut self) -> Result<Option<Bytes>, EventTooLarge> {
        let from = self.scanned.saturating_sub(3);
        let b = &self.buf;
        // Only line ends can end an event: jump from one to the next.
        let end = memchr::memchr2_iter(b'\n', b'\r', &b[from..]).find_map(|i| {
            let i = from + i;
            match b[i] {
                b'\n' if b.get(i + 1) == Some(&b'\n') => Some(i + 2),
                b'\r' if b[i..].starts_with(b"\r\n\r\n") => Some(i + 4),
                b'\r' if b.get(i + 1) == Some(&b'\r') => Some(i + 2),
                _ => None,
            }
        });
        match end {
            Some(end) if end > self.max => Err(EventTooLarge),
            Some(end) => {
                self.scanned = 0;
                Ok(Some(self.buf.split_to(end).freeze()))
            }
            None if self.buf.len() > self.max => Err(EventTooLarge),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }
}

/// The `data` of an event (data lines joined by `\n`), `None` when it has none. An event
/// of one data line (every OpenAI chunk) is borrowed, not copied. Lines are found by
/// jumping between line ends (`memchr`), not byte by byte: this runs on every event.
pub fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut start = 0;
    let ends = memchr::memchr2_iter(b'\n', b'\r', event).chain(std::iter::once(event.len()));
    for end in ends {
        let line = &event[start..end];
        start = end + 1;
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    let d = d.to_mut();
                    d.push(b'\n');
                    d.extend_from_slice(rest);
                }
                None => data = Some(Cow::Borrowed(rest)),
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut s = EventSplitter::new(1 << 20);
        let next = |s: &mut EventSplitter| s.next_event().unwrap();
        s.push(b": keep-alive\n\ndata: {\"a\":");
        assert_eq!(next(&mut s).as_deref(), Some(&b": keep-alive\n\n"[..]));
        assert!(next(&mut s).is_none());
        s.push(b"1}\r\n\r");
        assert!(next(&mut s).is_none());
        s.push(b"\ndata: [DONE]\n");
        assert_eq!(
            next(&mut s).as_deref(),
            Some(&b"data: {\"a\":1}\r\n\r\n"[..])
        );
        assert!(next(&mut s).is_none());
        s.push(b"\n");
        assert_eq!(next(&mut s).as_deref(), Some(&b"data: [DONE]\n\n"[..]));
    }

    #[test]
    fn events_are_bounded_and_scanned_once() {
        let mut s = EventSplitter::new(1000);
        for _ in 0..9 {
            s.push(&[b'x'; 100]);
            assert_eq!(s.next_event(), Ok(None));
        }
        assert_eq!(s.scanned, 900, "the next search starts near the end");
        s.push(&[b'x'; 200]);
        assert_eq!(s.next_event(), Err(EventTooLarge));
        let mut s = EventSplitter::new(10);
        s.push(b"data: 0123456789\n\n");
        assert_eq!(s.next_event(), Err(EventTooLarge));
    }

    #[test]
    fn event_data_joins_lines_and_borrows_a_single_one() {
        let one = event_data(b"data: {\"a\":1}\n\n").unwrap();
        assert!(matches!(one, Cow::Borrowed(b"{\"a\":1}")));
        let two = event_data(b"event: x\r\ndata: a\r\ndata:b\r\n\r\n").unwrap();
        assert_eq!(&*two, b"a\nb");
        assert!(event_data(b": keep-alive\n\n").is_none());
    }

    /// The line-end jumps read the same lines as splitting at every `\n` and `\r`.
    #[test]
    fn event_data_reads_what_a_plain_split_reads() {
        fn by_split(event: &[u8]) -> Option<Vec<u8>> {
            let mut data: Option<Vec<u8>> = None;
            for line in event.split(|&b| b == b'\n' || b == b'\r') {
                if let Some(rest) = line.strip_prefix(b"data:") {
                    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                    match &mut data {
                        Some(d) => {
                            d.push(b'\n');
                            d.extend_from_slice(rest);
                        }
                        None => data = Some(rest.to_vec()),
                    }
                }
            }
            data
        }
        let parts: [&[u8]; 8] = [
            b"data:",
            b"data: ",
            b"x",
            b"\n",
            b"\r",
            b"event: e",
            b"{}",
            b"",
        ];
        // Every sequence of up to 5 parts (8^5 events), plus a few whole ones.
        let mut events: Vec<Vec<u8>> = vec![
            b"data: {\"a\":1}\n\n".to_vec(),
            b"event: x\r\ndata: a\r\ndata:b\r\n\r\n".to_vec(),
            b"data".to_vec(),
        ];
        for mut n in 0..8usize.pow(5) {
            let mut e = Vec::new();
            for _ in 0..5 {
                e.extend_from_slice(parts[n % 8]);
                n /= 8;
            }
            events.push(e);
        }
        for e in &events {
            assert_eq!(event_data(e).map(|d| d.into_owned()), by_split(e), "{e:?}");
        }
    }
}
