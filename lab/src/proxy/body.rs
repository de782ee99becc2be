//! Response bodies: the upstream's, streamed under `--read-timeout`, or
//! one the proxy makes (status page, error pages).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::Proxy;

/// A response body to the client: the upstream's, or one the proxy made
/// whole (the stub_status page, an error page).
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// The error a [`ProxyBody`] yields: the upstream's (hyper's) or a
/// [`UpstreamBody`] timeout.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body from the upstream, streamed frame by frame (never
/// buffered whole). Like nginx's `proxy_read_timeout`, `--read-timeout`
/// also bounds each wait for more of it: past that, the body yields an
/// error and hyper cuts the client connection (no last chunk), as nginx
/// does. When it is dropped (the exchange is over), the worker's
/// keep-alive connections to that upstream are trimmed to `--keepalive`.
pub struct UpstreamBody {
    inner: Incoming,
    read_timeout: Duration,
    /// Armed when a wait begins (most bodies never wait: no timer).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    trim: Option<(Arc<Proxy>, usize)>,
}

impl UpstreamBody {
    /// `inner` under `read_timeout`; on drop, trims `proxy`'s pool of
    /// upstream `idx` when `trim` is given.
    pub(super) fn new(
        inner: Incoming,
        read_timeout: Duration,
        trim: Option<(Arc<Proxy>, usize)>,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            read_timeout,
            timer: None,
            waiting: false,
            trim,
        }
    }
}

/// The upstream sent nothing for `--read-timeout` in a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream timed out ({0:?}) while reading the response body")]
struct BodyTimeout(Duration);

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(r.map(|r| r.map_err(Into::into)));
        }
        if !this.waiting {
            this.waiting = true;
            let deadline = tokio::time::Instant::now() + this.read_timeout;
            match &mut this.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let timer = this.timer.as_mut().expect("armed");
        if timer.as_mut().poll(cx).is_ready() {
            let e = BodyTimeout(this.read_timeout);
            tracing::warn!(error = %e, "upstream timed out");
            return Poll::Ready(Some(Err(e.into())));
        }
        Poll::Pending
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some((proxy, idx)) = self.trim.take() {
            proxy.trim_idle(idx);
        }
    }
}
