//! A client's HTTP/1.1 request body, read straight from the connection: the body takes
//! the connection's read side while it is read, and gives it back when it ends (or is
//! dropped), so the connection can read the next request.

use super::Reader;
use crate::http1::chunked::Decoded;
use crate::http1::framing::{Framing, FramingError};
use crate::http1::poll_read;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// A client's request body that cannot be read: the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("invalid request body: {0}")]
    Framing(#[from] FramingError),
    #[error("the client's connection failed while sending the request body: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a request body returns the connection's read side. One per connection.
#[derive(Default)]
pub struct Home {
    /// The read side, and whether the body was read to its end.
    back: Mutex<Option<(Reader, bool)>>,
    /// The body was asked for while the client waits for `100 Continue`: the flag says
    /// so, the notification wakes the connection (and may be left over from an earlier
    /// request, which the flag tells apart).
    want_continue: AtomicBool,
    continue_wanted: Notify,
}

impl Home {
    fn put(&self, reader: Reader, complete: bool) {
        *self.back.lock().unwrap_or_else(PoisonError::into_inner) = Some((reader, complete));
    }

    /// The read side if the body gave it back, and only when read to its end unless
    /// `any`; otherwise it stays here.
    fn take(&self, any: bool) -> Option<Reader> {
        let mut back = self.back.lock().unwrap_or_else(PoisonError::into_inner);
        if any || back.as_ref().is_some_and(|(_, complete)| *complete) {
            return back.take().map(|(reader, _)| reader);
        }
        None
    }

    /// The read side, when the body gave it back after reading to its end.
    pub fn take_complete(&self) -> Option<Reader> {
        self.take(false)
    }

    /// The read side, whether or not the body was read to its end (to close with).
    pub fn take_any(&self) -> Option<Reader> {
        self.take(true)
    }

    /// Completes when this request's body is first asked for.
    pub async fn continue_wanted(&self) {
        loop {
            self.continue_wanted.notified().await;
            if self.want_continue.swap(false, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// A new request starts: nothing asked for its body yet.
    pub fn expect_continue(&self) {
        self.want_continue.store(false, Ordering::Release);
    }
}

/// A request body read from the client's HTTP/1.1 connection.
pub struct H1RequestBody {
    reader: Option<Reader>,
    framing: Framing,
    home: Arc<Home>,
    /// The client waits for `100 Continue` before sending the body.
    expect_continue: bool,
    ended: bool,
}

impl std::fmt::Debug for H1RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1RequestBody")
            .field("framing", &self.framing)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl H1RequestBody {
    pub fn new(reader: Reader, framing: Framing, home: Arc<Home>, expect_continue: bool) -> Self {
        H1RequestBody {
            reader: Some(reader),
            framing,
            home,
            expect_continue,
            ended: false,
        }
    }

    fn end(&mut self) {
        self.ended = true;
        if let Some(reader) = self.reader.take() {
            self.home.put(reader, true);
        }
    }
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.expect_continue) {
            this.home.want_continue.store(true, Ordering::Release);
            this.home.continue_wanted.notify_one();
        }
        loop {
            let Some(reader) = this.reader.as_mut() else {
                return Poll::Ready(None);
            };
            let failed: RequestBodyError = match this.framing.decode(&mut reader.buf) {
                Ok(Decoded::Data(data)) => {
                    if this.framing.is_done() {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End(trailers)) => {
                    this.end();
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                Ok(Decoded::Incomplete) => match poll_read(&mut reader.io, cx, &mut reader.buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => FramingError::Truncated.into(),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => e.into(),
                },
                Err(e) => e.into(),
            };
            // The connection cannot carry another request; it is given back only to be
            // closed.
            if let Some(reader) = this.reader.take() {
                this.home.put(reader, false);
            }
            return Poll::Ready(Some(Err(Box::new(failed))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for H1RequestBody {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            let complete = self.framing.is_done();
            self.home.put(reader, complete);
        }
    }
}
