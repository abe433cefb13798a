//! Path normalisation before routing: percent-decoding of unreserved characters,
//! repeated slashes merged, dot-segments removed. Encoded `/`, `\`, NUL and invalid
//! escapes are rejected, so what is routed is exactly what is forwarded.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("the path has an invalid percent-escape")]
    BadEscape,
    #[error("the path has an encoded slash, backslash or NUL")]
    ForbiddenEscape,
    #[error("the path has a backslash, a control character or a non-ASCII byte")]
    ForbiddenByte,
}

/// Normalises `path` (no query). Borrows when the path is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if scan(path.as_bytes())? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// One pass over the bytes: refuses forbidden ones, and tells whether the path is already
/// normal (no escape, no empty segment, no `.` or `..` segment).
fn scan(bytes: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' | 0..=0x1f | 0x7f.. => return Err(PathError::ForbiddenByte),
            b'%' => normal = false,
            b'/' => {
                if i > 0 && is_dot_or_empty(&bytes[segment_start..i]) {
                    normal = false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    let last = &bytes[segment_start.min(bytes.len())..];
    Ok(normal && !matches!(last, b"." | b".."))
}

/// A segment that normalisation would remove: empty (`//`), `.` or `..`.
fn is_dot_or_empty(segment: &[u8]) -> bool {
    matches!(segment, b"" | b"." | b"..")
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(PathError::BadEscape);
        };
        let value = (hi * 16 + lo) as u8;
        match value {
            b'/' | b'\\' | 0 => return Err(PathError::ForbiddenEscape),
            v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(v))
            }
            v => {
                out.push('%');
                out.push_str(&format!("{v:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
}

fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "" | "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn normalises() {
        assert_eq!(n("/a/b"), Ok("/a/b".into()));
        assert_eq!(n("//a///b/"), Ok("/a/b/".into()));
        assert_eq!(n("/a/./b/../c"), Ok("/a/c".into()));
        assert_eq!(n("/../../etc/passwd"), Ok("/etc/passwd".into()));
        assert_eq!(n("/a/.."), Ok("/".into()));
        assert_eq!(n("/%61%7e%2D"), Ok("/a~-".into()));
        assert_eq!(n("/a%20b"), Ok("/a%20b".into()));
        assert_eq!(n("/a%2fb"), Err(PathError::ForbiddenEscape));
        assert_eq!(n("/a%5Cb"), Err(PathError::ForbiddenEscape));
        assert_eq!(n("/a%00"), Err(PathError::ForbiddenEscape));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a\\b"), Err(PathError::ForbiddenByte));
        assert_eq!(n("/%2e%2e/x"), Ok("/x".into()));
        assert_eq!(n("a"), Err(PathError::NotAbsolute));
    }

    proptest! {
        #[test]
        fn result_is_normal_and_stable(p in "/[a-z./%0-9A-F~_-]{0,40}") {
            if let Ok(once) = n(&p) {
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
                prop_assert_eq!(n(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn never_panics(p in "\\PC*") {
            let _ = normalize(&p);
        }
    }
}
