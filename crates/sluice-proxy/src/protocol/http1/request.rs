//! Parsing a client's HTTP/1.1 request head straight into `http` types, sharing the read
//! buffer's bytes, and the strict checks HARDENING.md asks of it: bare line feeds,
//! framing headers, sizes.

use crate::http1::framing::{declared, Framing};
use crate::http1::{has_bare_lf, head_end, ConnectionTokens, Seen};
use crate::rescue::ProxyError;
use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use std::mem::MaybeUninit;

/// The most header fields parsed from one head.
const MAX_FIELDS: usize = 256;

/// A parsed request head, with what the connection needs to know about it.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// How the body is delimited; `None`: no body.
    pub framing: Option<Framing>,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The client asks to switch protocols.
    pub upgrade: bool,
}

/// Limits on a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The most bytes a head may take in the read buffer.
    pub max_head: usize,
    pub max_headers: usize,
}

/// Parses the head at the start of `buf` once it is all there, taking it out of `buf`.
/// The head is split off the buffer first and parsed in place: header values share its
/// bytes.
pub fn parse(buf: &mut BytesMut, limits: HeadLimits) -> Result<Option<Head>, ProxyError> {
    let Some(end) = head_end(buf) else {
        if has_bare_lf(buf) {
            return Err(bare_lf());
        }
        if buf.len() > limits.max_head {
            return Err(too_large(buf, limits));
        }
        return Ok(None);
    };
    let len = end + 4;
    if len > limits.max_head {
        return Err(too_large(&buf[..len], limits));
    }
    if has_bare_lf(&buf[..len]) {
        return Err(bare_lf());
    }
    let head = buf.split_to(len).freeze();
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(&head, &mut fields) {
        Ok(httparse::Status::Complete(parsed)) if parsed == len => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::HeadersTooLarge("too many header fields"))
        }
        _ => return Err(ProxyError::BadRequest("malformed request head")),
    }
    let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
        .map_err(|_| ProxyError::BadRequest("invalid method"))?;
    let version = if request.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if request.headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge("too many header fields"));
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(request.path.unwrap_or("").as_bytes()))
        .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    // Room for the headers the gateway adds on the way to the target.
    let mut headers = HeaderMap::with_capacity(request.headers.len() + 6);
    let mut seen = Seen::default();
    let mut expect = false;
    let mut tokens = ConnectionTokens::default();
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| ProxyError::BadRequest("invalid header name"))?;
        seen.note(&name, field.value);
        expect |= name == EXPECT;
        // A `Connection` that only says `close` or `keep-alive` is read here and never
        // kept; one naming other headers (`upgrade` among them) stays for the hop-by-hop
        // stripping, which removes it with what it names.
        if name == CONNECTION && !tokens.read(field.value) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
            .map_err(|_| ProxyError::BadRequest("invalid header value"))?;
        headers.append(name, value);
    }
    let (framing, both) =
        declared(&headers, true, seen).map_err(|e| ProxyError::BadFraming(framing_text(e)))?;
    if both {
        // Chunked wins; the length is never forwarded, and the connection closes after.
        headers.remove(CONTENT_LENGTH);
    }
    let framing = framing.filter(|f| *f != Framing::Length(0));
    let ConnectionTokens {
        close,
        keep_alive: keep_alive_token,
        upgrade: upgrade_token,
    } = tokens;
    // An HTTP/1.0 message with Transfer-Encoding has faulty framing (RFC 9112, 6.1): read
    // as chunked, and the connection closes after it.
    let faulty = version == Version::HTTP_10 && seen.transfer_encoding;
    let keep_alive =
        !both && !faulty && !close && (version == Version::HTTP_11 || keep_alive_token);
    let expect_continue = expect
        && version == Version::HTTP_11
        && framing.is_some()
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = version == Version::HTTP_11
        && framing.is_none()
        && upgrade_token
        && headers.contains_key(UPGRADE);
    Ok(Some(Head {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

fn bare_lf() -> ProxyError {
    ProxyError::BadRequest("a line of the request head ends in a bare LF")
}

/// A head over the limit: the URI is what is too long when the request line alone takes
/// over half of the room.
fn too_large(head: &[u8], limits: HeadLimits) -> ProxyError {
    match memchr::memmem::find(head, b"\r\n") {
        Some(line) if line <= limits.max_head / 2 => {
            ProxyError::HeadersTooLarge("header section too large")
        }
        line => ProxyError::UriTooLong(line.unwrap_or(head.len()), limits.max_head / 2),
    }
}

fn framing_text(error: crate::http1::framing::HeadFramingError) -> &'static str {
    match error {
        crate::http1::framing::HeadFramingError::ContentLength => "invalid Content-Length",
        crate::http1::framing::HeadFramingError::TransferEncoding => {
            "only `Transfer-Encoding: chunked` is supported"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head: 8192,
        max_headers: 100,
    };

    fn parsed(text: &str) -> Result<Option<Head>, ProxyError> {
        parse(&mut BytesMut::from(text.as_bytes()), LIMITS)
    }

    #[test]
    fn reads_a_head_and_leaves_the_body() {
        let mut buf =
            BytesMut::from(&b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"[..]);
        let head = parse(&mut buf, LIMITS).expect("valid").expect("complete");
        assert_eq!(
            (head.method, head.uri.path(), head.uri.query()),
            (Method::POST, "/a", Some("b=1"))
        );
        assert_eq!(head.headers["host"], "x");
        assert_eq!(head.framing, Some(Framing::Length(2)));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"hi");
        assert!(parsed("GET / HTTP/1.1\r\nHost: x\r\n")
            .expect("so far")
            .is_none());
    }

    #[test]
    fn keep_alive_upgrade_and_continue() {
        let head = |t: &str| parsed(t).expect("valid").expect("complete");
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            head("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade
        );
        assert!(!head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(
            head("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        let both =
            head("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(!both.keep_alive);
        assert!(!both.headers.contains_key(CONTENT_LENGTH));
    }

    #[test]
    fn rejects_what_hardening_rejects() {
        for bad in [
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\n\r\n",
            "GET / HTTP/1.1\r\nX-A: b\r\n  c\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: b\rX-B: c\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(parsed(bad).is_err(), "{bad:?}");
        }
        for long_uri in [
            format!("GET /{}", "a".repeat(9000)),
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n", "a".repeat(9000)),
        ] {
            assert!(matches!(parsed(&long_uri), Err(ProxyError::UriTooLong(..))));
        }
        let long_header = format!("GET / HTTP/1.1\r\nX-A: {}\r\n", "a".repeat(9000));
        assert!(matches!(
            parsed(&long_header),
            Err(ProxyError::HeadersTooLarge(_))
        ));
    }

    /// RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the
    /// connection closes after it (or the request is refused), whatever `Connection`
    /// says. A front end that reads HTTP/1.0 without chunked would take the chunks for
    /// the next request.
    #[test]
    fn an_http10_request_with_transfer_encoding_never_keeps_the_connection() {
        match parsed(
            "POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        ) {
            Err(_) => {}
            Ok(head) => assert!(!head.expect("complete").keep_alive),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&mut BytesMut::from(&input[..]), LIMITS);
        }
    }
}
