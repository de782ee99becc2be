//! nginx `stub_status` (ngx_http_stub_status_module): scraped over HTTP or
//! a UNIX socket with hyper, parsed by a pure function.
//!
//! The page (`ngx_http_stub_status_handler()`):
//!
//! ```text
//! Active connections: 291
//! server accepts handled requests
//!  16630948 16630948 31070465
//! Reading: 6 Writing: 179 Waiting: 106
//! ```
//!
//! One keep-alive connection per target is reused across scrapes, so the
//! agent does not itself churn ephemeral ports; nginx counts it in
//! `Active connections`, which counts the accepted connections (A) only,
//! never those still in nginx's accept queue (Q).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Largest body accepted from a target; a real stub_status page is ~100
/// bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The figures of one stub_status page. All are exact integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StubStatus {
    /// Open client connections, including waiting ones (and the one asking).
    pub active: u64,
    /// Client connections accepted since start.
    pub accepts: u64,
    /// Client connections handled (accepts − those dropped at
    /// `worker_connections`).
    pub handled: u64,
    /// Client requests since start.
    pub requests: u64,
    /// Connections reading a request header.
    pub reading: u64,
    /// Connections writing a response (or waiting for the upstream).
    pub writing: u64,
    /// Idle keep-alive connections.
    pub waiting: u64,
}

/// Why a body is not a stub_status page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stub_status page: {0}")]
pub struct ParseError(String);

fn expect<'a>(tokens: &mut impl Iterator<Item = &'a str>, word: &str) -> Result<(), ParseError> {
    match tokens.next() {
        Some(t) if t == word => Ok(()),
        Some(t) => Err(ParseError(format!(
            "expected {word:?}, found {:?}",
            truncate(t)
        ))),
        None => Err(ParseError(format!("expected {word:?}, found the end"))),
    }
}

fn number<'a>(tokens: &mut impl Iterator<Item = &'a str>, what: &str) -> Result<u64, ParseError> {
    let t = tokens
        .next()
        .ok_or_else(|| ParseError(format!("{what}: missing")))?;
    t.parse().map_err(|_| {
        ParseError(format!(
            "{what}: {:?} is not a non-negative integer",
            truncate(t)
        ))
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a stub_status body. Whitespace between tokens is free; the words
/// and their order are nginx's. Anything else (HTML, a truncated page,
/// negative or non-numeric figures, trailing text) is an error.
pub fn parse_stub_status(body: &[u8]) -> Result<StubStatus, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError("not UTF-8".into()))?;
    let mut t = text.split_ascii_whitespace();
    expect(&mut t, "Active")?;
    expect(&mut t, "connections:")?;
    let active = number(&mut t, "Active connections")?;
    for w in ["server", "accepts", "handled", "requests"] {
        expect(&mut t, w)?;
    }
    let accepts = number(&mut t, "accepts")?;
    let handled = number(&mut t, "handled")?;
    let requests = number(&mut t, "requests")?;
    expect(&mut t, "Reading:")?;
    let reading = number(&mut t, "Reading")?;
    expect(&mut t, "Writing:")?;
    let writing = number(&mut t, "Writing")?;
    expect(&mut t, "Waiting:")?;
    let waiting = number(&mut t, "Waiting")?;
    if let Some(extra) = t.next() {
        return Err(ParseError(format!("trailing text {:?}", truncate(extra))));
    }
    Ok(StubStatus {
        active,
        accepts,
        handled,
        requests,
        reading,
        writing,
        waiting,
    })
}

/// Where a stub_status page lives (`--nginx.scrape-uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    uri: String,
    conn: Conn,
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Conn {
    /// `host:port` for TCP.
    Tcp(String),
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `http://host:port/path` or `unix:/path/to.sock:/path`.
    fn from_str(s: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("--nginx.scrape-uri {s:?}: {why}");
        if let Some(rest) = s.strip_prefix("unix:") {
            let (sock, path) = rest
                .rsplit_once(":/")
                .ok_or_else(|| bad("expected unix:/path/to.sock:/path"))?;
            if !sock.starts_with('/') {
                return Err(bad("the socket path must be absolute"));
            }
            return Ok(Target {
                uri: s.to_owned(),
                conn: Conn::Unix(sock.into()),
                path: format!("/{path}"),
            });
        }
        let uri: hyper::Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// and unix: are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.host().is_empty() {
            return Err(bad("missing host"));
        }
        // `Uri` takes any digits after the colon and `port_u16()` is `None`
        // for what does not fit a u16: read the port text itself.
        let port = match port_text(authority.as_str()) {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("port {p:?}: expected 1-65535")))?,
        };
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Target {
            uri: s.to_owned(),
            conn: Conn::Tcp(format!("{}:{port}", authority.host())),
            path,
        })
    }
}

/// The text after the port colon of an authority (`user@host:port`,
/// `[v6]:port`), if there is a colon.
fn port_text(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => host_port.find(':').map_or("", |i| &host_port[i..]),
    };
    after_host.strip_prefix(':')
}

/// Why a scrape failed; `kind()` is the `reason` label.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("reading the body: {0}")]
    Body(String),
    #[error(transparent)]
    Parse(#[from] ParseError),
}

