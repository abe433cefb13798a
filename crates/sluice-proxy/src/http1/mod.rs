//! Sluice's own HTTP/1.1 wire codec, used on both sides of the proxy: heads parsed
//! straight into `http` types over one read buffer, bodies framed in place.

pub mod chunked;
pub mod deadline;
pub mod framing;
pub mod write;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderName;
use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use tokio::io::AsyncRead;

/// Where the blank line that ends a message head starts, searched by one finder built
/// once.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    static FINDER: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    FINDER.find(buf)
}

/// Whether a line in `bytes` ends in a LF without its CR.
pub fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|i| i == 0 || bytes[i - 1] != b'\r')
}

/// Which of the headers that shape a message's framing its head carries, noted while its
/// fields are read, so that a head without them costs no lookup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// `Content-Length`, read as it is noted: `Some(Ok(n))` when every copy says `n`.
    pub content_length: Option<Result<u64, framing::HeadFramingError>>,
    pub transfer_encoding: bool,
}

impl Seen {
    pub fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == CONTENT_LENGTH {
            let length = framing::parse_length(value);
            self.content_length = match self.content_length {
                None => Some(length),
                Some(Ok(n)) if length == Ok(n) => Some(Ok(n)),
                Some(_) => Some(Err(framing::HeadFramingError::ContentLength)),
            };
        }
        self.transfer_encoding |= *name == TRANSFER_ENCODING;
    }
}

/// How much a read asks for at least.
pub const READ_CHUNK: usize = 8 * 1024;

/// Reads what the stream has into `buf`; `Ok(0)` at its end.
pub fn poll_read<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// What the `Connection` headers of a message say.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

impl ConnectionTokens {
    /// Reads one `Connection` value; `true` when it names other headers.
    pub fn read(&mut self, value: &[u8]) -> bool {
        let mut names_others = false;
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                names_others = true;
            }
        }
        names_others
    }
}
