//! Sticky sessions: a cookie set by the gateway names the target a client is pinned to.

use http::header::COOKIE;
use http::HeaderMap;

/// The value of cookie `name` in the request, if present.
pub fn cookie<'r>(headers: &'r HeaderMap, name: &str) -> Option<&'r str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// The `Set-Cookie` value that pins a client to `target_id`.
pub fn set_cookie(name: &str, target_id: &str) -> String {
    format!("{name}={target_id}; Path=/; HttpOnly; SameSite=Lax")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_among_others() {
        let (parts, _) = http::Request::builder()
            .header("cookie", "a=1; sluice_sticky=abc; b=2")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(cookie(&parts.headers, "sluice_sticky"), Some("abc"));
        assert_eq!(cookie(&parts.headers, "b"), Some("2"));
        assert_eq!(cookie(&parts.headers, "zz"), None);
    }
}
