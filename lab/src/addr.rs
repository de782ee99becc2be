//! Addresses, listening sockets and connected streams, TCP or UNIX.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A TCP or UNIX-socket address: `127.0.0.1:8080`, `[::1]:8080` or
/// `unix:/run/app.sock`.
///
/// Parsed by [`str::parse`] from `IP:PORT`, `http://IP:PORT` (a trailing
/// `/` is allowed) or `unix:PATH`; host names are not resolved. Displayed
/// as `IP:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// An IPv4 or IPv6 socket address.
    Tcp(SocketAddr),
    /// The path of a UNIX stream socket.
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Addr {
    /// What was wrong, quoting the input.
    type Err = String;

    fn from_str(s: &str) -> Result<Addr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{s:?}: empty socket path"));
            }
            return Ok(Addr::Unix(p.into()));
        }
        let s2 = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        s2.parse()
            .map(Addr::Tcp)
            .map_err(|_| format!("{s:?}: expected IP:PORT, http://IP:PORT or unix:PATH"))
    }
}

/// A bound listening socket, either kind, registered with a tokio runtime.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A UNIX stream-socket listener.
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Accepts one connection; TCP connections get `TCP_NODELAY` (a failure
    /// to set it is ignored).
    ///
    /// Errors: those of `accept()` (`EMFILE`, `ECONNABORTED`, ...).
    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// Binds and listens with an explicit `listen()` backlog (the kernel caps it
/// at `net.core.somaxconn`). A TCP listener gets `SO_REUSEADDR`; a stale
/// UNIX socket file is replaced. Must be called within a tokio runtime.
///
/// Errors name the call and the address, e.g. `bind 127.0.0.1:80:
/// Address already in use (os error 98)`: socket creation, bind (in use,
/// permission), `listen()` and registration failures.
pub fn listen(addr: &Addr, backlog: u32) -> Result<Listener, String> {
    let err = |what: &str, e: io::Error| format!("{what} {addr}: {e}");
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    match addr {
        Addr::Tcp(a) => {
            let s = Socket::new(Domain::for_address(*a), Type::STREAM, None)
                .map_err(|e| err("socket", e))?;
            s.set_reuse_address(true)
                .map_err(|e| err("setsockopt", e))?;
            s.bind(&(*a).into()).map_err(|e| err("bind", e))?;
            s.listen(backlog).map_err(|e| err("listen", e))?;
            s.set_nonblocking(true).map_err(|e| err("fcntl", e))?;
            tokio::net::TcpListener::from_std(s.into())
                .map(Listener::Tcp)
                .map_err(|e| err("register", e))
        }
        Addr::Unix(p) => {
            if std::fs::symlink_metadata(p)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(p);
            }
            let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| err("socket", e))?;
            let sa = SockAddr::unix(p).map_err(|e| err("address", e))?;
            s.bind(&sa).map_err(|e| err("bind", e))?;
            s.listen(backlog).map_err(|e| err("listen", e))?;
            s.set_nonblocking(true).map_err(|e| err("fcntl", e))?;
            let std_listener: std::os::unix::net::UnixListener = s.into();
            tokio::net::UnixListener::from_std(std_listener)
                .map(Listener::Unix)
                .map_err(|e| err("register", e))
        }
    }
}

/// A connected stream socket, either kind: accepted by a [`Listener`] or
/// opened by [`Stream::connect`].
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A UNIX stream-socket connection.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `addr`; TCP connections get `TCP_NODELAY` (a failure to
    /// set it is ignored). No timeout of its own.
    ///
    /// Errors: those of `connect()` (`ECONNREFUSED`, `EADDRNOTAVAIL`,
    /// `ENOENT` for a missing socket file, ...).
    pub async fn connect(addr: &Addr) -> io::Result<Stream> {
        match addr {
            Addr::Tcp(a) => TcpStream::connect(a).await.map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Addr::Unix(p) => UnixStream::connect(p).await.map(Stream::Unix),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
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
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests;