impl ScrapeError {
    /// Every `reason` label value, so each counter exists from the start.
    pub(crate) const KINDS: [&'static str; 6] =
        ["connect", "timeout", "http", "status", "body", "parse"];

    /// Label value: connect, timeout, http, status, body, parse.
    pub fn kind(&self) -> &'static str {
        match self {
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Http(_) => "http",
            ScrapeError::Status(_) => "status",
            ScrapeError::Body(_) => "body",
            ScrapeError::Parse(_) => "parse",
        }
    }
}

type Sender = SendRequest<Empty<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, ScrapeError> {
    macro_rules! handshake {
        ($stream:expr) => {{
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "stub_status connection ended");
                }
            });
            sender
        }};
    }
    Ok(match &target.conn {
        Conn::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(ScrapeError::Connect)?;
            let _ = s.set_nodelay(true);
            handshake!(s)
        }
        Conn::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(ScrapeError::Connect)?;
            handshake!(s)
        }
    })
}

/// One target and its keep-alive connection.
pub struct Scraper {
    target: Target,
    sender: Option<Sender>,
    errors: BTreeMap<&'static str, u64>,
    log: LogState,
}

/// What the log said about a target after one scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// A warning: the scrape failed, and the target was up before (or
    /// never scraped) or failed for another reason (`kind`).
    Failed(&'static str),
    /// An info line: the target answered again after failing.
    Recovered,
}

/// When a target's scrapes are logged: on the first failure, again when
/// the reason changes (connect, then parse, then status…), and once when
/// it recovers; not on every poll while nothing changes.
#[derive(Debug, Default)]
pub struct LogState {
    /// `None` before the first scrape; `Some(None)` after a success;
    /// `Some(Some(kind))` after a failure of that kind.
    last: Option<Option<&'static str>>,
}

impl LogState {
    /// Records one scrape of `target` (`Err` with its failure), logs when
    /// that changes what the log last said, and returns what it logged.
    pub fn record(&mut self, target: &Target, outcome: Result<(), &ScrapeError>) -> Option<Logged> {
        let now = outcome.err().map(ScrapeError::kind);
        let prev = self.last.replace(now);
        match (prev, outcome) {
            (Some(Some(_)), Ok(())) => {
                tracing::info!(target = %target, "stub_status scrape recovered");
                Some(Logged::Recovered)
            }
            (_, Ok(())) => None,
            (Some(Some(was)), Err(e)) if was == e.kind() => None,
            (_, Err(e)) => {
                tracing::warn!(target = %target, reason = e.kind(), error = %e,
                    "stub_status scrape failed (logged again when the reason changes or after it recovers)");
                Some(Logged::Failed(e.kind()))
            }
        }
    }
}

/// The outcome of scraping one target, as exported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetSample {
    pub target: String,
    /// `None` when the last scrape failed (then `sockscope_nginx_up` 0 and
    /// no figures).
    pub status: Option<StubStatus>,
    /// Time the scrape took, in seconds.
    pub duration_seconds: f64,
    /// When the scrape ended, in seconds since the Unix epoch: scrapes run
    /// on their own clock, apart from the kernel poll, so this says how old
    /// the figures are.
    pub timestamp: f64,
    /// Failed scrapes since start, by reason.
    pub errors_total: BTreeMap<&'static str, u64>,
}

impl Scraper {
    pub fn new(target: Target) -> Scraper {
        Scraper {
            target,
            sender: None,
            errors: BTreeMap::new(),
            log: LogState::default(),
        }
    }

    async fn fetch(&mut self) -> Result<StubStatus, ScrapeError> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => connect(&self.target).await?,
        };
        sender.ready().await?;
        let host = match &self.target.conn {
            Conn::Tcp(a) => a.as_str(),
            Conn::Unix(_) => "localhost",
        };
        let req = hyper::Request::get(self.target.path.as_str())
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("sockscope/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| ScrapeError::Body(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ScrapeError::Body(e.to_string()))?
            .to_bytes();
        // Reuse the connection only after a complete exchange.
        self.sender = Some(sender);
        if !status.is_success() {
            return Err(ScrapeError::Status(status.as_u16()));
        }
        Ok(parse_stub_status(&body)?)
    }

    /// Scrapes once, bounded by `timeout` (connect + request + body). A
    /// failure is counted, logged as [`LogState`] says (once per reason
    /// until the target recovers), and reported as `status: None`.
    pub async fn scrape(&mut self, timeout: Duration) -> TargetSample {
        let start = Instant::now();
        let res = match tokio::time::timeout(timeout, self.fetch()).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(ScrapeError::Timeout(timeout))
            }
        };
        let status = match res {
            Ok(s) => {
                self.log.record(&self.target, Ok(()));
                Some(s)
            }
            Err(e) => {
                // A complete exchange with a bad answer keeps the connection.
                if !matches!(e, ScrapeError::Status(_) | ScrapeError::Parse(_)) {
                    self.sender = None;
                }
                *self.errors.entry(e.kind()).or_insert(0) += 1;
                self.log.record(&self.target, Err(&e));
                None
            }
        };
        TargetSample {
            target: self.target.to_string(),
            status,
            duration_seconds: start.elapsed().as_secs_f64(),
            timestamp: unix_now(),
            errors_total: self.errors.clone(),
        }
    }

    /// The target this scraper reads.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
#[path = "stub_status/tests.rs"]
mod tests;
