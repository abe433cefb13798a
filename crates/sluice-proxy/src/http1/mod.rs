//! Sluice's own HTTP/1.1 wire codec, used on both sides of the proxy: heads parsed
//! straight into `http` types over one read buffer, bodies framed in place.

pub mod chunked;
pub mod framing;
pub mod write;

use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncRead;

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
