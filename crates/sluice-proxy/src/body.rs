//! The body sent to the client: streamed from the target or built by the gateway. It
//! carries the request's record, so the access log line and the metrics are written
//! when the last byte has gone (or the client left).

use crate::metrics::{Metrics, RouteSeries};
use crate::protocol::SendWatch;
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A response body. Its state is boxed: a response moves through several layers of the
/// request's future, and a pointer moves more cheaply than the state's 400 bytes.
#[derive(Debug)]
pub struct ResponseBody(Box<State>);

#[derive(Debug)]
struct State {
    inner: Inner,
    record: Option<RequestRecord>,
    /// Released when the body ends: the request's count at its target and its slot in
    /// the cluster.
    held: Option<Held>,
    /// `X-Request-Id` for the client, carried beside the headers: the HTTP/1.1 writer puts
    /// it straight into the head, HTTP/2 into the header map.
    request_id: Option<HeaderValue>,
    /// Over HTTP/2, told when a chunk is handed over and when the next one is asked for,
    /// so a stream whose client takes nothing can be reset after `send_timeout`.
    sending: Option<Arc<SendWatch>>,
}

/// What a proxied request holds until its response has been sent.
#[derive(Debug)]
pub struct Held {
    pub in_flight: crate::cluster::InFlight,
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    pub route: Option<crate::counted::Counted>,
}

#[derive(Debug)]
enum Inner {
    Upstream(UpstreamBody, Option<Idle>),
    Full(Option<Bytes>),
}

/// The response body's idle timeout: the longest quiet gap between two frames.
#[derive(Debug)]
struct Idle {
    after: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// The target sent nothing for the route's `idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the target sent no response data for {0:?} (idle_timeout)")]
pub struct IdleTimeout(Duration);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What is known of a request when its response starts, completed when it ends.
#[derive(Debug)]
pub struct RequestRecord {
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub start: Instant,
    pub method: Method,
    pub path: String,
    pub route: Arc<RouteSeries>,
    pub target: Option<Arc<str>>,
    /// Who the request came from, when a middleware named them.
    pub consumer: Option<Arc<str>>,
    pub status: StatusCode,
    pub request_id: http::HeaderValue,
    pub bytes: u64,
}

impl ResponseBody {
    /// A body streamed from the target, cut off when it is quiet for `idle_timeout`.
    pub fn upstream(body: UpstreamBody, idle_timeout: Option<Duration>) -> Self {
        let idle = idle_timeout.map(|after| Idle {
            after,
            timer: Box::pin(tokio::time::sleep(after)),
        });
        ResponseBody(Box::new(State {
            inner: Inner::Upstream(body, idle),
            record: None,
            held: None,
            request_id: None,
            sending: None,
        }))
    }

    /// A body the gateway wrote.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ResponseBody(Box::new(State {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            record: None,
            held: None,
            request_id: None,
            sending: None,
        }))
    }

    /// The `X-Request-Id` the client gets, in place of any in the headers.
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.0.request_id = Some(id);
    }

    /// Takes the `X-Request-Id` for the client's response head.
    pub fn take_request_id(&mut self) -> Option<HeaderValue> {
        self.0.request_id.take()
    }

    /// Attaches the record finished when the body ends or is dropped.
    pub fn set_record(&mut self, record: RequestRecord) {
        self.0.record = Some(record);
    }

    /// The target the body comes from, once the record names it.
    pub fn target(&self) -> Option<&Arc<str>> {
        self.0.record.as_ref()?.target.as_ref()
    }

    /// Reports to `watch` as the body is asked for chunks and hands them over.
    pub fn report_sending(&mut self, watch: Arc<SendWatch>) {
        self.0.sending = Some(watch);
    }

    /// Holds `held` until the body ends or is dropped.
    pub fn hold(&mut self, held: Held) {
        self.0.held = Some(held);
    }
}

impl State {
    fn finish(&mut self, complete: bool) {
        self.held = None;
        if let Some(record) = self.record.take() {
            record.finish(complete);
        }
    }
}

impl RequestRecord {
    fn finish(self, complete: bool) {
        let elapsed = self.start.elapsed();
        let m = &self.metrics;
        m.active_requests.dec();
        self.route.record(
            m,
            (&self.method).into(),
            self.status.into(),
            elapsed.as_secs_f64(),
        );
        if self.access_log {
            crate::access_log::write(&crate::access_log::Line {
                method: self.method.as_str(),
                path: &self.path,
                route: &self.route.label,
                status: self.status.as_u16(),
                upstream: self.target.as_deref().unwrap_or("-"),
                consumer: self.consumer.as_deref().unwrap_or("-"),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                bytes: self.bytes,
                request_id: self.request_id.to_str().unwrap_or(""),
                complete,
            });
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self.get_mut().0;
        if let Some(sending) = &this.sending {
            sending.asked();
        }
        let polled = match &mut this.inner {
            Inner::Upstream(body, idle) => match (Pin::new(body).poll_frame(cx), idle) {
                (Poll::Pending, Some(idle)) => {
                    if idle.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    tracing::warn!(after = ?idle.after, "response cut off: the target went quiet for the route's idle_timeout");
                    Poll::Ready(Some(Err(Box::new(IdleTimeout(idle.after)) as BoxError)))
                }
                (Poll::Ready(frame), Some(idle)) => {
                    let next = tokio::time::Instant::now() + idle.after;
                    idle.timer.as_mut().reset(next);
                    Poll::Ready(frame)
                }
                (polled, _) => polled,
            },
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                    record.bytes += data.len() as u64;
                }
                if let Some(sending) = &this.sending {
                    sending.handed();
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.0.inner {
            Inner::Upstream(body, _) => body.is_end_stream(),
            Inner::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0.inner {
            Inner::Upstream(body, _) => body.size_hint(),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.0.finish(complete);
    }
}
