//! A pass-through route's changes on the way, compiled (pure, unit-tested): the path a
//! `rewrite` sends (APISIX `proxy-rewrite` `uri` / `regex_uri`) and the
//! `Access-Control-*` headers a `cors` policy answers with (APISIX `cors`).

use crate::config::schema::{CorsConfig, HeaderRewrite, RewriteConfig};
use regex::Regex;

/// A compiled `rewrite`.
#[derive(Debug)]
pub struct Rewrite {
    uri: Option<String>,
    /// `(regex, replacement in Rust's syntax)`, tried in order.
    regex_uri: Vec<(Regex, String)>,
    pub host: Option<String>,
    pub method: Option<String>,
    pub headers: HeaderRewrite,
}

/// APISIX's replacement (ngx.re.sub: `$1`, `${1}`, `$$` for a dollar) in the regex
/// crate's syntax: `$1` becomes `${1}`, so `$1_x` is capture 1 then `_x`, not a group
/// named `1_x`; a lone `$` is a dollar.
fn replacement(apisix: &str) -> String {
    let mut out = String::with_capacity(apisix.len() + 4);
    let mut chars = apisix.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                out.push(d);
                chars.next();
            }
            out.push('}');
        } else if c == '$' && chars.peek() == Some(&'$') {
            chars.next();
            out.push_str("$$");
        } else if c == '$' && chars.peek() == Some(&'{') {
            out.push('$');
        } else if c == '$' {
            out.push_str("$$");
        } else {
            out.push(c);
        }
    }
    out
}

impl Rewrite {
    /// Compile a validated `rewrite` (a regex that does not compile is left out; the
    /// config's validation refuses it first).
    pub fn compile(c: &RewriteConfig) -> Rewrite {
        Rewrite {
            uri: c.uri.clone(),
            regex_uri: c
                .regex_uri
                .chunks(2)
                .filter(|p| p.len() == 2)
                .filter_map(|p| Some((Regex::new(&p[0]).ok()?, replacement(&p[1]))))
                .collect(),
            host: c.host.clone(),
            method: c.method.clone(),
            headers: c.headers.clone(),
        }
    }

    /// The path and query sent for a client's `path` and `query`, when it changes.
    pub fn path_and_query(&self, path: &str, query: Option<&str>) -> Option<String> {
        let with_query = |p: String| match query {
            Some(q) if !p.contains('?') => format!("{p}?{q}"),
            _ => p,
        };
        if let Some(uri) = &self.uri {
            return Some(with_query(uri.clone()));
        }
        let (re, to) = self.regex_uri.iter().find(|(re, _)| re.is_match(path))?;
        Some(with_query(re.replace(path, to.as_str()).into_owned()))
    }
}

/// The `Access-Control-*` headers of `cors` for a request from `origin` asking for
/// `request_headers` (a preflight's `Access-Control-Request-Headers`); none when the
/// policy lists origins and `origin` is not one of them.
pub fn cors_headers(
    c: &CorsConfig,
    origin: Option<&str>,
    request_headers: Option<&str>,
) -> Vec<(&'static str, String)> {
    let allow_origin = match c.allow_origins.as_str() {
        "**" => origin.unwrap_or("*").to_string(),
        list if list.contains(',') => match origin {
            Some(o) if list.split(',').any(|l| l.trim() == o) => o.to_string(),
            _ => return Vec::new(),
        },
        one => one.to_string(),
    };
    let mut out = Vec::with_capacity(7);
    if allow_origin != "*" {
        out.push(("vary", "Origin".to_string()));
    }
    out.push(("access-control-allow-origin", allow_origin));
    let methods = match c.allow_methods.as_str() {
        "**" => "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE".to_string(),
        m => m.to_string(),
    };
    out.push(("access-control-allow-methods", methods));
    out.push(("access-control-max-age", c.max_age.to_string()));
    if !c.expose_headers.is_empty() {
        out.push(("access-control-expose-headers", c.expose_headers.clone()));
    }
    let headers = match c.allow_headers.as_str() {
        "**" => request_headers.unwrap_or_default().to_string(),
        h => h.to_string(),
    };
    if !headers.is_empty() {
        out.push(("access-control-allow-headers", headers));
    }
    if c.allow_credential {
        out.push(("access-control-allow-credentials", "true".to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(yaml: &str) -> Rewrite {
        Rewrite::compile(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn uri_replaces_the_path_and_keeps_the_query() {
        let r = rewrite("{uri: /new}");
        assert_eq!(r.path_and_query("/old", Some("a=1")).unwrap(), "/new?a=1");
        assert_eq!(r.path_and_query("/old", None).unwrap(), "/new");
        let r = rewrite("{uri: \"/new?b=2\"}");
        assert_eq!(r.path_and_query("/old", Some("a=1")).unwrap(), "/new?b=2");
    }

    #[test]
    fn regex_uri_replaces_the_first_match_of_the_first_matching_pair() {
        let r = rewrite(r#"{regex_uri: ["^/nope/(.*)", "/x", "^/iresty/(.*)/(.*)", "/$1_$2"]}"#);
        assert_eq!(r.path_and_query("/iresty/a/b", None).unwrap(), "/a_b");
        assert_eq!(r.path_and_query("/other", Some("q=1")), None);
        assert_eq!(replacement("/$1_$2/$$x/${1}/$"), "/${1}_${2}/$$x/${1}/$$");
    }

    #[test]
    fn cors_follows_apisix() {
        let any = CorsConfig::default();
        let h = cors_headers(&any, Some("https://a.example"), None);
        assert!(h.contains(&("access-control-allow-origin", "*".into())));
        assert!(!h.iter().any(|(k, _)| *k == "vary"));
        assert!(h.contains(&("access-control-max-age", "5".into())));
        let listed = CorsConfig {
            allow_origins: "https://a.example,https://b.example".into(),
            allow_headers: "**".into(),
            allow_methods: "**".into(),
            allow_credential: true,
            ..CorsConfig::default()
        };
        let h = cors_headers(&listed, Some("https://b.example"), Some("x-k"));
        assert!(h.contains(&("access-control-allow-origin", "https://b.example".into())));
        assert!(h.contains(&("vary", "Origin".into())));
        assert!(h.contains(&("access-control-allow-headers", "x-k".into())));
        assert!(h.contains(&("access-control-allow-credentials", "true".into())));
        assert!(cors_headers(&listed, Some("https://evil.example"), None).is_empty());
        assert!(cors_headers(&listed, None, None).is_empty());
    }
}
