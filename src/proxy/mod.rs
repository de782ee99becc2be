//! The lab: a reference reverse proxy (`sockscope proxy`) and
//! fault-injecting upstreams (`sockscope upstream`) that reproduce the
//! failures of the seed write-ups on one machine.

pub mod reverse;
pub mod upstream;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

pub use crate::signal::shutdown_signal;

/// A TCP or UNIX-socket address: `127.0.0.1:8080`, `[::1]:8080` or
/// `unix:/run/app.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
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

/// A bound listening socket, either kind.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Binds and listens with an explicit `listen()` backlog (the kernel caps it
/// at `net.core.somaxconn`). A stale UNIX socket file is replaced.
///
/// Errors name the address: bind failures (in use, permission) and
/// `listen()` failures.
pub fn listen(addr: &Addr, backlog: u32) -> Result<Listener, String> {
    let err = |what: &str, e: std::io::Error| format!("{what} {addr}: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "127.0.0.1:80".parse::<Addr>().unwrap(),
            Addr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            "http://[::1]:80/".parse::<Addr>().unwrap(),
            Addr::Tcp("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/a b.sock".parse::<Addr>().unwrap(),
            Addr::Unix("/run/a b.sock".into())
        );
        assert!("localhost:80".parse::<Addr>().is_err());
        assert!("unix:".parse::<Addr>().is_err());
    }
}
