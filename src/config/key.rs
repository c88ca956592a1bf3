//! APISIX-style limit keys: a template such as `$consumer_name`, `$remote_addr`,
//! `$http_x_user` (the `X-User` header), `$model`, or a combination like
//! `"$consumer_name $http_x_user"`. `${name}` is accepted too and `\$` is a literal dollar.
//! Unset variables become empty, or the default of `${name ?? default}` (which counts as
//! resolved, as in APISIX 3.18); if no variable resolves, the client address is used, as
//! APISIX does (its `var_combination` fallback). The same templates give rule numbers
//! (`count: "${http_count ?? 2}"`, see [`KeyTemplate::number`]).

/// A variable a key can use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    ConsumerName,
    RemoteAddr,
    Model,
    /// A request header, stored in its lower-case HTTP form (`x-user`).
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// A variable and its `??` default.
    Var(Var, Option<String>),
}

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

/// What a key can be resolved from.
pub struct KeyContext<'a> {
    pub consumer: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
    pub model: &'a str,
    pub headers: &'a http::HeaderMap,
}

impl KeyTemplate {
    pub fn parse(s: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'$') => {
                    lit.push('$');
                    chars.next();
                }
                '$' => {
                    let braced = chars.peek() == Some(&'{');
                    if braced {
                        chars.next();
                    }
                    let mut name = String::new();
                    while let Some(&n) = chars.peek() {
                        if n.is_ascii_alphanumeric() || n == '_' || (braced && n == ' ') {
                            name.push(n);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    let mut default = None;
                    if braced && chars.peek() == Some(&'?') {
                        chars.next();
                        if chars.next() != Some('?') {
                            return Err(format!("expected ?? in {s:?}"));
                        }
                        let mut d = String::new();
                        while let Some(&n) = chars.peek() {
                            if n == '}' {
                                break;
                            }
                            d.push(n);
                            chars.next();
                        }
                        default = Some(d.trim().to_string());
                    }
                    if braced && chars.next() != Some('}') {
                        return Err(format!("unterminated ${{ in key {s:?}"));
                    }
                    let name = name.trim();
                    let var = match name {
                        "consumer_name" => Var::ConsumerName,
                        "remote_addr" => Var::RemoteAddr,
                        "model" => Var::Model,
                        h if h.starts_with("http_") && h.len() > 5 => {
                            Var::Header(h[5..].to_ascii_lowercase().replace('_', "-"))
                        }
                        other => {
                            return Err(format!(
                                "unknown variable ${other} in key {s:?} (known: consumer_name, remote_addr, model, http_<header>)"
                            ))
                        }
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var, default));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(KeyTemplate { parts })
    }

    /// Whether the template reads request headers.
    pub fn uses_headers(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(Var::Header(_), _)))
    }

    /// The text for one request, and whether any variable resolved (a default counts).
    fn render(&self, cx: &KeyContext<'_>) -> (String, bool) {
        let mut out = String::new();
        let mut resolved_any = false;
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v, default) => {
                    let value = match v {
                        Var::ConsumerName => cx.consumer,
                        Var::RemoteAddr => cx.remote_addr,
                        Var::Model => Some(cx.model),
                        Var::Header(h) => cx.headers.get(h.as_str()).and_then(|v| v.to_str().ok()),
                    };
                    if let Some(v) = value.filter(|v| !v.is_empty()).or(default.as_deref()) {
                        resolved_any = true;
                        out.push_str(v);
                    }
                }
            }
        }
        (out, resolved_any)
    }

    /// Whether some variable resolves for this request (a `??` default counts).
    pub fn resolves(&self, cx: &KeyContext<'_>) -> bool {
        self.render(cx).1
    }

    /// The key for one request.
    pub fn resolve(&self, cx: &KeyContext<'_>) -> String {
        match self.render(cx) {
            (out, true) => out,
            _ => cx.remote_addr.unwrap_or("").to_string(),
        }
    }

    /// A rule number for one request (APISIX 3.18 `count`/`time_window` templates): the
    /// text must be an integer in 1..=2^53-1; otherwise the reason, which APISIX answers
    /// with a 500.
    pub fn number(&self, cx: &KeyContext<'_>) -> Result<u64, String> {
        let (text, _) = self.render(cx);
        text.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=(1u64 << 53) - 1).contains(n))
            .ok_or_else(|| {
                format!("resolved value {text:?} is not an integer between 1 and 2^53-1")
            })
    }

    /// The number this template gives when no variable is set (its defaults), if any.
    pub fn default_number(&self) -> Option<u64> {
        let text: String = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(l) => l.as_str(),
                Part::Var(_, d) => d.as_deref().unwrap_or(""),
            })
            .collect();
        text.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(headers: &http::HeaderMap) -> KeyContext<'_> {
        KeyContext {
            consumer: Some("jack"),
            remote_addr: Some("10.0.0.1"),
            model: "gpt",
            headers,
        }
    }

    #[test]
    fn resolves_templates_like_apisix() {
        let mut h = http::HeaderMap::new();
        h.insert("x-a", "1".parse().unwrap());
        let r = |t: &str| KeyTemplate::parse(t).unwrap().resolve(&cx(&h));
        assert_eq!(r("$consumer_name"), "jack");
        assert_eq!(r("${ consumer_name }:$model"), "jack:gpt");
        assert_eq!(r("$http_x_a $http_x_b"), "1 ");
        assert_eq!(
            r("$http_x_missing"),
            "10.0.0.1",
            "nothing resolved: client address"
        );
        assert_eq!(
            r("abcdefgh"),
            "10.0.0.1",
            "no variable at all: client address"
        );
        assert_eq!(r("cost \\$1 $model"), "cost $1 gpt");
        assert!(KeyTemplate::parse("$nope")
            .unwrap_err()
            .contains("unknown variable"));
        assert!(KeyTemplate::parse("${model").is_err());
    }

    #[test]
    fn defaults_and_numbers() {
        let mut h = http::HeaderMap::new();
        let t = KeyTemplate::parse("${http_count ?? 2}").unwrap();
        assert_eq!(t.number(&cx(&h)), Ok(2));
        assert_eq!(t.default_number(), Some(2));
        h.insert("count", "3".parse().unwrap());
        assert_eq!(t.number(&cx(&h)), Ok(3));
        for bad in ["0", "-1", "1.5", "9999999999999999", "x"] {
            h.insert("count", bad.parse().unwrap());
            assert!(t.number(&cx(&h)).is_err(), "{bad}");
        }
        // A default counts as resolved: the key always applies.
        let k = KeyTemplate::parse("${http_project ?? apisix}").unwrap();
        assert_eq!(k.resolve(&cx(&h)), "apisix");
        assert_eq!(KeyTemplate::parse("5").unwrap().number(&cx(&h)), Ok(5));
    }
}
