//! `sockscope proxy`: a small HTTP/1.1 reverse proxy on hyper, modelled on
//! the nginx behaviour of the seeds.
//!
//! - Like nginx's worker processes, `--workers N` runs N threads, each with
//!   its own single-threaded runtime accepting from the one listening
//!   socket (a worker holding more clients than another lets it accept
//!   first); a connection stays on the worker that accepted it, and so do
//!   the upstream connections it uses.
//! - Upstream connections are hyper client connections (TCP or UNIX socket,
//!   a connect timeout, a cap on open connections per upstream).
//!   `--keepalive N` caches up to N idle connections per upstream in each
//!   worker (nginx's `keepalive N`, also per worker; when the cache is full
//!   the least recently used one is closed); with 0 the proxy closes each
//!   upstream connection after its response, so TIME_WAIT lands on the
//!   proxy's side (seed 000).
//! - `--max-connections` bounds open client connections like
//!   `worker_connections`: at the bound the proxy stops calling `accept()`
//!   and new clients wait in the kernel's accept queue.
//! - Upstream connect failure → 502 (`EADDRNOTAVAIL` is logged as nginx
//!   does: `connect() to … failed (99: Cannot assign requested address)`);
//!   connect timeout (`--connect-timeout`) or no response head within
//!   `--read-timeout` of sending the request → 504 (the upstream
//!   connection is closed); a response body that stalls for
//!   `--read-timeout` cuts the client connection (nginx's
//!   `proxy_read_timeout`).
//! - Bodies stream through in both directions; nothing is buffered whole.
//! - `--status-path` answers in nginx's stub_status format, counted over
//!   all workers.
//! - The access log (target `access`, level info) costs nothing when that
//!   level is disabled.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::{Addr, Listener, shutdown_signal};

/// Proxy settings (the `sockscope proxy` flags).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstreams: Vec<Addr>,
    /// Idle upstream connections kept per upstream (in each worker); 0 =
    /// none.
    pub keepalive: usize,
    /// How long an idle upstream connection is kept.
    pub keepalive_timeout: Duration,
    /// Open upstream connections per upstream; `None` = unbounded.
    pub max_upstream_connections: Option<usize>,
    /// Open client connections; `None` = unbounded.
    pub max_connections: Option<usize>,
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response header.
    pub read_timeout: Duration,
    pub status_path: Option<String>,
}

/// stub_status counters (`ngx_stat_*`).
#[derive(Debug, Default)]
pub struct Stats {
    pub accepts: AtomicU64,
    pub handled: AtomicU64,
    pub requests: AtomicU64,
    pub active: AtomicU64,
    /// Requests being processed (nginx's Writing).
    pub writing: AtomicU64,
}

impl Stats {
    /// The page in nginx's exact format. Reading is reported as 0: hyper
    /// does not expose which connections are reading a request header, so
    /// Waiting = Active − Writing.
    pub fn page(&self) -> String {
        let active = self.active.load(Relaxed);
        let writing = self.writing.load(Relaxed).min(active);
        format!(
            "Active connections: {active} \nserver accepts handled requests\n {} {} {} \nReading: 0 Writing: {writing} Waiting: {} \n",
            self.accepts.load(Relaxed),
            self.handled.load(Relaxed),
            self.requests.load(Relaxed),
            active - writing,
        )
    }
}

/// One worker's share of the counters, on cache lines of its own: the
/// workers do not contend on them (nginx's workers share theirs in
/// shared memory); the status page adds them up.
#[derive(Default)]
#[repr(align(128))]
struct WorkerStats(Stats);

impl Stats {
    fn add(&self, other: &Stats) {
        for (a, b) in [
            (&self.accepts, &other.accepts),
            (&self.handled, &other.handled),
            (&self.requests, &other.requests),
            (&self.active, &other.active),
            (&self.writing, &other.writing),
        ] {
            a.fetch_add(b.load(Relaxed), Relaxed);
        }
    }
}

