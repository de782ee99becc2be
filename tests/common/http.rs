//! HTTP/1.1 on a plain TCP connection: ONE response reader ([`HttpReader`]:
//! head, then a body framed by Content-Length, chunked encoding or the
//! server's close), used by the agent's scrape connection
//! ([`crate::common::scrape::Scraper`]), the keep-alive load client
//! ([`HttpClient`]) and the one-shot exchange that records how a response
//! ended ([`http_exchange`]).

use std::fmt::Debug;
use std::io::{Error, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The head of a response, as [`HttpReader::read_head`] read it.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status line, without its CRLF.
    pub status_line: String,
    /// The status code, `None` when the status line has none.
    pub status: Option<u16>,
    /// `HTTP/1.1` for a keep-alive default.
    pub version: String,
    /// A parsable `Content-Length`.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The `Connection` header, lower-cased.
    pub connection: Option<String>,
}

impl Head {
    /// Whether the connection stays open after this response: HTTP/1.1
    /// unless `Connection: close`, or HTTP/1.0 with `Connection:
    /// keep-alive`; never for a close-delimited body.
    pub fn keep_alive(&self) -> bool {
        if !self.chunked && self.content_length.is_none() {
            return false;
        }
        match self.connection.as_deref() {
            Some("close") => false,
            Some("keep-alive") => true,
            _ => self.version == "HTTP/1.1",
        }
    }
}

/// Reads responses from one TCP connection (it keeps the bytes of the next
/// response that arrived with this one). EOF anywhere before a response is
/// whole is `UnexpectedEof`; a malformed head or chunk is `InvalidData`;
/// past the deadline ([`HttpReader::with_deadline`]) a read is `TimedOut`.
pub struct HttpReader {
    stream: TcpStream,
    buf: Vec<u8>,
    deadline: Option<Instant>,
    /// Bytes received on this connection so far.
    received: usize,
}

impl HttpReader {
    pub fn new(stream: TcpStream) -> HttpReader {
        HttpReader {
            stream,
            buf: Vec::new(),
            deadline: None,
            received: 0,
        }
    }

    /// Every read returns by `deadline` (the stream's read timeout is set
    /// to what is left before each read).
    pub fn with_deadline(mut self, deadline: Instant) -> HttpReader {
        self.deadline = Some(deadline);
        self
    }

    /// The connection, for writing requests.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// One read into the buffer; `Ok(0)` at EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(ErrorKind::TimedOut, "the client's time limit"));
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        self.received += n;
        Ok(n)
    }

    /// Fills until the buffer holds `needle`; returns the offset just past
    /// it. `eof` names what EOF interrupted.
    fn fill_until(&mut self, needle: &[u8], eof: &str) -> std::io::Result<usize> {
        let mut from = 0;
        loop {
            if let Some(p) = self.buf[from..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                return Ok(from + p + needle.len());
            }
            from = self.buf.len().saturating_sub(needle.len() - 1);
            if self.fill()? == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, eof.to_owned()));
            }
        }
    }

    /// Reads the status line and the headers.
    pub fn read_head(&mut self) -> std::io::Result<Head> {
        let bad = |m: String| Error::new(ErrorKind::InvalidData, m);
        let eof = if self.buf.is_empty() {
            "closed before the status line"
        } else {
            "EOF in the headers"
        };
        let end = self.fill_until(b"\r\n\r\n", eof)?;
        let head = String::from_utf8_lossy(&self.buf[..end - 4]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let mut words = status_line.split_whitespace();
        let mut h = Head {
            version: words.next().unwrap_or_default().to_owned(),
            status: words.next().and_then(|s| s.parse().ok()),
            status_line: status_line.clone(),
            content_length: None,
            chunked: false,
            connection: None,
        };
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => h.content_length = value.parse().ok(),
                "transfer-encoding" => h.chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => h.connection = Some(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        Ok(h)
    }

    /// Reads the body `head` announces into `body` (appending as bytes
    /// arrive, so an error leaves what came): Content-Length bytes, the
    /// chunks up to the last one and its CRLF (no trailers expected), or
    /// everything up to EOF.
    pub fn read_body(&mut self, head: &Head, body: &mut Vec<u8>) -> std::io::Result<()> {
        if head.chunked {
            self.read_chunked(body)
        } else if let Some(len) = head.content_length {
            self.read_exact_into(body, len, "EOF in the body")
        } else {
            loop {
                body.append(&mut self.buf);
                if self.fill()? == 0 {
                    return Ok(());
                }
            }
        }
    }

    /// Moves `n` bytes to `out` as they arrive.
    fn read_exact_into(&mut self, out: &mut Vec<u8>, n: usize, eof: &str) -> std::io::Result<()> {
        let mut left = n;
        loop {
            let take = left.min(self.buf.len());
            out.extend(self.buf.drain(..take));
            left -= take;
            if left == 0 {
                return Ok(());
            }
            if self.fill()? == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, eof.to_owned()));
            }
        }
    }

    /// The chunked decoder.
    fn read_chunked(&mut self, body: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            let eol = self.fill_until(b"\r\n", "EOF in a chunk size")?;
            let line = String::from_utf8_lossy(&self.buf[..eol - 2]).into_owned();
            self.buf.drain(..eol);
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| {
                    Error::new(ErrorKind::InvalidData, format!("bad chunk size {line:?}"))
                })?;
            if size > 0 {
                self.read_exact_into(body, size, "EOF in a chunk")?;
            }
            let mut crlf = Vec::new();
            self.read_exact_into(&mut crlf, 2, "EOF after a chunk")?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

