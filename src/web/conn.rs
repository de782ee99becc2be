//! The accept loop and every connection's life, driven with hyper's HTTP/1
//! connection builder (instead of `axum::serve`) for per-connection control:
//!
//! - **header timeout**: a connection that has not sent a complete request
//!   header within `read_header_timeout` of being accepted, or of its
//!   previous response being written (an idle keep-alive connection, as Go's
//!   `IdleTimeout` falls back to `ReadHeaderTimeout`), is closed; the TLS
//!   handshake counts toward it;
//! - **connection cap**: at `max_connections` open, accepting one more
//!   closes the connection that has waited longest for its request header
//!   (a stalled client), so a flood of stalled clients cannot keep a real
//!   scraper out; only when every open connection is serving a request is
//!   the new one refused;
//! - **header size**: hyper's read buffer is bounded by `max_header_bytes`;
//!   a larger header is answered 431 by hyper, a garbled one 400.
//!
//! What each connection is doing is kept in one [`Tracker`] (a map under a
//! mutex, scanned only when the cap is reached).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::stats::{Closed, WebStats};

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub read_header_timeout: Duration,
    pub max_connections: usize,
    /// hyper's `max_buf_size` (at least 8 KiB): the longest request header.
    pub max_header_bytes: usize,
}

#[derive(Debug)]
struct State {
    /// Requests being served (a pipelined connection may have more).
    in_flight: usize,
    /// Since when the connection waits for a request header; `None` while
    /// a request is served.
    waiting_since: Option<Instant>,
    evicted: bool,
}

/// One connection's state, shared by its task, its requests and the
/// tracker.
#[derive(Debug)]
pub struct Conn {
    state: Mutex<State>,
    changed: Notify,
}

impl Conn {
    fn new(now: Instant) -> Conn {
        Conn {
            state: Mutex::new(State {
                in_flight: 0,
                waiting_since: Some(now),
                evicted: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_started(&self) {
        let mut s = self.lock();
        s.in_flight += 1;
        s.waiting_since = None;
    }

    fn request_done(&self) {
        {
            let mut s = self.lock();
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.waiting_since = Some(Instant::now());
            }
        }
        self.changed.notify_one();
    }

    fn evict(&self) {
        self.lock().evicted = true;
        self.changed.notify_one();
    }
}

/// Marks a request done when dropped: with the response body, after hyper
/// wrote its last byte (or when the connection went away).
struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// How long a connection may wait for its request header before the cap
/// may close it in favour of the longest-stalled rule (see
/// [`Tracker::admit`]). 2 s: on a host loaded enough that the agent has
/// not read a scraper's request within 1 s (seen in a flood of 3,000
/// stalled clients with every core busy), a 1 s grace evicted the scraper
/// as the longest-stalled; a request not read in 2 s has timed out for a
/// scraper anyway (the slowloris test's bound).
pub(crate) const EVICTION_GRACE: Duration = Duration::from_secs(2);

/// The open connections.
#[derive(Debug, Default)]
pub struct Tracker {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection. At `max` open, first evicts the one
    /// that has waited longest for a request header, among those that
    /// have waited at least [`EVICTION_GRACE`]; when none has, the one that
    /// started waiting last, so that a client that has just connected (a
    /// scraper in the first instants of a flood) keeps its chance to send
    /// its header. `None` when every open connection is serving a request
    /// (refuse the new one). The evicted connection leaves the map at once,
    /// its task closes it.
    pub(crate) fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.lock();
        if conns.len() >= max {
            let now = Instant::now();
            let waiting: Vec<(Instant, u64)> = conns
                .iter()
                .filter_map(|(id, c)| c.lock().waiting_since.map(|t| (t, *id)))
                .collect();
            let stalled = waiting
                .iter()
                .filter(|(t, _)| now.saturating_duration_since(*t) >= EVICTION_GRACE)
                .min()
                .or_else(|| waiting.iter().max())
                .copied();
            let (_, id) = stalled?;
            if let Some(c) = conns.remove(&id) {
                c.evict();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn::new(Instant::now()));
        conns.insert(id, Arc::clone(&c));
        Some((id, c))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Evicts every connection waiting for a header (at shutdown).
    fn evict_waiting(&self) {
        for c in self.lock().values() {
            if c.lock().waiting_since.is_some() {
                c.evict();
            }
        }
    }

    /// Connections tracked (not evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a connection needs from the server.
struct Ctx {
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    http: http1::Builder,
    limits: Limits,
    stats: Arc<WebStats>,
    tracker: Tracker,
    shutdown: watch::Receiver<bool>,
}

/// Why waiting on a connection ended early.
enum Stop {
    Closed(Closed),
    Shutdown,
}

/// Waits for `conn`'s header deadline, eviction or the shutdown; never
/// returns while a request is served and no shutdown came.
async fn watchdog(conn: &Conn, timeout: Duration, shutdown: &mut watch::Receiver<bool>) -> Stop {
    loop {
        let changed = conn.changed.notified();
        let (evicted, deadline) = {
            let s = conn.lock();
            (s.evicted, s.waiting_since.map(|t| t + timeout))
        };
        if evicted {
            return Stop::Closed(Closed::Evicted);
        }
        if *shutdown.borrow() {
            return Stop::Shutdown;
        }
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = shutdown.changed() => {}
            _ = expired => {
                let s = conn.lock();
                if s.waiting_since.is_some_and(|t| t + timeout <= Instant::now()) {
                    return Stop::Closed(Closed::HeaderTimeout);
                }
            }
        }
    }
}

/// Serves HTTP/1 on `io` until the client leaves, the watchdog closes it,
/// or (at shutdown) its in-flight request is answered.
async fn drive<I>(io: I, ctx: &Ctx, conn: &Arc<Conn>) -> Option<Closed>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = ctx.router.clone();
    let c = Arc::clone(conn);
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        c.request_started();
        let guard = RequestGuard(Arc::clone(&c));
        let fut = router.clone().oneshot(req);
        async move {
            let resp = fut.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(b.map_frame(move |f| {
                    let _in_flight = &guard;
                    f
                }))
            }))
        }
    });
    let http = ctx.http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(http);
    let mut shutdown = ctx.shutdown.clone();
    let mut graceful = false;
    loop {
        tokio::select! {
            _ = http.as_mut() => return None,
            stop = watchdog(conn, ctx.limits.read_header_timeout, &mut shutdown), if !graceful => {
                match stop {
                    Stop::Closed(why) => return Some(why),
                    Stop::Shutdown => {
                        // Idle: closes now; in flight: after the response.
                        http.as_mut().graceful_shutdown();
                        graceful = true;
                    }
                }
            }
        }
    }
}