/// Decrements a gauge when dropped.
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn new(g: &'a AtomicU64) -> Held<'a> {
        g.fetch_add(1, Relaxed);
        Held(g)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

enum Stream {
    Tcp(TokioIo<tokio::net::TcpStream>),
    Unix(TokioIo<tokio::net::UnixStream>),
}

/// An upstream connection: the socket plus its slot under
/// `--max-upstream-connections`, released when the connection closes.
pub struct UpstreamIo {
    stream: Stream,
    _permit: Option<OwnedSemaphorePermit>,
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().stream {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    /// No `shutdown(SHUT_WR)` before the close: dropping the socket sends
    /// the same FIN (the proxy still closes first, TIME_WAIT stays on its
    /// side) and saves a system call per upstream connection.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// nginx's words: `connect() to 127.0.0.1:7100 failed (99: Cannot
    /// assign requested address)`.
    #[error("connect() to {addr} failed ({errno}: {reason})")]
    Io {
        addr: String,
        errno: i32,
        /// The error's text without std's " (os error N)" suffix.
        reason: String,
        #[source]
        source: io::Error,
    },
    #[error("connect() to {0} timed out")]
    Timeout(String),
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: hyper::Error,
    },
}

/// Aborts an upstream connection's task (closing the connection) unless
/// disarmed.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Why an upstream request failed.
enum SendError {
    Connect(ConnectError),
    Request(hyper::Error),
    /// No response head within `--read-timeout` of sending the request.
    Timeout,
}

type UpstreamSender = SendRequest<Incoming>;

/// One worker's keep-alive connections to one upstream, least recently
/// used first: the idle ones and those busy with an exchange.
///
/// A connection stays here while it is in use: hyper marks it ready again
/// as soon as its connection task has read the whole response, so the next
/// request can take it at once, as nginx's event handler frees a keepalive
/// peer when the upstream response ends (waiting for the client's task to
/// run first lets other requests miss it and connect anew).
#[derive(Default)]
struct Pool {
    conns: Mutex<VecDeque<PoolConn>>,
}

struct PoolConn {
    tx: UpstreamSender,
    task: AbortHandle,
    /// When it last took a request.
    used: Instant,
}

impl Pool {
    /// Sends the request on the most recently used idle connection; when
    /// none is idle, leaves it in `req`.
    fn try_send(
        &self,
        req: &mut Option<Request<Incoming>>,
    ) -> Option<(
        impl Future<Output = hyper::Result<Response<Incoming>>> + use<>,
        AbortHandle,
    )> {
        let mut conns = self.conns.lock().expect("pool lock");
        let i = conns.iter().rposition(|c| c.tx.is_ready())?;
        let mut c = conns.remove(i).expect("in range");
        let sent = c.tx.send_request(req.take()?);
        c.used = Instant::now();
        let task = c.task.clone();
        conns.push_back(c);
        Some((sent, task))
    }

    /// Adds a new connection (busy with its first request).
    fn add(&self, tx: UpstreamSender, task: AbortHandle) {
        self.conns.lock().expect("pool lock").push_back(PoolConn {
            tx,
            task,
            used: Instant::now(),
        });
    }

    /// Keeps at most `max` idle connections, closing the least recently
    /// used ones beyond (nginx's `keepalive N`), and, with `timeout`, those
    /// idle for that long; forgets closed ones. Allocates nothing when
    /// there is nothing to close (once per request).
    fn trim(&self, max: usize, timeout: Option<Duration>) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        {
            let mut conns = self.conns.lock().expect("pool lock");
            let idle = conns.iter().filter(|c| c.tx.is_ready()).count();
            let mut excess = idle.saturating_sub(max);
            let mut i = 0;
            while i < conns.len() {
                let c = &conns[i];
                let close = if c.tx.is_ready() {
                    let expired = timeout.is_some_and(|t| now.duration_since(c.used) >= t);
                    if excess > 0 {
                        excess -= 1;
                        true
                    } else {
                        expired
                    }
                } else {
                    c.tx.is_closed()
                };
                if close {
                    dropped.extend(conns.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // Dropping a sender closes its idle connection, outside the lock.
        drop(dropped);
    }
}

/// hyper's limit on each connection's read buffer and write queue (its
/// default is ~400 KiB). A request holds at most about this much read from
/// the client plus this much queued toward the upstream, so a thousand
/// 1 MiB uploads to a stalled upstream cost tens of MiB, not the bodies'
/// whole size (nginx: `client_body_buffer_size` 16k, 4k/8k proxy buffers;
/// measured by tests/scenario_memory.rs: peak 76 MiB with 16 KiB, 125 MiB
/// with 32 KiB). The read buffer also bounds a message head: 16 KiB, twice
/// nginx's longest request line or header (`large_client_header_buffers`
/// 4 × 8k) and above its 4k/8k `proxy_buffer_size` for response heads.
const CLIENT_SIDE_BUF: usize = 16 * 1024;
const UPSTREAM_SIDE_BUF: usize = 16 * 1024;

/// State shared by every worker.
struct Shared {
    cfg: ProxyConfig,
    /// Every worker's counters.
    stats: Mutex<Vec<Arc<WorkerStats>>>,
    next: AtomicUsize,
    /// `--max-upstream-connections`, per upstream.
    limits: Box<[Option<Arc<Semaphore>>]>,
    /// `--max-connections`.
    slots: Option<Arc<Semaphore>>,
    client: hyper::client::conn::http1::Builder,
    server: hyper::server::conn::http1::Builder,
}

/// A proxy worker: the shared state plus this worker's upstream
/// connection caches.
pub struct Proxy {
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    pools: Box<[Pool]>,
}

/// A response body from the upstream. Like nginx's `proxy_read_timeout`,
/// `--read-timeout` also bounds each wait for more of it: past that, the
/// client connection is cut (no last chunk), as nginx does. When it is
/// dropped (the exchange is over), the worker's keep-alive connections to
/// that upstream are trimmed to `--keepalive`.
pub struct UpstreamBody {
    inner: Incoming,
    read_timeout: Duration,
    /// Armed when a wait begins (most bodies never wait: no timer).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    trim: Option<(Arc<Proxy>, usize)>,
}

/// The upstream sent nothing for `--read-timeout` in a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream timed out ({0:?}) while reading the response body")]
struct BodyTimeout(Duration);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
            proxy.pools[idx].trim(proxy.shared.cfg.keepalive, None);
        }
    }
}

type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// Headers that apply to one hop only (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str() == "keep-alive"
}

fn strip_hop_by_hop(h: &mut header::HeaderMap) {
    // Most messages carry none: one pass over the few names present
    // instead of eight lookups.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(c) = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        for name in c.split(',') {
            h.remove(name.trim());
        }
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    h.remove("keep-alive");
}

