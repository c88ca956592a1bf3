//! JSON written item by item. A translated request's large array (chat `messages`, a
//! Responses `input`) is serialized as each item is translated, so no request exists as
//! one JSON tree: its peak memory stays a small multiple of its body (one copy of the
//! body, one of the translation, and one item's tree at a time).

use serde::Serialize;
use serde_json::{Map, Value};

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

    /// An object with `head`'s fields and the array field `key`, written last.
    pub fn field(head: &Map<String, Value>, key: &str) -> ArrayOut {
        let mut buf = Value::Object(head.clone()).to_string().into_bytes();
        buf.pop(); // the closing brace
        if !head.is_empty() {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    }
}
