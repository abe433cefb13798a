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

/// The forwarding headers the gateway sets on a request to a target. They stand beside
/// the client's header map rather than in it: the client's headers of the same names
/// stay in the map but are not sent, and an HTTP/1.1 head gets these written straight
/// in (no map insertions on the way).
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// `X-Forwarded-For`: the client's list with its peer appended. `None` (no peer
    /// address, as on a Unix socket): the client's header goes as it came.
    pub forwarded_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    pub proto: HeaderValue,
    /// `X-Forwarded-Host`: the host the client asked for. `None`: the client's is dropped.
    pub host: Option<HeaderValue>,
    /// `X-Request-Id`.
    pub request_id: HeaderValue,
}

impl Forwarding {
    /// `client` is the peer's address as header text; `headers`, the client's.
    pub fn new(
        headers: &HeaderMap,
        client: Option<&HeaderValue>,
        proto: &'static str,
        host: Option<HeaderValue>,
        request_id: HeaderValue,
    ) -> Self {
        let forwarded_for = client.and_then(|ip| {
            let mut previous = headers.get_all(&X_FORWARDED_FOR).iter();
            match (previous.next(), previous.next()) {
                (None, _) => Some(ip.clone()),
                (Some(first), None) => joined(&[first, ip]),
                (Some(first), Some(second)) => {
                    let mut all = vec![first, second];
                    all.extend(previous);
                    all.push(ip);
                    joined(&all)
                }
            }
        });
        Forwarding {
            forwarded_for,
            proto: HeaderValue::from_static(proto),
            host,
            request_id,
        }
    }

    /// What the target gets under `name` when the gateway owns that header: `Some(None)`
    /// for one it drops; `None` for a header left to the client.
    pub fn get(&self, name: &HeaderName) -> Option<Option<&HeaderValue>> {
        if *name == X_FORWARDED_FOR {
            self.forwarded_for.as_ref().map(Some)
        } else if *name == X_FORWARDED_PROTO {
            Some(Some(&self.proto))
        } else if *name == X_FORWARDED_HOST {
            Some(self.host.as_ref())
        } else if *name == crate::lifecycle::X_REQUEST_ID {
            Some(Some(&self.request_id))
        } else {
            None
        }
    }

    /// Whether the client's header `name` gives way to the gateway's.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Sets them in `headers`, for a target whose head is written from the map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.forwarded_for {
            headers.insert(X_FORWARDED_FOR, v.clone());
        }
        headers.insert(X_FORWARDED_PROTO, self.proto.clone());
        match &self.host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
        headers.insert(crate::lifecycle::X_REQUEST_ID, self.request_id.clone());
    }

    /// Writes them as HTTP/1.1 header lines.
    pub fn write(&self, buf: &mut bytes::BytesMut) {
        let mut line = |name_colon: &[u8], value: &HeaderValue| {
            buf.extend_from_slice(name_colon);
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        };
        if let Some(v) = &self.forwarded_for {
            line(b"x-forwarded-for: ", v);
        }
        line(b"x-forwarded-proto: ", &self.proto);
        if let Some(h) = &self.host {
            line(b"x-forwarded-host: ", h);
        }
        line(b"x-request-id: ", &self.request_id);
    }
}

/// What the gateway adds to a request for one target: `Host`, and the forwarding
/// headers. Health checks send none of it.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    pub host: &'a HeaderValue,
    pub forwarding: &'a Forwarding,
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
        let forwarding = Forwarding::new(
            &h,
            Some(&ip_header([127, 0, 0, 1].into())),
            "http",
            Some(HeaderValue::from_static("a.com")),
            HeaderValue::from_static("id-1"),
        );
        forwarding.apply(&mut h);
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

    #[test]
    fn forwarding_lines_replace_the_clients() {
        let h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-host", "spoofed"),
            ("x-request-id", "theirs"),
        ]);
        let forwarding = Forwarding::new(
            &h,
            Some(&ip_header([127, 0, 0, 1].into())),
            "https",
            None,
            HeaderValue::from_static("ours"),
        );
        for name in [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-request-id",
            "x-forwarded-proto",
        ] {
            assert!(
                forwarding.replaces(&HeaderName::from_static(name)),
                "{name}"
            );
        }
        assert!(!forwarding.replaces(&header::HOST));
        assert_eq!(
            forwarding.get(&HeaderName::from_static("x-forwarded-host")),
            Some(None)
        );
        let mut buf = bytes::BytesMut::new();
        forwarding.write(&mut buf);
        assert_eq!(
            &buf[..],
            &b"x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nx-forwarded-proto: https\r\nx-request-id: ours\r\n"[..]
        );
    }

    #[test]
    fn without_a_peer_the_clients_forwarded_for_goes_as_it_came() {
        let h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let forwarding = Forwarding::new(&h, None, "http", None, HeaderValue::from_static("id"));
        let name = HeaderName::from_static("x-forwarded-for");
        assert!(!forwarding.replaces(&name));
        let mut applied = h.clone();
        forwarding.apply(&mut applied);
        assert_eq!(applied.get(&name), h.get(&name));
    }
}