/// Request headers: hop-by-hop ones go, but `Host` stays even when
/// `Connection` names it.
fn strip_request_headers(h: &mut header::HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let host = h.get(header::HOST).cloned();
    strip_hop_by_hop(h);
    if let Some(host) = host {
        h.insert(header::HOST, host);
    }
}

fn error_page(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>sockscope</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

/// The request target in origin form (`/path?query`), as the upstream
/// expects it; an absolute-form target (`http://host/path`) is rewritten.
fn origin_form(uri: Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri;
    }
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    Uri::from(pq)
}

impl Proxy {
    /// The first worker of a new proxy; [`Proxy::worker`] makes the others.
    pub fn new(cfg: ProxyConfig) -> Arc<Proxy> {
        let limits = cfg
            .upstreams
            .iter()
            .map(|_| {
                cfg.max_upstream_connections
                    .map(|n| Arc::new(Semaphore::new(n)))
            })
            .collect();
        let slots = cfg.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let mut server = hyper::server::conn::http1::Builder::new();
        server
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60))
            .max_buf_size(CLIENT_SIDE_BUF);
        let mut client = hyper::client::conn::http1::Builder::new();
        client.max_buf_size(UPSTREAM_SIDE_BUF);
        let shared = Arc::new(Shared {
            cfg,
            stats: Mutex::default(),
            next: AtomicUsize::new(0),
            limits,
            slots,
            client,
            server,
        });
        Proxy::with_shared(shared)
    }

    fn with_shared(shared: Arc<Shared>) -> Arc<Proxy> {
        let pools = shared
            .cfg
            .upstreams
            .iter()
            .map(|_| Pool::default())
            .collect();
        let stats = Arc::new(WorkerStats::default());
        shared
            .stats
            .lock()
            .expect("stats lock")
            .push(Arc::clone(&stats));
        Arc::new(Proxy {
            shared,
            stats,
            pools,
        })
    }

    /// Another worker of the same proxy: same counters and limits, its own
    /// upstream connections.
    pub fn worker(&self) -> Arc<Proxy> {
        Proxy::with_shared(Arc::clone(&self.shared))
    }

    /// The stub_status counters, summed over all workers.
    pub fn stats(&self) -> Stats {
        let total = Stats::default();
        for w in self.shared.stats.lock().expect("stats lock").iter() {
            total.add(&w.0);
        }
        total
    }

    /// Whether this worker holds more than one client connection more
    /// than the least busy worker.
    fn ahead(&self) -> bool {
        let mine = self.stats.0.active.load(Relaxed);
        let workers = self.shared.stats.lock().expect("stats lock");
        workers.len() > 1
            && workers
                .iter()
                .any(|w| w.0.active.load(Relaxed).saturating_add(1) < mine)
    }

    /// A new connection to upstream `idx`, its connection task spawned.
    async fn connect(
        &self,
        idx: usize,
    ) -> Result<(UpstreamSender, AbortHandle, Duration), ConnectError> {
        let sh = &*self.shared;
        let addr = &sh.cfg.upstreams[idx];
        let start = Instant::now();
        let connect = async {
            let permit = match &sh.limits[idx] {
                Some(sem) => Some(Arc::clone(sem).acquire_owned().await.expect("never closed")),
                None => None,
            };
            let stream = match addr {
                Addr::Tcp(a) => tokio::net::TcpStream::connect(a).await.map(|s| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(TokioIo::new(s))
                }),
                Addr::Unix(p) => tokio::net::UnixStream::connect(p)
                    .await
                    .map(|s| Stream::Unix(TokioIo::new(s))),
            };
            stream.map(|s| (s, permit))
        };
        let (stream, permit) = match tokio::time::timeout(sh.cfg.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                let mut reason = source.to_string();
                if let Some(at) = reason.find(" (os error ") {
                    reason.truncate(at);
                }
                return Err(ConnectError::Io {
                    addr: addr.to_string(),
                    errno: source.raw_os_error().unwrap_or(0),
                    reason,
                    source,
                });
            }
            Err(_) => return Err(ConnectError::Timeout(addr.to_string())),
        };
        let connect_time = start.elapsed();
        let io = UpstreamIo {
            stream,
            _permit: permit,
        };
        let (tx, conn) =
            sh.client
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

    /// Sends `req` to upstream `idx` on an idle keep-alive connection or a
    /// new one. Returns the response and the connect time (zero when
    /// reused, as nginx's `$upstream_connect_time`).
    ///
    /// Dropped before the response head (the 504 timeout), it closes the
    /// upstream connection: hyper alone would not while the connection is
    /// stuck writing a request body to an upstream that does not read.
    async fn send(
        &self,
        idx: usize,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Duration), SendError> {
        let keepalive = self.shared.cfg.keepalive > 0;
        let read_timeout = self.shared.cfg.read_timeout;
        let mut req = Some(req);
        if keepalive && let Some((sent, task)) = self.pools[idx].try_send(&mut req) {
            let guard = AbortOnDrop(Some(task));
            let resp = response(sent, read_timeout).await?;
            guard.disarm();
            return Ok((resp, Duration::ZERO));
        }
        let req = req.expect("not sent");
        let (mut tx, task, connect_time) = self.connect(idx).await.map_err(SendError::Connect)?;
        let sent = tx.send_request(req);
        let guard = AbortOnDrop(Some(task.clone()));
        if keepalive {
            self.pools[idx].add(tx, task);
        } else {
            // The sender goes now: hyper closes the connection once this
            // exchange is complete.
            drop(tx);
        }
        let resp = response(sent, read_timeout).await?;
        guard.disarm();
        Ok((resp, connect_time))
    }

    /// Proxies one request (or answers the status page).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, hyper::Error> {
        let sh = &*self.shared;
        let stats = &self.stats.0;
        stats.requests.fetch_add(1, Relaxed);
        let _writing = Held::new(&stats.writing);

        if let Some(p) = &sh.cfg.status_path
            && p == req.uri().path()
        {
            let mut r = Response::new(Either::Right(Full::new(Bytes::from(self.stats().page()))));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(r);
        }
        // What the access log needs, only when it is on.
        let access = tracing::enabled!(target: "access", tracing::Level::INFO).then(|| {
            (
                Instant::now(),
                req.method().clone(),
                req.uri().path_and_query().cloned(),
            )
        });

        let n = sh.cfg.upstreams.len();
        let idx = if n == 1 {
            0
        } else {
            sh.next.fetch_add(1, Relaxed) % n
        };
        let upstream = &sh.cfg.upstreams[idx];
        let (mut parts, body) = req.into_parts();
        strip_request_headers(&mut parts.headers);
        parts.uri = origin_form(parts.uri);
        parts.version = hyper::Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        // Each phase has its own deadline, as in nginx: connecting
        // (`--connect-timeout`, in connect()), the response head and each
        // wait in the body (`--read-timeout`).
        let (resp, connect_time) = match self.send(idx, upstream_req).await {
            Ok((resp, connect_time)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // Our own response is HTTP/1.1 whatever the upstream spoke
                // (nginx too): an HTTP/1.0 answer without a length is
                // re-chunked, so a cut body shows as one (no last chunk).
                parts.version = hyper::Version::HTTP_11;
                let body = UpstreamBody {
                    inner: body,
                    read_timeout: sh.cfg.read_timeout,
                    timer: None,
                    waiting: false,
                    trim: (sh.cfg.keepalive > 0).then(|| (Arc::clone(&self), idx)),
                };
                (
                    Response::from_parts(parts, Either::Left(body)),
                    connect_time,
                )
            }
            Err(SendError::Timeout) => {
                tracing::warn!(upstream = %upstream, "upstream timed out");
                (error_page(StatusCode::GATEWAY_TIMEOUT), Duration::ZERO)
            }
            Err(e) => {
                let (status, msg) = match e {
                    SendError::Connect(c @ ConnectError::Timeout(_)) => {
                        (StatusCode::GATEWAY_TIMEOUT, c.to_string())
                    }
                    SendError::Connect(c) => (StatusCode::BAD_GATEWAY, c.to_string()),
                    SendError::Request(e) => (StatusCode::BAD_GATEWAY, error_chain(&e)),
                    SendError::Timeout => unreachable!("matched above"),
                };
                tracing::warn!(upstream = %upstream, error = %msg, "upstream request failed");
                (error_page(status), Duration::ZERO)
            }
        };
        if let Some((start, method, path)) = access {
            tracing::info!(
                target: "access",
                method = %method,
                path = path.as_ref().map_or("/", |p| p.as_str()),
                status = resp.status().as_u16(),
                upstream = %upstream,
                upstream_connect_ms = connect_time.as_secs_f64() * 1e3,
                duration_ms = start.elapsed().as_secs_f64() * 1e3,
            );
        }
        Ok(resp)
    }
}

