//! Request paths, normalised before routing and auth see them (RFC 3986 §6.2.2): an
//! unreserved character sent percent-encoded is decoded (`%2e` → `.`, `%41` → `A`),
//! the hex digits of every other escape are upper-cased, `.` and `..` segments are
//! removed (§5.2.4), and a run of slashes stays as the client sent it. The normalised
//! path is the one routes match and the one sent upstream, so a backend can never see a
//! path that climbs out of the route that authorised it (`/public/../admin/x`).
//!
//! Refused with a 400: a path that climbs above the root, an escape that is not two hex
//! digits, an encoded NUL, a path that does not start with `/`, and an encoded slash or
//! backslash (`%2F`, `%5C`: one segment to the gateway, two to many backends) in a path
//! that goes to a backend. The gateway's own API takes one in an id it decodes itself
//! (`/v1/models/org%2Fmodel`), where no backend ever sees the path.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    EncodedSlash,
    AboveRoot,
    BadEscape,
    NotAbsolute,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::EncodedSlash => "the path holds an encoded slash or backslash",
            PathError::AboveRoot => "the path climbs above the root",
            PathError::BadEscape => "the path holds an invalid percent-escape",
            PathError::NotAbsolute => "the path does not start with '/'",
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode escaped unreserved characters and upper-case the others' hex digits.
fn decode_unreserved(path: &str, allow_slash: bool) -> Result<Cow<'_, str>, PathError> {
    let b = path.as_bytes();
    if memchr::memchr(b'%', b).is_none() {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            let next = memchr::memchr(b'%', &b[i..]).map_or(b.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let c = hi * 16 + lo;
        match c {
            b'/' | b'\\' if !allow_slash => return Err(PathError::EncodedSlash),
            0 => return Err(PathError::BadEscape),
            c if unreserved(c) => out.push(c as char),
            c => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(c >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(c & 15)]));
            }
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// The normalised form of `path` (no query), borrowed when it is already normal.
/// `allow_slash`: keep an encoded slash (upper-cased) instead of refusing it.
pub fn normalize(path: &str, allow_slash: bool) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path, allow_slash)?;
    let has_dots = decoded.split('/').any(|s| s == "." || s == "..");
    if !has_dots {
        return Ok(decoded);
    }
    // Remove dot segments. Segments after the leading '/'.
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, false).map(Cow::into_owned)
    }

    #[test]
    fn removes_dot_segments() {
        assert_eq!(n("/public/../admin/x").unwrap(), "/admin/x");
        assert_eq!(n("/public/%2e%2e/admin/x").unwrap(), "/admin/x");
        assert_eq!(n("/public/%2E%2e/admin/x").unwrap(), "/admin/x");
        assert_eq!(n("/public/./../admin/x").unwrap(), "/admin/x");
        assert_eq!(n("/a/b/./c").unwrap(), "/a/b/c");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/.").unwrap(), "/");
        assert_eq!(n("/a/.../b").unwrap(), "/a/.../b");
        assert_eq!(n("/a/..b/c").unwrap(), "/a/..b/c");
    }

    #[test]
    fn keeps_normal_paths_borrowed() {
        assert!(matches!(
            normalize("/v1/chat/completions", false),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            normalize("/v1//x/", false),
            Ok(Cow::Borrowed("/v1//x/"))
        ));
    }

    #[test]
    fn decodes_unreserved_only() {
        assert_eq!(n("/v1/%63hat/completions").unwrap(), "/v1/chat/completions");
        assert_eq!(n("/v1/models/a%3ab").unwrap(), "/v1/models/a%3Ab");
        assert_eq!(n("/x/%7e").unwrap(), "/x/~");
        assert_eq!(n("/x/%20y").unwrap(), "/x/%20y");
    }

    #[test]
    fn refuses_tricks() {
        assert_eq!(n("/public/..%2fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/public/%2F..%2Fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/public/%5cadmin"), Err(PathError::EncodedSlash));
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(n("/a/%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a/%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a/%00"), Err(PathError::BadEscape));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        let kept = normalize("/v1/models/org%2fm/../x", true).unwrap();
        assert_eq!(kept, "/v1/models/x");
        assert_eq!(
            normalize("/v1/models/org%2fm", true).unwrap(),
            "/v1/models/org%2Fm"
        );
    }
}
