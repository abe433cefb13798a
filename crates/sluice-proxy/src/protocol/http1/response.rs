//! Writing a response head to an HTTP/1.1 client: the status line, the headers without
//! any framing the target or a middleware put there, then Sluice's own framing, `Date`
//! and `Connection`.

use crate::http1::write::{self, BodyFraming};
use crate::lifecycle::X_REQUEST_ID;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::response::Parts;
use http::{StatusCode, Version};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the response head depends on besides the response.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub method_is_head: bool,
    pub version: Version,
    /// The connection may stay open after this response, as far as the request and the
    /// gateway are concerned.
    pub keep_alive: bool,
}

/// The head, how the body follows it, and whether the connection stays open after it.
/// `request_id` is written in place of any `X-Request-Id` in the headers.
pub fn head(
    buf: &mut BytesMut,
    parts: &Parts,
    request_id: Option<&HeaderValue>,
    exact: Option<u64>,
    exchange: Exchange,
) -> (Bytes, Option<BodyFraming>, bool) {
    let status = parts.status;
    write::status_line(buf, status);
    let mut keep_alive = exchange.keep_alive;
    // Status codes that never have a body; a HEAD response and a 304 keep the length the
    // target gave, describing the body they do not carry.
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || exchange.method_is_head;
    let keep_length = status == StatusCode::NOT_MODIFIED || exchange.method_is_head;
    let mut has_date = false;
    // The length a HEAD or 304 answer passes on, written once.
    let mut length = None;
    for (name, value) in &parts.headers {
        if name == CONNECTION {
            keep_alive &= !value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            continue;
        }
        if name == CONTENT_LENGTH {
            length = length.or(Some(value));
            continue;
        }
        if name == TRANSFER_ENCODING || (request_id.is_some() && name == X_REQUEST_ID) {
            continue;
        }
        has_date |= name == DATE;
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
    if let Some(id) = request_id {
        buf.put_slice(b"x-request-id: ");
        buf.put_slice(id.as_bytes());
        buf.put_slice(b"\r\n");
    }
    if !has_date {
        date(buf);
    }
    if let Some(length) = length.filter(|_| keep_length) {
        buf.put_slice(b"content-length: ");
        buf.put_slice(length.as_bytes());
        buf.put_slice(b"\r\n");
    }
    let framing = if bodiless {
        None
    } else if let Some(n) = exact {
        write::content_length(buf, n);
        Some(BodyFraming::Length(n))
    } else if exchange.version == Version::HTTP_11 {
        buf.put_slice(b"transfer-encoding: chunked\r\n");
        Some(BodyFraming::Chunked)
    } else {
        keep_alive = false;
        Some(BodyFraming::Close)
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        buf.put_slice(b"connection: upgrade\r\n");
    } else if !keep_alive {
        buf.put_slice(b"connection: close\r\n");
    } else if exchange.version == Version::HTTP_10 {
        buf.put_slice(b"connection: keep-alive\r\n");
    }
    buf.put_slice(b"\r\n");
    (buf.split().freeze(), framing, keep_alive)
}

thread_local! {
    /// The `Date` line, formatted once a second.
    static DATE_LINE: RefCell<(u64, [u8; 37])> = const { RefCell::new((0, [0; 37])) };
}

/// Appends `date: <IMF-fixdate>\r\n`.
fn date(buf: &mut BytesMut) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_LINE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            let mut line = [0u8; 37];
            let formatted = format!("date: {text}\r\n");
            if formatted.len() == line.len() {
                line.copy_from_slice(formatted.as_bytes());
                *cached = (second, line);
            } else {
                buf.put_slice(formatted.as_bytes());
                return;
            }
        }
        buf.put_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    fn written(
        response: Response<()>,
        exact: Option<u64>,
        exchange: Exchange,
    ) -> (String, Option<BodyFraming>, bool) {
        let (parts, ()) = response.into_parts();
        let (bytes, framing, keep) = head(&mut BytesMut::new(), &parts, None, exact, exchange);
        (String::from_utf8_lossy(&bytes).into_owned(), framing, keep)
    }

    const GET11: Exchange = Exchange {
        method_is_head: false,
        version: Version::HTTP_11,
        keep_alive: true,
    };

    #[test]
    fn the_request_id_replaces_one_in_the_headers() {
        let response = Response::builder()
            .header("x-request-id", "from-the-target")
            .header("x-other", "kept")
            .body(())
            .expect("response");
        let (parts, ()) = response.into_parts();
        let id = HeaderValue::from_static("gateway-id");
        let (bytes, _, _) = head(&mut BytesMut::new(), &parts, Some(&id), Some(0), GET11);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("x-request-id: gateway-id\r\n"), "{text}");
        assert!(!text.contains("from-the-target"), "{text}");
        assert!(text.contains("x-other: kept\r\n"), "{text}");
    }

    #[test]
    fn framing_follows_the_body_and_the_client() {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        let (text, framing, keep) = written(response, Some(5), GET11);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-length: 5\r\n") && !text.contains("99"),
            "{text}"
        );
        assert!(
            text.contains("date: ") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        assert_eq!((framing, keep), (Some(BodyFraming::Length(5)), true));

        let (text, framing, _) = written(Response::new(()), None, GET11);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(framing, Some(BodyFraming::Chunked));

        let http10 = Exchange {
            version: Version::HTTP_10,
            ..GET11
        };
        let (text, framing, keep) = written(Response::new(()), None, http10);
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((framing, keep), (Some(BodyFraming::Close), false));
    }

    #[test]
    fn bodiless_answers_and_close() {
        let mut no_content = Response::new(());
        *no_content.status_mut() = StatusCode::NO_CONTENT;
        let (text, framing, _) = written(no_content, Some(0), GET11);
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, None);

        let mut closing = Response::new(());
        closing
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let (text, _, keep) = written(closing, Some(0), GET11);
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(!keep);
    }
}
