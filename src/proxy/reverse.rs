//! `sockscope proxy`: a small HTTP/1.1 reverse proxy on hyper / hyper-util,
//! modelled on the nginx behaviour of the seeds.
//!
//! - Upstream connections come from hyper-util's pooling client with a
//!   connector of ours (TCP or UNIX socket, a connect timeout, a cap on open
//!   connections per upstream). `--keepalive N` keeps up to N idle
//!   connections per upstream (nginx's `keepalive N`); with 0 the proxy
//!   closes each upstream connection after its response, so TIME_WAIT lands
//!   on the proxy's side (seed 000).
//! - `--max-connections` bounds open client connections like
//!   `worker_connections`: at the bound the proxy stops calling `accept()`
//!   and new clients wait in the kernel's accept queue.
//! - Upstream connect failure → 502 (`EADDRNOTAVAIL` is logged as nginx
//!   does: `connect() to … failed (99: Cannot assign requested address)`);
//!   connect or response timeout → 504.
//! - Bodies stream through in both directions; nothing is buffered whole.
//! - `--status-path` answers in nginx's stub_status format.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Addr, Listener, shutdown_signal};

/// Proxy settings (the `sockscope proxy` flags).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub upstreams: Vec<Addr>,
    /// Idle upstream connections kept per upstream; 0 = none.
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

/// Connect timing carried from the connector to the access log through
/// hyper-util's `Connected::extra`; `reported` makes a reused connection
/// log 0, as nginx's `$upstream_connect_time` does.
#[derive(Clone)]
struct ConnectInfo {
    connect_time: Duration,
    reported: Arc<AtomicBool>,
}

enum Stream {
    Tcp(TokioIo<tokio::net::TcpStream>),
    Unix(TokioIo<tokio::net::UnixStream>),
}

/// An upstream connection: the socket plus its slot under
/// `--max-upstream-connections`, released when the connection closes.
pub struct UpstreamIo {
    stream: Stream,
    info: ConnectInfo,
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
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.info.clone())
    }
}

/// hyper-util connector: the request URI's host is `uN`, the index of the
/// upstream, so the client keeps one pool per upstream.
#[derive(Clone)]
struct Connector {
    upstreams: Arc<[Addr]>,
    limits: Arc<[Option<Arc<Semaphore>>]>,
    timeout: Duration,
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect() to {addr} failed ({errno}: {source})")]
    Io {
        addr: String,
        errno: i32,
        #[source]
        source: io::Error,
    },
    #[error("connect() to {0} timed out")]
    Timeout(String),
    #[error("bad upstream host in {0}")]
    BadUri(Uri),
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let idx: usize = uri
                .host()
                .and_then(|h| h.strip_prefix('u'))
                .and_then(|n| n.parse().ok())
                .filter(|&i| i < this.upstreams.len())
                .ok_or_else(|| ConnectError::BadUri(uri.clone()))?;
            let addr = &this.upstreams[idx];
            let start = Instant::now();
            let connect = async {
                let permit = match &this.limits[idx] {
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
            match tokio::time::timeout(this.timeout, connect).await {
                Ok(Ok((stream, permit))) => Ok(UpstreamIo {
                    stream,
                    info: ConnectInfo {
                        connect_time: start.elapsed(),
                        reported: Arc::new(AtomicBool::new(false)),
                    },
                    _permit: permit,
                }),
                Ok(Err(source)) => Err(ConnectError::Io {
                    addr: addr.to_string(),
                    errno: source.raw_os_error().unwrap_or(0),
                    source,
                }),
                Err(_) => Err(ConnectError::Timeout(addr.to_string())),
            }
        })
    }
}

type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The running proxy's shared state.
pub struct Proxy {
    cfg: ProxyConfig,
    client: Client<Connector, Incoming>,
    next: AtomicUsize,
    pub stats: Stats,
    authorities: Vec<String>,
}

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