async fn connection(stream: TcpStream, ctx: Arc<Ctx>, id: u64, conn: Arc<Conn>) {
    let why = match &ctx.tls {
        None => drive(stream, &ctx, &conn).await,
        Some(acceptor) => {
            let mut shutdown = ctx.shutdown.clone();
            tokio::select! {
                hs = acceptor.accept(stream) => match hs {
                    Ok(tls) => drive(tls, &ctx, &conn).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        Some(Closed::TlsHandshake)
                    }
                },
                stop = watchdog(&conn, ctx.limits.read_header_timeout, &mut shutdown) => match stop {
                    Stop::Closed(why) => Some(why),
                    Stop::Shutdown => None,
                },
            }
        }
    };
    // Connections closed because the agent stops are not counted.
    if let Some(why) = why
        && !*ctx.shutdown.borrow()
    {
        ctx.stats.closed(why);
    }
    ctx.tracker.remove(id);
    ctx.stats.ended();
}

/// The `listen(2)` backlog the agent asks for: the kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4), as Go's
/// `net.Listen` (node_exporter's) does by reading that sysctl.
pub(crate) const LISTEN_BACKLOG: i32 = u16::MAX as i32;

/// A non-blocking TCP listener on `addr` with [`LISTEN_BACKLOG`] and
/// `SO_REUSEADDR` (as tokio's `TcpListener::bind`, whose backlog is std's
/// 128).
///
/// Why the larger backlog: when the accept queue is full the kernel drops
/// the handshake's final ACK (`ListenOverflows`): the client's `connect()`
/// has returned, but the agent sees the connection only after the
/// SYN-ACK retransmission, 1 s later (then 3 s…), so clients of a flood
/// beyond the queue (3,000 stalled clients against 128) outlived
/// `--web.read-header-timeout` by that second, counted from their side.
///
/// # Errors
/// Those of `socket(2)`, `bind(2)` (`AddrInUse`: the address is taken) and
/// `listen(2)`.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// What [`serve`] serves.
pub struct Server {
    pub router: Router,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub limits: Limits,
    pub stats: Arc<WebStats>,
}

/// Accepts on `listener` until `shutdown` resolves; then stops accepting,
/// closes connections waiting for a header, lets in-flight requests finish
/// and returns when every connection is closed.
///
/// # Errors
/// None so far: accept errors (e.g. `EMFILE`) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = http1::Builder::new();
    http.header_read_timeout(None)
        .max_buf_size(server.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    server.stats.set_limit(server.limits.max_connections);
    let ctx = Arc::new(Ctx {
        router: server.router,
        tls: server.tls,
        http,
        limits: server.limits,
        stats: server.stats,
        tracker: Tracker::default(),
        shutdown: stop_rx,
    });
    // Every connection task holds a sender; recv() ends when all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((id, conn)) = ctx.tracker.admit(ctx.limits.max_connections) else {
            ctx.stats.closed(Closed::Refused);
            drop(stream);
            continue;
        };
        ctx.stats.opened();
        let (ctx2, alive) = (Arc::clone(&ctx), alive_tx.clone());
        tokio::spawn(async move {
            connection(stream, ctx2, id, conn).await;
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    ctx.tracker.evict_waiting();
    drop(alive_tx);
    let _ = alive_rx.recv().await;
    Ok(())
}

#[cfg(test)]
#[path = "conn/tests.rs"]
mod tests;
