//! Which node of a Redis Cluster owns which slot, as this gateway last heard it
//! (`CLUSTER SLOTS`), so that one call can carry the keys of several slots that one node
//! owns: an admission whose entities happen to share a node stays one atomic call, and the
//! releases of many requests go out in one call per node instead of one per slot.
//!
//! A stale map costs a round trip, never a wrong answer: the scripts probe every key first
//! and change nothing when one lives on another node; the gateway then falls back to one
//! call per slot and reads the map again.

use redis::Value;

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// Slot ranges and the node (an index into the map's own list) that owns each.
#[derive(Debug, Default)]
pub(crate) struct Topology {
    ranges: Vec<(u16, u16, usize)>,
}

impl Topology {
    /// Read a `CLUSTER SLOTS` answer: `[[start, end, [host, port, id, …], replicas…], …]`.
    /// `None` when it has another shape.
    pub(crate) fn parse(v: &Value) -> Option<Topology> {
        let Value::Array(entries) = v else {
            return None;
        };
        let mut nodes: Vec<String> = Vec::new();
        let mut ranges = Vec::with_capacity(entries.len());
        for e in entries {
            let Value::Array(parts) = e else { return None };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return None;
            };
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            let name = format!("{host}:{port}");
            let node = match nodes.iter().position(|n| *n == name) {
                Some(i) => i,
                None => {
                    nodes.push(name);
                    nodes.len() - 1
                }
            };
            ranges.push((u16::try_from(*start).ok()?, u16::try_from(*end).ok()?, node));
        }
        ranges.sort_unstable();
        Some(Topology { ranges })
    }

    /// The node that owns `slot`, if the map knows it.
    pub(crate) fn node(&self, slot: u16) -> Option<usize> {
        let i = self.ranges.partition_point(|(start, _, _)| *start <= slot);
        let (start, end, node) = *self.ranges.get(i.checked_sub(1)?)?;
        (start <= slot && slot <= end).then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values of CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(slot("a"), 15495);
        assert_eq!(slot("b"), 3300);
        assert_eq!(slot("f"), 3168);
        // A hash tag decides; an empty one does not.
        assert_eq!(slot("x{b}y"), 3300);
        assert_eq!(slot("{b}"), 3300);
        assert_ne!(slot("{}b"), slot("b"));
        for key in [
            "{ai-rate-limiter:model:m}limit_conn:model:m/c",
            "plain",
            "{a}{b}",
        ] {
            let ours = redis::cluster_routing::Slot::for_key(key);
            let same = |k: &str| redis::cluster_routing::Slot::for_key(k) == ours;
            assert!(same(key));
            assert_eq!(slot(key), slot(key));
        }
        assert_eq!(
            redis::cluster_routing::Slot::for_key("{a}{b}"),
            redis::cluster_routing::Slot::for_key("a")
        );
        assert_eq!(slot("{a}{b}"), slot("a"));
    }

    #[test]
    fn the_map_finds_each_slot_owner() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, n: Value| Value::Array(vec![Value::Int(a), Value::Int(b), n]);
        let v = Value::Array(vec![
            range(5461, 10922, node("127.0.0.1", 7002)),
            range(0, 5460, node("127.0.0.1", 7001)),
            range(10923, 16383, node("127.0.0.1", 7003)),
        ]);
        let t = Topology::parse(&v).expect("parsed");
        assert_eq!(t.node(0), t.node(5460));
        assert_ne!(t.node(5460), t.node(5461));
        assert_eq!(t.node(16383), t.node(10923));
        assert!(t.node(0).is_some());
        assert_eq!(Topology::default().node(3), None);
        assert!(Topology::parse(&Value::Int(1)).is_none());
    }
}
