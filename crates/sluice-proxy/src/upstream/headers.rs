//! Header handling between client and target: hop-by-hop headers removed both ways
//! (including every header `Connection` names), framing left to the gateway, and the
//! forwarding headers the gateway owns set.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and `Content-Length` when `Transfer-Encoding` came with it
/// (the gateway re-frames). `TE: trailers` survives so that trailers keep flowing.
/// Returns the `Upgrade` value when the message asked to switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the names: which of them are here (most messages carry none, or
    // only `Connection: keep-alive`).
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return None;
    }
    let has = |name: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .is_some_and(|i| present & (1 << i) != 0)
    };
    let mut upgrade = None;
    if has(&header::CONNECTION) {
        // The other headers `Connection` names; those that are hop-by-hop anyway (and
        // `close`) need no lookup of their own.
        let mut named: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
        {
            if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade = headers.get(header::UPGRADE).cloned();
            } else if !token.eq_ignore_ascii_case(b"close")
                && !token.eq_ignore_ascii_case(b"keep-alive")
            {
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    let trailers = has(&header::TE)
        && headers.get_all(header::TE).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    if has(&header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    upgrade
}

/// Puts back the headers that ask the target to switch protocols.
pub fn set_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Appends the client (its address as header text) to `X-Forwarded-For`; sets
/// `X-Forwarded-Proto` and `-Host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: Option<&HeaderValue>,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    if let Some(ip) = client {
        let mut previous = headers.get_all(&X_FORWARDED_FOR).iter();
        let value = match (previous.next(), previous.next()) {
            (None, _) => Some(ip.clone()),
            (Some(first), None) => joined(&[first, ip]),
            (Some(first), Some(second)) => {
                let mut all = vec![first, second];
                all.extend(previous);
                all.push(ip);
                joined(&all)
            }
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// `a, b, c`.
fn joined(values: &[&HeaderValue]) -> Option<HeaderValue> {
    let mut out = Vec::with_capacity(values.iter().map(|v| v.len() + 2).sum());
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&out).ok()
}

/// A client address as header text, written once per connection.
pub fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "gzip, trailers"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "y"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["te", "x-kept"]);
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    }

    #[test]
    fn every_connection_header_counts() {
        let mut h = map(&[
            ("connection", "close"),
            ("connection", " X-One ,x-two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-kept", "y"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn reports_upgrade_only_when_connection_names_it() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(
            strip_hop_by_hop(&mut h),
            Some(HeaderValue::from_static("websocket"))
        );
        let mut h = map(&[("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert!(h.get("upgrade").is_none());
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(
            &mut h,
            Some(&ip_header([127, 0, 0, 1].into())),
            "http",
            Some(&HeaderValue::from_static("a.com")),
        );
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"10.0.0.1, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        assert_eq!(
            h.get("x-forwarded-host").map(|v| v.as_bytes()),
            Some(&b"a.com"[..])
        );
    }
}