/// One HTTP response as [`HttpClient`] read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A minimal blocking HTTP/1.1 client that keeps ONE connection alive
/// across requests (so a load through a proxy takes one client port, not
/// one per request). It reconnects only when the server closed the
/// connection (`Connection: close`, or EOF on an idle connection);
/// `connects` counts the connections it opened.
pub struct HttpClient {
    addr: String,
    conn: Option<HttpReader>,
    pub connects: u64,
}

impl HttpClient {
    pub fn new(addr: &str) -> HttpClient {
        HttpClient {
            addr: addr.to_owned(),
            conn: None,
            connects: 0,
        }
    }

    /// GET `path`. A request on a reused connection that finds it closed
    /// before any byte of the answer is retried once on a new connection.
    pub fn get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Err(e) if reused && e.kind() == ErrorKind::UnexpectedEof => {
                self.conn = None;
                self.try_get(path)
            }
            r => r,
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(HttpReader::new(s));
            self.connects += 1;
        }
        let r = self.conn.as_mut().unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        if let Err(e) = r.stream().write_all(req.as_bytes()) {
            self.conn = None;
            return Err(Error::new(ErrorKind::UnexpectedEof, e));
        }
        let res = Self::read_response(r);
        match res {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Reads one response; returns it and whether the connection stays
    /// open. Only EOF before any byte of it is `UnexpectedEof` (the
    /// server closed the idle connection).
    fn read_response(r: &mut HttpReader) -> std::io::Result<(HttpResponse, bool)> {
        let (idle, received) = (r.buf.is_empty(), r.received);
        let head = r.read_head().map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof if !idle || r.received > received => {
                Error::new(ErrorKind::InvalidData, e)
            }
            _ => e,
        })?;
        let status = head.status.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidData,
                format!("bad status line {:?}", head.status_line),
            )
        })?;
        let mut body = Vec::new();
        r.read_body(&head, &mut body).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => Error::new(ErrorKind::InvalidData, e),
            _ => e,
        })?;
        Ok((HttpResponse { status, body }, head.keep_alive()))
    }
}

/// How a one-shot exchange ([`http_exchange`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpEnd {
    /// The framing said the response was whole: Content-Length reached,
    /// the last chunk read, or EOF of a close-delimited body.
    Complete,
    /// EOF before a whole response (or before any byte of one).
    Eof,
    /// ECONNRESET.
    Reset,
    /// The client's own time limit passed first.
    TimedOut,
    /// connect() failed, or another I/O error.
    Error,
}

/// One request and what came back.
#[derive(Clone)]
pub struct HttpExchange {
    /// Status of the response head, if one arrived.
    pub status: Option<u16>,
    /// Time from the start (before connect) to the complete head.
    pub head_after: Option<Duration>,
    /// Time from the start to the end of the exchange.
    pub elapsed: Duration,
    /// Body bytes received (de-chunked).
    pub body: Vec<u8>,
    /// Whether the body was `Transfer-Encoding: chunked`.
    pub chunked: bool,
    pub end: HttpEnd,
    /// The I/O error, for `Error` (and connect failures).
    pub error: Option<String>,
}

impl Debug for HttpExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        f.debug_struct("HttpExchange")
            .field("status", &self.status)
            .field("head_after", &self.head_after)
            .field("elapsed", &self.elapsed)
            .field("end", &self.end)
            .field("chunked", &self.chunked)
            .field("body", &body.chars().take(80).collect::<String>())
            .field("error", &self.error)
            .finish()
    }
}

/// Sends `request` on a new TCP connection to `addr` and reads the
/// response until its framing says it is whole, the server closes or
/// resets the connection, or `limit` (from the start, connect included)
/// passes. A failed write is not an error by itself: the response (a 5xx
/// sent before the request was read, say) is still read.
pub fn http_exchange(addr: &str, request: &[u8], limit: Duration) -> HttpExchange {
    let start = Instant::now();
    let mut ex = HttpExchange {
        status: None,
        head_after: None,
        elapsed: Duration::ZERO,
        body: Vec::new(),
        chunked: false,
        end: HttpEnd::Error,
        error: None,
    };
    let sa: SocketAddr = addr.parse().expect("IP:PORT");
    let mut s = match TcpStream::connect_timeout(&sa, limit) {
        Ok(s) => s,
        Err(e) => {
            ex.elapsed = start.elapsed();
            ex.end = match e.kind() {
                ErrorKind::ConnectionReset => HttpEnd::Reset,
                ErrorKind::TimedOut => HttpEnd::TimedOut,
                _ => HttpEnd::Error,
            };
            ex.error = Some(format!("connect: {e}"));
            return ex;
        }
    };
    let _ = s.set_nodelay(true);
    let _ = s.write_all(request);
    let mut r = HttpReader::new(s).with_deadline(start + limit);
    let read = r.read_head().and_then(|head| {
        ex.head_after = Some(start.elapsed());
        ex.status = head.status;
        ex.chunked = head.chunked;
        r.read_body(&head, &mut ex.body)
    });
    ex.end = match read {
        Ok(()) => HttpEnd::Complete,
        Err(e) => match e.kind() {
            ErrorKind::UnexpectedEof => HttpEnd::Eof,
            ErrorKind::WouldBlock | ErrorKind::TimedOut => HttpEnd::TimedOut,
            ErrorKind::ConnectionReset => HttpEnd::Reset,
            _ => {
                ex.error = Some(e.to_string());
                HttpEnd::Error
            }
        },
    };
    ex.elapsed = start.elapsed();
    ex
}

/// `GET path` with `Connection: close` through [`http_exchange`].
pub fn http_get_once(addr: &str, path: &str, limit: Duration) -> HttpExchange {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, req.as_bytes(), limit)
}
