//! Where a token is found (the `Authorization: Bearer` header, another header, a cookie or a query parameter) and how it is removed before the request goes on.

use super::super::api_key::{query_param, without_query_param};
use crate::cluster::sticky::cookie;
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use sluice_config::TokenSource;
use std::borrow::Cow;

/// The token of the first source, in order, that has a non-empty one; borrowed from the
/// request unless it had to be decoded from the query.
pub fn find<'a>(sources: &[TokenSource], parts: &'a Parts) -> Option<Cow<'a, str>> {
    sources.iter().find_map(|source| {
        let token = match source {
            TokenSource::Header(name) => {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Cow::Borrowed(bearer(value, *name == AUTHORIZATION)?)
            }
            TokenSource::Cookie(name) => Cow::Borrowed(cookie(&parts.headers, name)?),
            TokenSource::Query(name) => {
                Cow::Owned(String::from_utf8(query_param(parts.uri.query()?, name)?).ok()?)
            }
        };
        Some(token).filter(|t| !t.is_empty())
    })
}

/// Removes every source's token: headers, the cookie (the other cookies stay) and the
/// query parameter (the rest of the query stays, in order).
pub fn hide(sources: &[TokenSource], parts: &mut Parts) {
    for source in sources {
        match source {
            TokenSource::Header(name) => {
                parts.headers.remove(name);
            }
            TokenSource::Cookie(name) => without_cookie(&mut parts.headers, name),
            TokenSource::Query(name) => parts.uri = without_query_param(&parts.uri, name),
        }
    }
}

/// The token of `Bearer TOKEN` (the scheme in any case). With `required`, a value in
/// another scheme (`Basic ...`) has no token; otherwise the whole value is the token.
fn bearer(value: &str, required: bool) -> Option<&str> {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
        _ if required => None,
        _ => Some(value),
    }
}

fn without_cookie(headers: &mut HeaderMap, name: &str) {
    if cookie(headers, name).is_none() {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .map(str::to_string)
        .collect();
    headers.remove(COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn all() -> Vec<TokenSource> {
        vec![
            TokenSource::Header(AUTHORIZATION),
            TokenSource::Header(HeaderName::from_static("x-token")),
            TokenSource::Cookie("session".into()),
            TokenSource::Query("access_token".into()),
        ]
    }

    #[test]
    fn authorization_needs_the_bearer_scheme() {
        let s = [TokenSource::Header(AUTHORIZATION)];
        let find = |v: &str| find(&s, &parts("/", &[("authorization", v)])).map(Cow::into_owned);
        assert_eq!(find("Bearer abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(find("bearer   abc ").as_deref(), Some("abc"));
        assert_eq!(find("BEARER abc").as_deref(), Some("abc"));
        assert_eq!(find("Basic dXNlcjpwYXNz"), None);
        assert_eq!(find("abc.def.ghi"), None);
        assert_eq!(find("Bearer "), None);
        assert_eq!(find("Bearer"), None);
    }

    #[test]
    fn sources_are_tried_in_order() {
        let s = all();
        let p = parts(
            "/x?a=1&access_token=from%2Equery",
            &[
                ("x-token", "Bearer from.header"),
                ("cookie", "a=b; session=from.cookie"),
            ],
        );
        assert_eq!(find(&s, &p).as_deref(), Some("from.header"));
        let p = parts(
            "/x?access_token=q",
            &[("x-token", ""), ("cookie", "a=b"), ("cookie", "session=c")],
        );
        assert_eq!(find(&s, &p).as_deref(), Some("c"), "a second Cookie header");
        let p = parts("/x?access_token=from%2Equery", &[("x-token", "raw.token")]);
        assert_eq!(find(&s[2..], &p).as_deref(), Some("from.query"));
        assert_eq!(find(&s[1..2], &p).as_deref(), Some("raw.token"));
        assert_eq!(find(&s, &parts("/x?other=1", &[])), None);
    }

    #[test]
    fn hiding_removes_the_token_from_every_source_and_keeps_the_rest() {
        let mut p = parts(
            "/x?a=1&access_token=t&b=2",
            &[
                ("authorization", "Bearer t"),
                ("x-token", "t"),
                ("cookie", "a=1; session=t"),
                ("cookie", "b=2"),
            ],
        );
        hide(&all(), &mut p);
        assert!(p.headers.get("authorization").is_none());
        assert!(p.headers.get("x-token").is_none());
        assert_eq!(
            p.headers.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2"]
        );
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");
        let mut p = parts("/x", &[("cookie", "session=t")]);
        hide(&all(), &mut p);
        assert!(p.headers.get("cookie").is_none());
    }
}
