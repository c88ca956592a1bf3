//! Upstream URLs (provider `base_url`s, pass-through nodes, webhooks), parsed strictly:
//! http or https, a host, a port in 1–65535, no credentials, no query. A leaf module, so
//! config validation, the providers and the egress policy can all use it.

/// A parsed provider base URL such as `https://api.openai.com/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/v1`, or empty).
    pub prefix: String,
    /// Value of the `Host` header.
    pub authority: String,
}

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        // Errors show the URL with any `user:password@` blanked out.
        let s = &*redact_userinfo(raw);
        let uri: http::Uri = raw
            .parse()
            .map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{s:?} must start with http:// or https://")),
        };
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .ok_or_else(|| format!("{s:?} has no host"))?;
        if authority.contains('@') {
            return Err(format!(
                "{s:?} must not carry credentials (user:password@): put the key in api_key"
            ));
        }
        let (host, port) = split_authority(authority).map_err(|e| format!("{s:?}: {e}"))?;
        if uri.query().is_some() {
            return Err(format!("{s:?} must not have a query string"));
        }
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        let authority = authority.to_string();
        let host = host.to_string();
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl {
            tls,
            host,
            port,
            prefix,
            authority,
        })
    }
}

/// `scheme://user:pw@host…` → `scheme://***@host…` (for messages).
fn redact_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]).into(),
        None => url.into(),
    }
}

/// Split `host[:port]` (`[v6]:port` too) strictly: the port, when present, must be a
/// number in 1–65535 (`http::Uri` alone would read `:80800` as no port at all).
pub fn split_authority(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| "unterminated [ in the host".to_string())?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(p.strip_prefix(':').ok_or("junk after the IPv6 host")?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("port {p:?} is not in 1-65535")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::BaseUrl;

    #[test]
    fn parses_base_urls() {
        let b = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            (b.tls, b.host.as_str(), b.port, b.prefix.as_str()),
            (true, "api.openai.com", 443, "/v1")
        );
        let b = BaseUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (b.tls, b.port, b.prefix.as_str(), b.authority.as_str()),
            (false, 8000, "", "127.0.0.1:8000")
        );
        let b = BaseUrl::parse("http://[::1]:8000/v1").unwrap();
        assert_eq!(b.host, "::1");
        assert!(BaseUrl::parse("ftp://x").is_err());
        let e = BaseUrl::parse("http://user:pw@127.0.0.1:80800/v1").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        for bad in [
            "http://127.0.0.1:80800/v1",
            "http://h:0",
            "http://h:-1",
            "http://h:+80",
        ] {
            let e = BaseUrl::parse(bad).unwrap_err();
            assert!(
                e.contains("1-65535") || e.contains("not a URL"),
                "{bad}: {e}"
            );
        }
        assert_eq!(BaseUrl::parse("http://h:65535").unwrap().port, 65535);
        assert!(BaseUrl::parse("localhost:80").is_err());
    }
}
