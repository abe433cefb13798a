//! How an HTTP/1.1 message body is delimited (RFC 9112, 6): by length, by chunks, or by
//! the connection's end; read out of a buffer as far as it goes.

use super::chunked::{ChunkError, ChunkedDecoder, Decoded};
use super::Seen;
use bytes::BytesMut;
use http::header::TRANSFER_ENCODING;
use http::HeaderMap;

/// How a body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the connection closes (responses only).
    Close,
}

/// A body that ended wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("the connection closed before the end of the body")]
    Truncated,
}

impl Framing {
    /// Whether nothing more belongs to the body.
    pub fn is_done(&self) -> bool {
        match self {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(chunks) => chunks.is_done(),
            Framing::Close => false,
        }
    }

    /// The exact number of bytes left, when known.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Framing::Length(left) => Some(*left),
            _ => None,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        match self {
            Framing::Length(0) => Ok(Decoded::End(None)),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::Incomplete);
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Framing::Chunked(chunks) => Ok(chunks.decode(buf)?),
            Framing::Close if buf.is_empty() => Ok(Decoded::Incomplete),
            Framing::Close => Ok(Decoded::Data(buf.split().freeze())),
        }
    }

    /// What the connection's end means for the body.
    pub fn at_eof(&self) -> Result<(), FramingError> {
        match self {
            Framing::Close => Ok(()),
            framing if framing.is_done() => Ok(()),
            _ => Err(FramingError::Truncated),
        }
    }
}

/// A `Content-Length` or `Transfer-Encoding` that makes the message unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadFramingError {
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("only `Transfer-Encoding: chunked` is supported")]
    TransferEncoding,
}

/// The declared framing of a message: `Ok(None)` when it declares none. `Content-Length`
/// must be digits only, and every copy the same; a `Transfer-Encoding` must be exactly
/// `chunked` when `strict_te`, and otherwise end in `chunked` (a response coded any other
/// way is read to the connection's end). `chunked` wins over a length, and the second
/// value says that both were there.
pub fn declared(
    headers: &HeaderMap,
    strict_te: bool,
    seen: Seen,
) -> Result<(Option<Framing>, bool), HeadFramingError> {
    let length = seen.content_length.transpose()?;
    if !seen.transfer_encoding {
        return Ok((length.map(Framing::Length), false));
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok((length.map(Framing::Length), false));
    };
    let both = length.is_some();
    if strict_te {
        if codings.next().is_some()
            || !first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(HeadFramingError::TransferEncoding);
        }
        return Ok((Some(Framing::Chunked(ChunkedDecoder::default())), both));
    }
    let last = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .unwrap_or(first)
        .as_bytes();
    let last_coding = last
        .rsplit(|b| *b == b',')
        .next()
        .unwrap_or(last)
        .trim_ascii();
    if last_coding.eq_ignore_ascii_case(b"chunked") {
        Ok((Some(Framing::Chunked(ChunkedDecoder::default())), both))
    } else {
        Ok((Some(Framing::Close), both))
    }
}

/// One `Content-Length` value: digits only.
pub fn parse_length(digits: &[u8]) -> Result<u64, HeadFramingError> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadFramingError::ContentLength);
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// What a parser notes of `headers`.
    fn seen(headers: &HeaderMap) -> Seen {
        let mut seen = Seen::default();
        for (name, value) in headers {
            seen.note(name, value.as_bytes());
        }
        seen
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn strict_request_framing() {
        let ok = |p: &[(&'static str, &'static str)]| {
            let h = headers(p);
            declared(&h, true, seen(&h))
        };
        assert_eq!(ok(&[]), Ok((None, false)));
        assert_eq!(
            ok(&[("content-length", "5")]),
            Ok((Some(Framing::Length(5)), false))
        );
        assert_eq!(
            ok(&[("content-length", "5"), ("content-length", "5")]),
            Ok((Some(Framing::Length(5)), false))
        );
        assert_eq!(
            ok(&[("transfer-encoding", "Chunked"), ("content-length", "4")]),
            Ok((Some(Framing::Chunked(ChunkedDecoder::default())), true))
        );
        for bad in [
            &[("content-length", "+5")][..],
            &[("content-length", "5, 6")],
            &[("content-length", "-1")],
            &[("content-length", "")],
            &[("content-length", "5"), ("content-length", "6")],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "xchunked")],
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lenient_response_codings() {
        let h = headers(&[("transfer-encoding", "gzip, chunked")]);
        let (framing, _) = declared(&h, false, seen(&h)).expect("ok");
        assert!(matches!(framing, Some(Framing::Chunked(_))));
        let (framing, _) = {
            let h = headers(&[("transfer-encoding", "gzip")]);
            declared(&h, false, seen(&h))
        }
        .expect("ok");
        assert_eq!(framing, Some(Framing::Close));
    }

    #[test]
    fn length_bodies_end_exactly() {
        let mut framing = Framing::Length(5);
        let mut buf = BytesMut::from(&b"helloGET"[..]);
        assert_eq!(
            framing.decode(&mut buf),
            Ok(Decoded::Data(bytes::Bytes::from_static(b"hello")))
        );
        assert!(framing.is_done());
        assert_eq!(&buf[..], b"GET");
        assert_eq!(framing.decode(&mut buf), Ok(Decoded::End(None)));
        assert_eq!(Framing::Length(1).at_eof(), Err(FramingError::Truncated));
    }
}