/// An error and its sources: "connection closed before message completed",
/// "error reading a body from connection: Connection reset by peer".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

/// The response head, within `read_timeout`.
async fn response(
    sent: impl Future<Output = hyper::Result<Response<Incoming>>>,
    read_timeout: Duration,
) -> Result<Response<Incoming>, SendError> {
    match tokio::time::timeout(read_timeout, sent).await {
        Ok(r) => r.map_err(SendError::Request),
        Err(_) => Err(SendError::Timeout),
    }
}

/// Closes idle upstream connections after `--keepalive-timeout`, checking
/// four times per timeout; stops with the worker.
fn spawn_sweeper(proxy: &Arc<Proxy>) {
    if proxy.shared.cfg.keepalive == 0 {
        return;
    }
    let timeout = proxy.shared.cfg.keepalive_timeout;
    let weak: Weak<Proxy> = Arc::downgrade(proxy);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(p) = weak.upgrade() else { return };
            for pool in &p.pools {
                pool.trim(p.shared.cfg.keepalive, Some(timeout));
            }
        }
    });
}

/// Accepts and serves clients on `listener` forever.
async fn accept_loop(listener: Listener, proxy: Arc<Proxy>) {
    spawn_sweeper(&proxy);
    let slots = proxy.shared.slots.clone();
    loop {
        // At --max-connections, stop accepting: clients queue in the
        // kernel's accept queue, as with nginx's worker_connections.
        let permit = match &slots {
            Some(s) => Some(Arc::clone(s).acquire_owned().await.expect("never closed")),
            None => None,
        };
        if proxy.ahead() {
            // Let the other workers take the next connections first: all
            // are woken by each new connection and a burst (wrk's 100
            // at once) would otherwise land on whichever runs first.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                spawn_conn(TokioIo::new(s), &proxy, permit)
            }),
            Listener::Unix(l) => l
                .accept()
                .await
                .map(|(s, _)| spawn_conn(TokioIo::new(s), &proxy, permit)),
        };
        if let Err(e) = accepted {
            // Another worker may have taken the connection: not an error.
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::warn!(error = %e, "accept() failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves `listener` on the current runtime until SIGTERM/SIGINT (or
/// `stop` resolves).
pub async fn serve(listener: Listener, proxy: Arc<Proxy>, stop: impl Future<Output = ()>) {
    tokio::select! {
        _ = accept_loop(listener, proxy) => {}
        _ = stop => {}
        _ = shutdown_signal() => {}
    }
}

/// A listening socket detached from any runtime, to hand to workers.
enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
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

/// Runs the proxy with `workers` threads (at least one), each a
/// single-threaded runtime accepting from `listener` (nginx's worker
/// processes), until SIGTERM/SIGINT; the calling runtime only waits for
/// the signal. A worker that cannot start is an error.
pub async fn run(listener: Listener, cfg: ProxyConfig, workers: usize) -> Result<(), String> {
    let std_listener = match listener {
        Listener::Tcp(l) => l.into_std().map(StdListener::Tcp),
        Listener::Unix(l) => l.into_std().map(StdListener::Unix),
    }
    .map_err(|e| format!("detaching the listener: {e}"))?;
    let first = Proxy::new(cfg);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for i in 0..workers.max(1) {
        let l = std_listener
            .try_clone()
            .map_err(|e| format!("duplicating the listener: {e}"))?;
        let proxy = if i == 0 {
            Arc::clone(&first)
        } else {
            first.worker()
        };
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("proxy-worker-{i}"))
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
                            accept_loop(l, proxy).await;
                            Ok(())
                        })
                    });
                let _ = done.send(res.err().unwrap_or_else(|| format!("worker {i} stopped")));
            })
            .map_err(|e| format!("starting worker {i}: {e}"))?;
    }
    drop(std_listener);
    tokio::select! {
        _ = shutdown_signal() => Ok(()),
        Some(e) = done_rx.recv() => Err(e),
    }
}

