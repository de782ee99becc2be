//! `sockscope upstream`: lab upstreams, one per way an upstream gets stuck
//! (the README's "An upstream that stops accepting") plus a fast keep-alive
//! server for benchmarks.
//!
//! | behavior | accept | read | answer | close | what the kernel shows |
//! |---|---|---|---|---|---|
//! | `ok` | yes | yes | 200 | after the answer | the server closes first: TIME_WAIT on the upstream side |
//! | `no-accept` | no | | | | the accept queue fills (`SS_CONNECTING` embryos on UNIX) |
//! | `no-read` | yes | no | | never | accepted connections pile up (`SS_CONNECTED`), their receive queues fill |
//! | `no-write` | yes | yes | never | never | accepted connections pile up, requests are drained |
//! | `no-close` | yes | yes | 200 without a length | never | the client waits for EOF until its timeout |
//! | `keepalive` | yes | yes | 200 | when the client does | an HTTP/1.1 keep-alive server (never closes first) |
//!
//! `ok` and `keepalive` use hyper; the faulty ones write fixed bytes on raw
//! sockets, as the C servers of the original write-up do. Everything stops when the caller's
//! stop future resolves.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::addr::{Listener, Stream};
use crate::serve;

/// What the upstream does with each connection (`--behavior`); see the
/// module's table. Parsed from and displayed as its kebab-case name
/// ([`Behavior::NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Answers 200 with [`BODY`], then closes (the server closes first).
    Ok,
    /// Never accepts: connections wait in the accept queue.
    NoAccept,
    /// Accepts and never reads.
    NoRead,
    /// Reads (drains) requests and never answers.
    NoWrite,
    /// Answers 200 without a length and never closes.
    NoClose,
    /// An HTTP/1.1 keep-alive server answering 200 with [`BODY`]; closes
    /// only when the client does.
    Keepalive,
}

impl Behavior {
    /// Every behavior, in the order of [`Behavior::NAMES`].
    pub const ALL: [Behavior; 6] = [
        Behavior::Ok,
        Behavior::NoAccept,
        Behavior::NoRead,
        Behavior::NoWrite,
        Behavior::NoClose,
        Behavior::Keepalive,
    ];
    /// The names `--behavior` takes, in the order of [`Behavior::ALL`].
    pub const NAMES: [&'static str; 6] = [
        "ok",
        "no-accept",
        "no-read",
        "no-write",
        "no-close",
        "keepalive",
    ];

    /// The kebab-case name: `"no-accept"`.
    pub fn name(self) -> &'static str {
        Behavior::NAMES[self as usize]
    }
}

impl fmt::Display for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Behavior {
    /// The names accepted.
    type Err = String;

    /// Exact kebab-case names only (`no-accept`, not `NoAccept`).
    fn from_str(s: &str) -> Result<Behavior, String> {
        Behavior::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("{s:?}: expected one of {}", Behavior::NAMES.join(", ")))
    }
}

/// The body every answering behavior returns.
pub const BODY: &[u8] = b"ok\n";

/// Serves `behavior` on `listener` on the current runtime until `stop`
/// resolves; then every connection is closed (and, for `no-accept`, the
/// listener).
pub async fn run(listener: Listener, behavior: Behavior, stop: impl Future<Output = ()>) {
    if behavior == Behavior::NoAccept {
        // Keep the listener open, never accept: connections queue.
        stop.await;
        drop(listener);
        return;
    }
    let conns = Arc::new(Notify::new());
    let accept = serve::accept_loop(
        &listener,
        || async {},
        |s, ()| spawn_conn(s, behavior, &conns),
    );
    tokio::select! {
        _ = accept => {}
        _ = stop => {}
    }
    // Every connection task waits on this and drops its socket.
    conns.notify_waiters();
}

/// Like [`run`] with `workers` threads (at least one; always one for
/// `no-accept`), each a single-threaded runtime accepting from `listener`,
/// until `stop` resolves; the calling task only waits. Then every worker's
/// connections are closed before this returns.
///
/// Errors: a worker that cannot start (thread, runtime, listener
/// registration), as text naming the worker.
pub async fn run_workers(
    listener: Listener,
    behavior: Behavior,
    workers: usize,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let workers = if behavior == Behavior::NoAccept {
        1
    } else {
        workers
    };
    let worker = |_| move |l| run(l, behavior, std::future::pending());
    serve::run_workers(listener, workers, "upstream-worker", worker, stop).await
}

fn spawn_conn(s: Stream, behavior: Behavior, stop: &Arc<Notify>) {
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let stopped = stop.notified();
        tokio::select! {
            _ = connection(s, behavior) => {}
            _ = stopped => {}
        }
    });
}

async fn hello(req: hyper::Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    // Drain the request body so the client is never blocked writing it.
    let _ = req.into_body().collect().await;
    Ok(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
}

/// Serves one connection according to `behavior`; returns when it is done
/// (or never, for the faulty behaviors that hold the connection).
async fn connection(mut s: Stream, behavior: Behavior) {
    // Only the raw-socket behaviors read into it.
    let buf = || vec![0u8; 16 * 1024];
    match behavior {
        Behavior::Ok | Behavior::Keepalive => {
            let res = hyper::server::conn::http1::Builder::new()
                .keep_alive(behavior == Behavior::Keepalive)
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(s), hyper::service::service_fn(hello))
                .await;
            if let Err(e) = res {
                tracing::debug!(error = %e, "upstream connection error");
            }
        }
        Behavior::NoAccept => unreachable!("never accepted"),
        Behavior::NoRead => std::future::pending().await,
        Behavior::NoWrite => {
            let mut buf = buf();
            // Drain everything, answer nothing, close nothing.
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            std::future::pending().await
        }
        Behavior::NoClose => {
            let mut buf = buf();
            if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                // No Content-Length: the response ends only at EOF, which
                // never comes.
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n")
                    .await;
            }
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests;
