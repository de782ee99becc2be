//! The plumbing shared by the proxy and the upstreams: an accept loop, and
//! worker threads that each run one on a single-threaded runtime of its
//! own, all accepting from one listening socket (nginx's worker
//! processes).

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::addr::{Listener, Stream};

/// Accepts from `listener` forever. Before each `accept()`, waits for
/// `ready` (a connection slot, a back-off) and hands its output with the
/// new connection to `serve`, which must not block (it spawns).
///
/// A failed `accept()` (`EMFILE` and friends) is logged and followed by a
/// 10 ms back-off instead of a spin; `EWOULDBLOCK` (another worker took
/// the connection) is not an error.
pub(crate) async fn accept_loop<T, R>(
    listener: &Listener,
    mut ready: impl FnMut() -> R,
    mut serve: impl FnMut(Stream, T),
) where
    R: Future<Output = T>,
{
    loop {
        let token = ready().await;
        match listener.accept().await {
            Ok(s) => serve(s, token),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(error = %e, "accept() failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A listening socket detached from any runtime, to hand to workers.
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
    fn detach(l: Listener) -> io::Result<StdListener> {
        Ok(match l {
            Listener::Tcp(l) => StdListener::Tcp(l.into_std()?),
            Listener::Unix(l) => StdListener::Unix(l.into_std()?),
        })
    }

    fn try_clone(&self) -> io::Result<StdListener> {
        Ok(match self {
            StdListener::Tcp(l) => StdListener::Tcp(l.try_clone()?),
            StdListener::Unix(l) => StdListener::Unix(l.try_clone()?),
        })
    }

    /// Registers with the current runtime.
    fn register(self) -> io::Result<Listener> {
        Ok(match self {
            StdListener::Tcp(l) => Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            StdListener::Unix(l) => Listener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    }
}

/// Runs `workers` threads (at least one), named `{name}-{i}`, each a
/// single-threaded runtime that serves its own handle on `listener` with
/// the future `worker(i)` returns, until `stop` resolves. The calling task
/// only waits.
///
/// `worker(i)` is called on the calling thread (to build per-worker state);
/// the closure it returns runs on worker `i`'s thread and gets the listener
/// registered with that thread's runtime. Its future should run until
/// dropped.
///
/// On `stop`, every worker's runtime is dropped (closing its connections)
/// and its thread joined before this returns `Ok`.
///
/// Errors, after the other workers are stopped the same way: the listener
/// cannot be detached or duplicated, a thread or its runtime cannot start,
/// the listener cannot be registered on it, or a worker's future ends
/// before `stop` (`worker {i} stopped`).
pub(crate) async fn run_workers<M, W, F>(
    listener: Listener,
    workers: usize,
    name: &str,
    worker: M,
    stop: impl Future<Output = ()>,
) -> Result<(), String>
where
    M: FnMut(usize) -> W,
    W: FnOnce(Listener) -> F + Send + 'static,
    F: Future<Output = ()>,
{
    // Workers stop when this says so or is dropped (an early return).
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each worker's failure; closed when every worker has finished.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let started = spawn_workers(listener, workers, name, worker, &stop_rx, &done_tx);
    drop(done_tx);
    let failed = match started {
        Err(e) => Some(e),
        Ok(()) => tokio::select! {
            _ = stop => None,
            Some(e) = done_rx.recv() => Some(e),
        },
    };
    let _ = stop_tx.send(true);
    // Every worker drops its runtime, then its sender.
    while done_rx.recv().await.is_some() {}
    failed.map_or(Ok(()), Err)
}

fn spawn_workers<M, W, F>(
    listener: Listener,
    workers: usize,
    name: &str,
    mut worker: M,
    stop: &watch::Receiver<bool>,
    done: &mpsc::UnboundedSender<String>,
) -> Result<(), String>
where
    M: FnMut(usize) -> W,
    W: FnOnce(Listener) -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let std_listener =
        StdListener::detach(listener).map_err(|e| format!("detaching the listener: {e}"))?;
    for i in 0..workers.max(1) {
        let l = std_listener
            .try_clone()
            .map_err(|e| format!("duplicating the listener: {e}"))?;
        let serve = worker(i);
        let mut stop = stop.clone();
        let done = done.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let res = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("worker {i}: starting the runtime: {e}"))
                    .and_then(|rt| {
                        rt.block_on(async move {
                            let l = l.register().map_err(|e| {
                                format!("worker {i}: registering the listener: {e}")
                            })?;
                            tokio::select! {
                                _ = serve(l) => Err(format!("worker {i} stopped")),
                                _ = stop.wait_for(|&s| s) => Ok(()),
                            }
                        })
                        // `rt` is dropped here, with every connection task.
                    });
                if let Err(e) = res {
                    let _ = done.send(e);
                }
            })
            .map_err(|e| format!("starting worker {i}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