fn spawn_conn<I>(io: I, proxy: &Arc<Proxy>, permit: Option<OwnedSemaphorePermit>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let stats = &proxy.stats.0;
    stats.accepts.fetch_add(1, Relaxed);
    stats.handled.fetch_add(1, Relaxed);
    let proxy = Arc::clone(proxy);
    tokio::spawn(async move {
        let _permit = permit;
        let _active = Held::new(&proxy.stats.0.active);
        let svc = hyper::service::service_fn(|req| Arc::clone(&proxy).handle(req));
        let res = proxy.shared.server.serve_connection(io, svc).await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "client connection error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_status_page_parses_as_nginx() {
        let s = Stats::default();
        s.accepts.store(7, Relaxed);
        s.handled.store(7, Relaxed);
        s.requests.store(9, Relaxed);
        s.active.store(3, Relaxed);
        s.writing.store(1, Relaxed);
        let p = crate::collector::nginx::parse_stub_status(s.page().as_bytes()).unwrap();
        assert_eq!(
            (p.active, p.accepts, p.requests, p.writing, p.waiting),
            (3, 7, 9, 1, 2)
        );
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = header::HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use crate::proxy::upstream::{self, Behavior};
    use http_body_util::{BodyExt, Empty};

    fn cfg(upstream: Addr, keepalive: usize) -> ProxyConfig {
        ProxyConfig {
            upstreams: vec![upstream],
            keepalive,
            keepalive_timeout: Duration::from_secs(60),
            max_upstream_connections: None,
            max_connections: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            status_path: Some("/stub_status".into()),
        }
    }

    fn tcp_addr(l: &Listener) -> std::net::SocketAddr {
        match l {
            Listener::Tcp(l) => l.local_addr().unwrap(),
            Listener::Unix(_) => unreachable!(),
        }
    }

    /// A `--behavior keepalive` upstream and a proxy in front of it, both
    /// on this runtime; returns the proxy and its address.
    async fn lab(keepalive: usize) -> (Arc<Proxy>, std::net::SocketAddr) {
        let any: Addr = "127.0.0.1:0".parse().unwrap();
        let up = crate::proxy::listen(&any, 64).unwrap();
        let up_addr = tcp_addr(&up);
        tokio::spawn(upstream::run(up, Behavior::Keepalive, Default::default()));
        let front = crate::proxy::listen(&any, 64).unwrap();
        let front_addr = tcp_addr(&front);
        let proxy = Proxy::new(cfg(Addr::Tcp(up_addr), keepalive));
        tokio::spawn(serve(front, Arc::clone(&proxy), std::future::pending()));
        (proxy, front_addr)
    }

    /// `n` GETs on one keep-alive client connection; the bodies.
    async fn client(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<String> {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut bodies = Vec::new();
        for _ in 0..n {
            let req = Request::get(path)
                .header(header::HOST, "lab")
                .body(Empty::<Bytes>::new())
                .unwrap();
            tx.ready().await.unwrap();
            let resp = tx.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            bodies.push(String::from_utf8(body.to_vec()).unwrap());
        }
        bodies
    }

    fn pooled(p: &Proxy) -> (usize, usize) {
        let conns = p.pools[0].conns.lock().unwrap();
        let idle = conns.iter().filter(|c| c.tx.is_ready()).count();
        (idle, conns.len())
    }

    #[tokio::test]
    async fn keepalive_pool_reuses_and_keeps_at_most_n_idle() {
        let (proxy, addr) = lab(2).await;
        // One client, one request at a time: a single upstream connection
        // serves them all.
        for b in client(addr, "/a", 5).await {
            assert_eq!(b.as_bytes(), upstream::BODY);
        }
        assert_eq!(pooled(&proxy), (1, 1));
        // Eight at once: up to eight upstream connections, two kept idle.
        let clients: Vec<_> = (0..8)
            .map(|_| tokio::spawn(client(addr, "/b", 20)))
            .collect();
        for c in clients {
            assert!(
                c.await
                    .unwrap()
                    .iter()
                    .all(|b| b.as_bytes() == upstream::BODY)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.pools[0].trim(2, None);
        let (idle, all) = pooled(&proxy);
        assert!(
            (1..=2).contains(&idle) && idle == all,
            "{idle} idle of {all}"
        );
        let page = client(addr, "/stub_status", 1).await.remove(0);
        // 5 + 8 × 20 proxied, and this one (nginx counts it too).
        assert!(page.contains(" 10 10 166 \nReading"), "{page}");
    }

    #[tokio::test]
    async fn no_keepalive_keeps_no_connection() {
        let (proxy, addr) = lab(0).await;
        let bodies = client(addr, "/", 3).await;
        assert_eq!(bodies.len(), 3);
        assert_eq!(pooled(&proxy), (0, 0));
    }
}
