//! Opening upstream connections: the socket with its slot under
//! `--max-upstream-connections`, the connect timeout, hyper's handshake.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::error::ConnectError;
use crate::addr::{Addr, Stream};

/// The request half of an upstream connection.
pub(super) type UpstreamSender = SendRequest<Incoming>;

/// An upstream connection: the socket plus its slot under
/// `--max-upstream-connections`, released when the connection closes.
struct UpstreamIo {
    io: TokioIo<Stream>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    /// No `shutdown(SHUT_WR)` before the close: dropping the socket sends
    /// the same FIN (the proxy still closes first, TIME_WAIT stays on its
    /// side) and saves a system call per upstream connection.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A new connection to `addr`, its connection task spawned on the current
/// runtime: a slot from `limit` (when capped) and the `connect()` within
/// `timeout`, then hyper's handshake with `client`.
///
/// Returns the request sender, the handle that aborts (closes) the
/// connection and the connect time (slot wait included, handshake not).
pub(super) async fn connect(
    addr: &Addr,
    limit: Option<&Arc<Semaphore>>,
    timeout: Duration,
    client: &Builder,
) -> Result<(UpstreamSender, AbortHandle, Duration), ConnectError> {
    let start = Instant::now();
    let connect = async {
        let permit = match limit {
            Some(sem) => Some(Arc::clone(sem).acquire_owned().await.expect("never closed")),
            None => None,
        };
        Stream::connect(addr).await.map(|s| (s, permit))
    };
    let (stream, permit) = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::io(addr.to_string(), source)),
        Err(_) => return Err(ConnectError::Timeout(addr.to_string())),
    };
    let connect_time = start.elapsed();
    let io = UpstreamIo {
        io: TokioIo::new(stream),
        _permit: permit,
    };
    let (tx, conn) = client
        .handshake(io)
        .await
        .map_err(|source| ConnectError::Handshake {
            addr: addr.to_string(),
            source,
        })?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection error");
        }
    })
    .abort_handle();
    Ok((tx, task, connect_time))
}
