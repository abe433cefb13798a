//! The chunked transfer coding (RFC 9112, 7.1): a strict decoder that takes chunks out of
//! a read buffer in place, and the framing written around each chunk sent.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

/// The longest chunk-size line (size and extensions) accepted.
const MAX_LINE: usize = 4096;
/// Fields dropped from trailers on the way through.
const NOT_TRAILERS: [http::HeaderName; 8] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::HOST,
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::CONTENT_ENCODING,
];

/// The most trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// A chunked body that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size line too long")]
    LineTooLong,
    #[error("chunk line not ended by CRLF")]
    LineEnd,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid trailer section")]
    Trailers,
}

/// What the next look at the buffer gave.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete, with its trailers if it had any.
    End(Option<HeaderMap>),
    /// More bytes are needed.
    Incomplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Reads a chunked body out of a buffer, as far as the buffer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size }
    }
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = line(buf, MAX_LINE)? else {
                        return Ok(Decoded::Incomplete);
                    };
                    let size = chunk_size(&buf[..line])?;
                    buf.advance(line + 2);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::Incomplete);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(ChunkError::DataEnd);
                        }
                        return Ok(Decoded::Incomplete);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::DataEnd);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Decoded::End(None)),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Decoded::End(None));
        }
        // Lines end in CRLF only: a parser stopping at a bare LF would read a different
        // end of the section than the one found here.
        let end = super::head_end(buf);
        if super::has_bare_lf(&buf[..end.map_or(buf.len(), |e| e + 4)]) {
            return Err(ChunkError::Trailers);
        }
        let Some(end) = end else {
            if buf.len() > MAX_TRAILERS {
                return Err(ChunkError::Trailers);
            }
            return Ok(Decoded::Incomplete);
        };
        if end + 4 > MAX_TRAILERS {
            return Err(ChunkError::Trailers);
        }
        let section = buf.split_to(end + 4).freeze();
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let parsed = match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) if len == section.len() => fields,
            _ => return Err(ChunkError::Trailers),
        };
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for field in parsed {
            let name = http::HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ChunkError::Trailers)?;
            if NOT_TRAILERS.contains(&name) {
                // Framing, routing, connection and content-coding fields have no place
                // in trailers; a receiver that merged them into the head would be misled.
                continue;
            }
            let value = http::HeaderValue::from_maybe_shared(section.slice_ref(field.value))
                .map_err(|_| ChunkError::Trailers)?;
            trailers.append(name, value);
        }
        self.state = State::Done;
        Ok(Decoded::End(Some(trailers)))
    }
}

/// The length of the CRLF-ended line at the start of `buf`, without its CRLF, once it is
/// all there. A bare LF or CR is an error.
fn line(buf: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    // The CR of a line of at most `max` bytes is within the first `max + 1`.
    let seen = &buf[..buf.len().min(max + 1)];
    match memchr::memchr2(b'\r', b'\n', seen) {
        Some(i) if seen[i] == b'\n' => Err(ChunkError::LineEnd),
        Some(i) => match buf.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(i)),
            Some(_) => Err(ChunkError::LineEnd),
        },
        None if buf.len() > max => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then nothing or extensions starting with `;`.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::Size);
    }
    let rest = &line[digits..];
    // Only spaces and tabs (BWS) may come before the extensions.
    let blank = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    let ext = &rest[blank..];
    if !ext.is_empty()
        && (ext[0] != b';' || ext.iter().any(|b| b.is_ascii_control() && *b != b'\t'))
    {
        return Err(ChunkError::Size);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError::Size)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::Size)
}

/// The line written before a chunk of `len` bytes.
pub fn size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The end of a chunked body without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The end of a chunked body with `trailers`.
pub fn last_chunk_with(trailers: &HeaderMap) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End(trailers) => return Ok((out, trailers)),
                Decoded::Incomplete => {
                    if fed == input.len() {
                        return Err(ChunkError::Trailers);
                    }
                    let next = (fed + split.max(1)).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn reads_chunks_extensions_and_trailers() {
        let (data, trailers) =
            decode_all(b"5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nx-sum: 9\r\n\r\n", 3).expect("valid");
        assert_eq!(data, b"hello!");
        assert_eq!(trailers.expect("trailers")["x-sum"], "9");
        assert_eq!(decode_all(b"0\r\n\r\n", 1).expect("empty").0, b"");
    }

    #[test]
    fn framing_and_routing_fields_are_dropped_from_trailers() {
        let (_, trailers) = decode_all(
            b"0\r\nContent-Length: 9\r\nHost: evil\r\nX-Sum: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            7,
        )
        .expect("valid");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers.len(), 1, "{trailers:?}");
        assert_eq!(trailers["x-sum"], "1");
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A chunk-size line one byte longer than `MAX_LINE`, its CR the last byte the line
    /// finder looks at: it must be refused, not waited on while the buffer grows.
    #[test]
    fn an_overlong_chunk_line_ending_at_the_look_limit_is_refused() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'0'; MAX_LINE + 1]);
        buf.extend_from_slice(b"\r");
        // The client keeps sending: the buffer grows, the decoder keeps waiting.
        for _ in 0..64 {
            buf.extend_from_slice(&[b'x'; 16 * 1024]);
            match decoder.decode(&mut buf) {
                Err(_) => return,
                Ok(Decoded::Incomplete) => {}
                Ok(other) => panic!("decoded {other:?}"),
            }
        }
        panic!(
            "still waiting for the end of a chunk line with {} bytes buffered",
            buf.len()
        );
    }

    /// A trailer section that httparse ends early (at a bare-LF empty line) must not
    /// swallow the bytes behind that end: a bare LF is a 400 (HARDENING.md), and what
    /// follows would be another request to a front end that stops at `\n\n`.
    #[test]
    fn trailers_with_bare_lf_are_refused_not_swallowed() {
        for wire in [
            &b"0\r\nX-A: 1\n\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"0\r\nX-A: 1\nX-B: 2\r\n\r\n",
        ] {
            let mut decoder = ChunkedDecoder::default();
            let mut buf = BytesMut::from(wire);
            let result = decoder.decode(&mut buf);
            assert!(
                result.is_err(),
                "{:?} decoded as {result:?}, {:?} left",
                String::from_utf8_lossy(wire),
                String::from_utf8_lossy(&buf)
            );
        }
    }

    /// Only SP and HTAB may sit between a chunk size and its extensions (RFC 9112 7.1.1,
    /// BWS); `trim_ascii_start` also drops form feeds, so `5\x0c` reads as size 5 where
    /// hyper and most parsers refuse it.
    #[test]
    fn a_form_feed_after_the_chunk_size_is_refused() {
        assert!(decode_all(b"5\x0c\r\nhello\r\n0\r\n\r\n", 64).is_err());
    }

    proptest! {
        #[test]
        fn any_chunking_and_any_split_decode_to_the_same_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..8),
            split in 1usize..40,
        ) {
            let mut wire = Vec::new();
            for chunk in &chunks {
                wire.extend_from_slice(&size_line(chunk.len()));
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(LAST_CHUNK);
            let (data, trailers) = decode_all(&wire, split).expect("valid");
            prop_assert_eq!(data, chunks.concat());
            prop_assert!(trailers.is_none());
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200), split in 1usize..20) {
            let _ = decode_all(&input, split);
        }
    }
}
