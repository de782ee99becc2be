//! `sockscope proxy`: a small HTTP/1.1 reverse proxy on hyper, modelled on
//! the nginx behaviour the README's lab experiments need.
//!
//! - Like nginx's worker processes, `--workers N` runs N threads, each with
//!   its own single-threaded runtime accepting from the one listening
//!   socket (a worker holding more clients than another lets it accept
//!   first); a connection stays on the worker that accepted it, and so do
//!   the upstream connections it uses.
//! - Upstream connections are hyper client connections (TCP or UNIX socket,
//!   a connect timeout, a cap on open connections per upstream; in
//!   `proxy/connect.rs`). `--keepalive N` caches up to N idle connections
//!   per upstream in each worker (`proxy/pool.rs`; nginx's `keepalive N`,
//!   also per worker; when the cache is full the least recently used one
//!   is closed); with 0 the proxy closes each upstream connection after
//!   its response, so TIME_WAIT lands on the proxy's side (the README's
//!   "Ephemeral-port exhaustion").
//! - `--max-connections` bounds open client connections like
//!   `worker_connections`: at the bound the proxy stops calling `accept()`
//!   and new clients wait in the kernel's accept queue.
//! - Upstream connect failure → 502 (`EADDRNOTAVAIL` is logged as nginx
//!   does: `connect() to … failed (99: Cannot assign requested address)`);
//!   connect timeout (`--connect-timeout`) or no response head within
//!   `--read-timeout` of sending the request → 504 (the upstream
//!   connection is closed); a response body that stalls for
//!   `--read-timeout` cuts the client connection ([`UpstreamBody`];
//!   nginx's `proxy_read_timeout`).
//! - Bodies stream through in both directions; nothing is buffered whole.
//! - Hop-by-hop headers are dropped both ways (`proxy/headers.rs`).
//! - `--status-path` answers in nginx's stub_status format, counted over
//!   all workers ([`Stats`]).
//! - The access log (target `access`, level info) costs nothing when that
//!   level is disabled.

mod body;
mod config;
mod connect;
mod error;
mod headers;
mod pool;
mod stub_status;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

pub use body::{BoxError, ProxyBody, UpstreamBody};
pub use config::ProxyConfig;
pub use stub_status::Stats;

use crate::addr::{Listener, Stream};
use crate::serve;
use connect::connect;
use error::{SendError, error_page};
use headers::{origin_form, strip_hop_by_hop, strip_request_headers};
use pool::Pool;
use stub_status::{Held, WorkerStats};

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

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by every worker.
struct Shared {
    cfg: ProxyConfig,
    /// Every worker's counters.
    stats: Mutex<Vec<Arc<WorkerStats>>>,
    /// The round-robin's next upstream.
    next: AtomicUsize,
    /// `--max-upstream-connections`, per upstream.
    limits: Box<[Option<Arc<Semaphore>>]>,
    /// `--max-connections`.
    slots: Option<Arc<Semaphore>>,
    client: hyper::client::conn::http1::Builder,
    server: hyper::server::conn::http1::Builder,
}

/// A proxy worker: the state shared by all workers (settings, counters,
/// connection limits) plus this worker's upstream connection caches. Made
/// by [`Proxy::new`] and [`Proxy::worker`]; served by [`serve`] or [`run`].
pub struct Proxy {
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    /// One per upstream, in `cfg.upstreams` order.
    pools: Box<[Pool]>,
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

impl Proxy {
    /// The first worker of a new proxy; [`Proxy::worker`] makes the others.
    /// Nothing is opened until requests come.
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
            .header_read_timeout(HEADER_READ_TIMEOUT)
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

    /// The stub_status counters, summed over all workers (a snapshot).
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

    /// Trims this worker's idle connections to upstream `idx` to
    /// `--keepalive`.
    fn trim_idle(&self, idx: usize) {
        self.pools[idx].trim(self.shared.cfg.keepalive, None);
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
        let sh = &*self.shared;
        let keepalive = sh.cfg.keepalive > 0;
        let read_timeout = sh.cfg.read_timeout;
        let mut req = Some(req);
        if keepalive && let Some((sent, task)) = self.pools[idx].try_send(&mut req) {
            let guard = AbortOnDrop(Some(task));
            let resp = response(sent, read_timeout).await?;
            guard.disarm();
            return Ok((resp, Duration::ZERO));
        }
        let req = req.expect("not sent");
        let (mut tx, task, connect_time) = connect(
            &sh.cfg.upstreams[idx],
            sh.limits[idx].as_ref(),
            sh.cfg.connect_timeout,
            &sh.client,
        )
        .await
        .map_err(SendError::Connect)?;
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

    /// Proxies one request to the next upstream (round-robin), or answers
    /// the status page. Upstream failures become nginx-style error pages
    /// (502, 504), never an `Err`.
    ///
    /// Errors: none today (the type is hyper's service contract).
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
                let trim = (sh.cfg.keepalive > 0).then(|| (Arc::clone(&self), idx));
                let body = UpstreamBody::new(body, sh.cfg.read_timeout, trim);
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
                let (status, msg) = e.status_and_message();
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
    // Before each accept(): at --max-connections, wait for a slot (clients
    // queue in the kernel's accept queue, as with nginx's
    // worker_connections); a worker ahead of the others lets them take
    // the next connections first: all are woken by each new connection
    // and a burst (wrk's 100 at once) would otherwise land on whichever
    // runs first.
    let ready = || async {
        let permit = match &slots {
            Some(s) => Some(Arc::clone(s).acquire_owned().await.expect("never closed")),
            None => None,
        };
        if proxy.ahead() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        permit
    };
    serve::accept_loop(&listener, ready, |s, permit| spawn_conn(s, &proxy, permit)).await;
}

/// Serves `listener` with the worker `proxy` on the current runtime until
/// `stop` resolves; connections already accepted are left to finish.
pub async fn serve(listener: Listener, proxy: Arc<Proxy>, stop: impl Future<Output = ()>) {
    tokio::select! {
        _ = accept_loop(listener, proxy) => {}
        _ = stop => {}
    }
}

/// Runs the proxy with `workers` threads (at least one), each a
/// single-threaded runtime accepting from `listener` (nginx's worker
/// processes), until `stop` resolves; the calling task only waits. Then
/// every worker's connections are closed before this returns.
///
/// Errors: a worker that cannot start (thread, runtime, listener
/// registration) or stops, as text naming the worker.
pub async fn run(
    listener: Listener,
    cfg: ProxyConfig,
    workers: usize,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let first = Proxy::new(cfg);
    let worker = |i| {
        let proxy = if i == 0 {
            Arc::clone(&first)
        } else {
            first.worker()
        };
        move |l| accept_loop(l, proxy)
    };
    serve::run_workers(listener, workers, "proxy-worker", worker, stop).await
}

fn spawn_conn(s: Stream, proxy: &Arc<Proxy>, permit: Option<OwnedSemaphorePermit>) {
    let stats = &proxy.stats.0;
    stats.accepts.fetch_add(1, Relaxed);
    stats.handled.fetch_add(1, Relaxed);
    let proxy = Arc::clone(proxy);
    tokio::spawn(async move {
        let _permit = permit;
        let _active = Held::new(&proxy.stats.0.active);
        let svc = hyper::service::service_fn(|req| Arc::clone(&proxy).handle(req));
        let res = proxy
            .shared
            .server
            .serve_connection(TokioIo::new(s), svc)
            .await;
        if let Err(e) = res {
            tracing::debug!(error = %e, "client connection error");
        }
    });
}