fn strip_hop_by_hop(h: &mut header::HeaderMap) {
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

/// Finds our connect error, or a timeout, in an error's source chain.
fn classify(e: &(dyn std::error::Error + 'static)) -> (StatusCode, String) {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<ConnectError>() {
            let status = match c {
                ConnectError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            return (status, c.to_string());
        }
        cur = err.source();
    }
    (StatusCode::BAD_GATEWAY, e.to_string())
}

impl Proxy {
    pub fn new(cfg: ProxyConfig) -> Arc<Proxy> {
        let limits: Arc<[Option<Arc<Semaphore>>]> = cfg
            .upstreams
            .iter()
            .map(|_| {
                cfg.max_upstream_connections
                    .map(|n| Arc::new(Semaphore::new(n)))
            })
            .collect();
        let connector = Connector {
            upstreams: cfg.upstreams.clone().into(),
            limits,
            timeout: cfg.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.keepalive)
            .pool_idle_timeout(cfg.keepalive_timeout)
            .pool_timer(TokioTimer::new())
            .retry_canceled_requests(false)
            .set_host(false)
            .build(connector);
        let authorities = (0..cfg.upstreams.len()).map(|i| format!("u{i}")).collect();
        Arc::new(Proxy {
            cfg,
            client,
            next: AtomicUsize::new(0),
            stats: Stats::default(),
            authorities,
        })
    }

    /// Proxies one request (or answers the status page).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, hyper::Error> {
        self.stats.requests.fetch_add(1, Relaxed);
        let _writing = Held::new(&self.stats.writing);
        let start = Instant::now();
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();

        if self.cfg.status_path.as_deref() == Some(req.uri().path()) {
            let mut r = Response::new(Either::Right(Full::new(Bytes::from(self.stats.page()))));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(r);
        }

        let idx = self.next.fetch_add(1, Relaxed) % self.cfg.upstreams.len();
        let upstream = &self.cfg.upstreams[idx];
        let (mut parts, body) = req.into_parts();
        let host = parts.headers.get(header::HOST).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(h) = host {
            parts.headers.insert(header::HOST, h);
        }
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(self.authorities[idx].as_str())
            .path_and_query(path.as_str())
            .build()
            .expect("valid URI parts");
        parts.version = hyper::Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let res = tokio::time::timeout(
            self.cfg.connect_timeout + self.cfg.read_timeout,
            self.client.request(upstream_req),
        )
        .await;
        let (resp, connect_ms) = match res {
            Ok(Ok(resp)) => {
                let connect_ms = resp.extensions().get::<ConnectInfo>().map_or(0.0, |i| {
                    if i.reported.swap(true, Relaxed) {
                        0.0
                    } else {
                        i.connect_time.as_secs_f64() * 1e3
                    }
                });
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                (Response::from_parts(parts, Either::Left(body)), connect_ms)
            }
            Ok(Err(e)) => {
                let (status, msg) = classify(&e);
                tracing::warn!(upstream = %upstream, error = %msg, "upstream request failed");
                (error_page(status), 0.0)
            }
            Err(_) => {
                tracing::warn!(upstream = %upstream, "upstream timed out");
                (error_page(StatusCode::GATEWAY_TIMEOUT), 0.0)
            }
        };
        tracing::info!(
            target: "access",
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            upstream = %upstream,
            upstream_connect_ms = connect_ms,
            duration_ms = start.elapsed().as_secs_f64() * 1e3,
        );
        Ok(resp)
    }
}

/// Serves `listener` until SIGTERM/SIGINT (or `stop` resolves).
pub async fn serve(listener: Listener, proxy: Arc<Proxy>, stop: impl Future<Output = ()>) {
    let slots = proxy
        .cfg
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n)));
    let accept = async {
        loop {
            // At --max-connections, stop accepting: clients queue in the
            // kernel's accept queue, as with nginx's worker_connections.
            let permit = match &slots {
                Some(s) => Some(Arc::clone(s).acquire_owned().await.expect("never closed")),
                None => None,
            };
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
                tracing::warn!(error = %e, "accept() failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stop => {}
        _ = shutdown_signal() => {}
    }
}

fn spawn_conn<I>(io: I, proxy: &Arc<Proxy>, permit: Option<OwnedSemaphorePermit>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    proxy.stats.accepts.fetch_add(1, Relaxed);
    proxy.stats.handled.fetch_add(1, Relaxed);
    let proxy = Arc::clone(proxy);
    tokio::spawn(async move {
        let _permit = permit;
        let _active = Held::new(&proxy.stats.active);
        let svc = hyper::service::service_fn(|req| Arc::clone(&proxy).handle(req));
        let res = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60))
            .serve_connection(io, svc)
            .await;
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
