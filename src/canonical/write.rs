//! JSON written item by item. A translated request's large array (chat `messages`, a
//! Responses `input`) is serialized as each item is translated, so no request exists as
//! one JSON tree: its peak memory stays a small multiple of its body (one copy of the
//! body, one of the translation, and one item's tree at a time). Used by the surfaces
//! (Messages and Responses → chat) and the providers whose dialect differs (chat →
//! Anthropic, Gemini, Bedrock: [`Turns`]).

use serde::Serialize;
use serde_json::Value;

/// One SSE event: `event: <name>` when it is named, its data as one line of JSON, and the
/// blank line that ends it.
pub fn sse(name: Option<&str>, data: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // Writing strings, numbers and trees into a Vec cannot fail.
    if serde_json::to_writer(&mut out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// A JSON array being written: bare, or as the last field of an object.
pub struct ArrayOut {
    buf: Vec<u8>,
    count: usize,
    close: &'static [u8],
}

impl ArrayOut {
    /// A bare JSON array.
    pub fn array() -> ArrayOut {
        ArrayOut {
            buf: b"[".to_vec(),
            count: 0,
            close: b"]",
        }
    }

    /// An object with `head`'s fields (a map, a typed struct: anything that serializes as
    /// a JSON object) and the array field `key`, written last.
    pub fn field(head: &impl Serialize, key: &str) -> ArrayOut {
        let mut buf = serde_json::to_vec(head)
            .ok()
            .filter(|b| b.starts_with(b"{"))
            .unwrap_or_else(|| b"{}".to_vec());
        buf.pop(); // the closing brace
        if buf.len() > 1 {
            buf.push(b',');
        }
        buf.extend_from_slice(Value::from(key).to_string().as_bytes());
        buf.extend_from_slice(b":[");
        ArrayOut {
            buf,
            count: 0,
            close: b"]}",
        }
    }

    fn comma(&mut self) {
        if self.count > 0 {
            self.buf.push(b',');
        }
        self.count += 1;
    }

    /// Append one item.
    pub fn push(&mut self, item: &impl Serialize) {
        self.comma();
        // Writing a serializable value into a Vec cannot fail (no I/O, string keys).
        let _ = serde_json::to_writer(&mut self.buf, item);
    }

    /// Append one item that is already JSON text.
    pub fn push_raw(&mut self, raw: &str) {
        self.comma();
        self.buf.extend_from_slice(raw.as_bytes());
    }

    /// Items written so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no item was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished JSON text, as a string.
    pub fn finish_text(self) -> String {
        // Everything written is JSON text: serde's output and slices of parsed strings.
        String::from_utf8(self.finish())
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// The finished JSON text.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(self.close);
        self.buf
    }

    /// The finished JSON text of an object ([`Self::field`]) with `tail`'s fields after
    /// the array: what a translation learns only once every item is read (a system
    /// prompt gathered from the messages, a tool config that depends on the history).
    /// `tail` is anything that serializes as a JSON object (a map, a typed struct).
    pub fn finish_with(mut self, tail: &impl Serialize) -> Vec<u8> {
        if self.close != b"]}" {
            return self.finish(); // a bare array has no fields
        }
        self.buf.push(b']');
        let fields = serde_json::to_vec(tail).unwrap_or_default();
        // `{…}`: its fields follow the array's (none when it is `{}` or not an object).
        if fields.len() > 2 && fields.starts_with(b"{") {
            self.buf.push(b',');
            self.buf.extend_from_slice(&fields[1..]);
        } else {
            self.buf.push(b'}');
        }
        self.buf
    }
}

/// Conversation turns written as they come: consecutive parts of one kind of turn merge
/// into one turn `{"role": …, <parts_key>: [...]}` (Anthropic, Gemini and Bedrock want
/// roles to alternate), without ever holding the merged turn as a tree.
pub struct Turns {
    out: ArrayOut,
    parts_key: &'static str,
    /// The kind of the turn being written and how many parts it has so far.
    open: Option<(String, usize)>,
}

impl Turns {
    /// Turns written into `out`, their parts under `parts_key`.
    pub fn new(out: ArrayOut, parts_key: &'static str) -> Turns {
        Turns {
            out,
            parts_key,
            open: None,
        }
    }

    /// Append `parts` as a turn of `role`, merged into the previous turn when `kind` (the
    /// role, or the role and a distinction the dialect keeps apart) is the same.
    pub fn push(&mut self, role: &str, kind: &str, parts: &[impl Serialize]) {
        match &mut self.open {
            Some((open, count)) if open == kind => {
                for p in parts {
                    if *count > 0 {
                        self.out.buf.push(b',');
                    }
                    *count += 1;
                    let _ = serde_json::to_writer(&mut self.out.buf, p);
                }
            }
            _ => {
                self.close();
                self.out.comma();
                let buf = &mut self.out.buf;
                buf.extend_from_slice(b"{\"role\":");
                let _ = serde_json::to_writer(&mut *buf, role);
                buf.push(b',');
                let _ = serde_json::to_writer(&mut *buf, self.parts_key);
                buf.extend_from_slice(b":[");
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    let _ = serde_json::to_writer(&mut *buf, p);
                }
                self.open = Some((kind.to_string(), parts.len()));
            }
        }
    }

    fn close(&mut self) {
        if self.open.take().is_some() {
            self.out.buf.extend_from_slice(b"]}");
        }
    }

    /// Turns written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether no turn was written.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The finished JSON text, with `tail`'s fields after the turns
    /// ([`ArrayOut::finish_with`]).
    pub fn finish_with(mut self, tail: &impl Serialize) -> Vec<u8> {
        self.close();
        self.out.finish_with(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    #[test]
    fn writes_arrays_and_objects() {
        let mut a = ArrayOut::array();
        assert_eq!(String::from_utf8(ArrayOut::array().finish()).unwrap(), "[]");
        a.push(&json!({"a": 1}));
        a.push_raw("2");
        assert_eq!(a.len(), 2);
        assert_eq!(String::from_utf8(a.finish()).unwrap(), r#"[{"a":1},2]"#);
        let head = json!({"model": "m"}).as_object().cloned().unwrap();
        let mut o = ArrayOut::field(&head, "messages");
        o.push(&json!("x"));
        let v: Value = serde_json::from_slice(&o.finish()).unwrap();
        assert_eq!(v, json!({"model": "m", "messages": ["x"]}));
        let o = ArrayOut::field(&Map::new(), "input");
        assert_eq!(String::from_utf8(o.finish()).unwrap(), r#"{"input":[]}"#);
        let tail = json!({"system": "s", "z": 1}).as_object().cloned().unwrap();
        let mut o = ArrayOut::field(&Map::new(), "m");
        o.push(&json!(1));
        let v: Value = serde_json::from_slice(&o.finish_with(&tail)).unwrap();
        assert_eq!(v, json!({"m": [1], "system": "s", "z": 1}));
    }

    #[test]
    fn turns_merge_consecutive_parts_of_one_kind() {
        let mut t = Turns::new(ArrayOut::field(&Map::new(), "messages"), "content");
        t.push("user", "user", &[json!("a")]);
        t.push("user", "user", &[] as &[Value]);
        t.push("user", "user", &[json!("b"), json!("c")]);
        t.push("assistant", "assistant", &[] as &[Value]);
        t.push("assistant", "assistant", &[json!("d")]);
        t.push("user", "user+results", &[json!("e")]);
        t.push("user", "user", &[json!("f")]);
        assert_eq!(t.len(), 4);
        let tail = json!({"system": "s"}).as_object().cloned().unwrap();
        let v: Value = serde_json::from_slice(&t.finish_with(&tail)).unwrap();
        assert_eq!(
            v,
            json!({"system": "s", "messages": [
                {"role": "user", "content": ["a", "b", "c"]},
                {"role": "assistant", "content": ["d"]},
                {"role": "user", "content": ["e"]},
                {"role": "user", "content": ["f"]}]})
        );
        let empty = Turns::new(ArrayOut::field(&Map::new(), "contents"), "parts");
        assert!(empty.is_empty());
        assert_eq!(
            empty.finish_with(&Map::new()),
            br#"{"contents":[]}"#.to_vec()
        );
    }
}
