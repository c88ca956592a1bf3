//! Which route serves a path: pass-through routes and AI routes (models served at their
//! own paths) share one matcher, so the most specific wins whichever kind it is, as
//! APISIX's radix tree decides (an exact path over every prefix, then the longest prefix,
//! then config order).

use super::{ModelRoute, PassRoute};

/// Paths, methods and hosts a route answers.
#[derive(Debug, Default)]
pub struct UriMatcher {
    /// (path, prefix?) pairs.
    uris: Vec<(String, bool)>,
    methods: Vec<http::Method>,
    hosts: Vec<String>,
}

impl UriMatcher {
    /// `uris` are exact paths or prefixes ending in `*` (validated).
    pub fn new(uris: &[String], methods: &[String], hosts: &[String]) -> UriMatcher {
        UriMatcher {
            uris: uris
                .iter()
                .map(|u| match u.strip_suffix('*') {
                    Some(p) => (p.to_string(), true),
                    None => (u.clone(), false),
                })
                .collect(),
            methods: methods.iter().filter_map(|m| m.parse().ok()).collect(),
            hosts: hosts.to_vec(),
        }
    }

    /// How well a request matches: `None`, or the length of the matched path (an exact
    /// match beats every prefix).
    pub fn matches(&self, method: &http::Method, host: Option<&str>, path: &str) -> Option<usize> {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return None;
        }
        if !self.hosts.is_empty() {
            let host = host?.split(':').next()?;
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return None;
            }
        }
        self.uris
            .iter()
            .filter_map(|(u, prefix)| match prefix {
                false if path == u => Some(usize::MAX),
                true if path.starts_with(u.as_str()) => Some(u.len()),
                _ => None,
            })
            .max()
    }
}

/// The route a path belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Matched<'a> {
    Pass(&'a PassRoute),
    /// A model served at its own paths (an APISIX AI route).
    Ai(&'a ModelRoute),
}

/// The best of `candidates` for a request, and whether it matched the path exactly.
pub fn best<'a>(
    candidates: impl Iterator<Item = (&'a UriMatcher, Matched<'a>)>,
    method: &http::Method,
    host: Option<&str>,
    path: &str,
) -> Option<(Matched<'a>, bool)> {
    let mut best: Option<(Matched<'a>, usize)> = None;
    for (m, route) in candidates {
        if let Some(score) = m.matches(method, host, path) {
            if best.as_ref().is_none_or(|(_, b)| score > *b) {
                best = Some((route, score));
            }
        }
    }
    best.map(|(r, score)| (r, score == usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_prefix_and_longer_prefix_wins() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = UriMatcher::new(&s(&["/ai", "/llm/*"]), &[], &s(&["a.example"]));
        let get = http::Method::GET;
        assert_eq!(
            m.matches(&get, Some("a.example:8080"), "/ai"),
            Some(usize::MAX)
        );
        assert_eq!(m.matches(&get, Some("a.example"), "/llm/x"), Some(5));
        assert_eq!(m.matches(&get, Some("b.example"), "/ai"), None);
        assert_eq!(m.matches(&get, Some("a.example"), "/ai/x"), None);
        let post = UriMatcher::new(&s(&["/*"]), &s(&["POST"]), &[]);
        assert_eq!(post.matches(&get, None, "/x"), None);
        assert_eq!(post.matches(&http::Method::POST, None, "/x"), Some(1));
    }
}
