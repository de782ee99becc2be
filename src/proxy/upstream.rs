//! `sockscope upstream`: lab upstreams, one per case of seed 001 plus a fast
//! keep-alive server for benchmarks.
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
//! sockets, as the seed's C servers do. Everything stops on SIGTERM/SIGINT.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::{Listener, shutdown_signal};

/// What the upstream does with each connection (`--behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Behavior {
    Ok,
    NoAccept,
    NoRead,
    NoWrite,
    NoClose,
    Keepalive,
}

/// The body every answering behavior returns.
pub const BODY: &[u8] = b"ok\n";

/// Serves `behavior` on `listener` until SIGTERM/SIGINT or `stop` is
/// notified; then every connection is closed.
pub async fn run(listener: Listener, behavior: Behavior, stop: Arc<Notify>) {
    let stopped = async {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stop.notified() => {}
        }
    };
    serve(listener, behavior, stopped).await;
}

/// Like [`run`] with `workers` threads (at least one), each a
/// single-threaded runtime accepting from `listener`, until SIGTERM/SIGINT:
/// the calling runtime serves as one of them and handles the signal.
pub async fn run_workers(listener: Listener, behavior: Behavior, workers: usize) -> io::Result<()> {
    if workers <= 1 || behavior == Behavior::NoAccept {
        run(listener, behavior, Default::default()).await;
        return Ok(());
    }
    enum Std {
        Tcp(std::net::TcpListener),
        Unix(std::os::unix::net::UnixListener),
    }
    let std_listener = match listener {
        Listener::Tcp(l) => Std::Tcp(l.into_std()?),
        Listener::Unix(l) => Std::Unix(l.into_std()?),
    };
    let clone = |l: &Std| -> io::Result<Std> {
        Ok(match l {
            Std::Tcp(l) => Std::Tcp(l.try_clone()?),
            Std::Unix(l) => Std::Unix(l.try_clone()?),
        })
    };
    let register = |l: Std| -> io::Result<Listener> {
        Ok(match l {
            Std::Tcp(l) => Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            Std::Unix(l) => Listener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    };
    let stop = Arc::new(Notify::new());
    for i in 1..workers {
        let l = clone(&std_listener)?;
        let stop = Arc::clone(&stop);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("upstream-worker-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    match register(l) {
                        Ok(l) => serve(l, behavior, stop.notified()).await,
                        Err(e) => tracing::error!(error = %e, "registering the listener"),
                    }
                })
            })?;
    }
    run(register(std_listener)?, behavior, Arc::clone(&stop)).await;
    // The other workers close their connections too; the process exit
    // that follows ends their threads.
    stop.notify_waiters();
    Ok(())
}

async fn serve(listener: Listener, behavior: Behavior, stopped: impl Future<Output = ()>) {
    if behavior == Behavior::NoAccept {
        // Keep the listener open, never accept: connections queue.
        stopped.await;
        drop(listener);
        return;
    }
    let conns = Arc::new(Notify::new());
    let accept_loop = async {
        loop {
            match &listener {
                Listener::Tcp(l) => match l.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        spawn_conn(s, behavior, &conns);
                    }
                    Err(e) => accept_error(e).await,
                },
                Listener::Unix(l) => match l.accept().await {
                    Ok((s, _)) => spawn_conn(s, behavior, &conns),
                    Err(e) => accept_error(e).await,
                },
            }
        }
    };
    tokio::select! {
        _ = accept_loop => {}
        _ = stopped => {}
    }
    // Every connection task waits on this and drops its socket.
    conns.notify_waiters();
}

async fn accept_error(e: std::io::Error) {
    // EMFILE and friends: back off briefly instead of spinning.
    tracing::warn!(error = %e, "accept() failed");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

fn spawn_conn<S>(s: S, behavior: Behavior, stop: &Arc<Notify>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
async fn connection<S>(mut s: S, behavior: Behavior)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
