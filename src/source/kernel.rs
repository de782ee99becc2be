//! One network namespace's sources: its `/proc` root (for another
//! namespace, `/proc/PID`, whose `net/` and `sys/net/` are that
//! namespace's) and its sock_diag socket, opened on first use and reopened
//! after a failure.
//!
//! Every method does one read and returns typed records (or streams them
//! into a visitor) with its [`ReadStats`], or a [`SourceError`] naming the
//! file or the request. Which of them a poll calls, and what it does when
//! one fails, is the poller's business (`crate::poller`).

use std::time::Duration;

use crate::model::{Family, TcpSocket, UnixSocket};
use crate::source::counters::{Netstat, Sockstat};
use crate::source::sock_diag::{DUMP_TIMEOUT, SockDiag};
use crate::source::sysctl::Sysctls;
use crate::source::{ProcRoot, ReadStats, SourceError, procfs};

/// The readers of one network namespace.
pub struct Kernel {
    procfs: ProcRoot,
    netlink: Option<SockDiag>,
    dump_timeout: Duration,
    /// `net/sockstat` kept open and re-read from offset 0 each time
    /// ([`Kernel::keep_sockstat_open`]).
    sockstat: Option<Option<std::fs::File>>,
}

impl Kernel {
    /// The namespace whose `/proc` is `procfs` (the process's own when it
    /// is `/proc`); sock_diag sockets are created in the calling thread's
    /// namespace.
    pub fn new(procfs: ProcRoot) -> Kernel {
        Kernel {
            procfs,
            netlink: None,
            dump_timeout: DUMP_TIMEOUT,
            sockstat: None,
        }
    }

    /// Keeps `net/sockstat` open between reads (the kernel regenerates a
    /// seq file read from offset 0, and the file stays bound to the
    /// namespace it was opened in): `--netns all` reads it in every
    /// namespace every poll, where the path walk through
    /// `/proc/thread-self` cost more than the read. One descriptor more.
    pub(crate) fn keep_sockstat_open(mut self) -> Kernel {
        self.sockstat = Some(None);
        self
    }

    /// The `/proc` root.
    pub fn procfs(&self) -> &ProcRoot {
        &self.procfs
    }

    /// `net.*` sysctls ([`Sysctls::read`]).
    pub fn sysctls(&self) -> Result<(Sysctls, ReadStats), SourceError> {
        Sysctls::read(&self.procfs).map(|s| (s, ReadStats::default()))
    }

    /// `net/netstat` ([`Netstat::read`]).
    pub fn netstat(&self) -> Result<(Netstat, ReadStats), SourceError> {
        Netstat::read(&self.procfs)
    }

    /// `net/sockstat` ([`Sockstat::read`]; through the kept file with
    /// [`Kernel::keep_sockstat_open`], reopened after a failure).
    pub fn sockstat(&mut self) -> Result<(Sockstat, ReadStats), SourceError> {
        let Some(kept) = &mut self.sockstat else {
            return Sockstat::read(&self.procfs);
        };
        let path = self.procfs.join("net/sockstat");
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let file = match kept {
            Some(f) => f,
            None => kept.insert(std::fs::File::open(&path).map_err(io)?),
        };
        let text = read_from_start(file).map_err(|e| {
            *kept = None;
            io(e)
        })?;
        Ok(Sockstat::parse(&text))
    }

    /// True when the kernel serves the one-dump request for both families
    /// ([`SockDiag::dump_tcp_any_family`]); false when it does not or the
    /// socket cannot be opened.
    pub(crate) fn any_family(&mut self) -> bool {
        self.netlink().is_ok_and(|nl| nl.any_family())
    }

    /// One sock_diag request through `f`; a failure closes the socket so
    /// that the next request starts on a fresh one.
    fn with_netlink<T>(
        &mut self,
        f: impl FnOnce(&mut SockDiag) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let res = self.netlink().and_then(f);
        if res.is_err() {
            self.netlink = None;
        }
        res
    }

    fn netlink(&mut self) -> Result<&mut SockDiag, SourceError> {
        if self.netlink.is_none() {
            self.netlink = Some(SockDiag::open_with_timeout(self.dump_timeout)?);
        }
        Ok(self.netlink.as_mut().expect("just opened"))
    }

    /// inet_diag: TCP sockets whose state bit is in `states`, of one family
    /// (`Some`) or both in one walk (`None`), with the `idiag_ext`
    /// attributes of `ext` (0, or `EXT_SKMEMINFO` for listeners' drops).
    pub fn inet_diag(
        &mut self,
        family: Option<Family>,
        states: u32,
        ext: u8,
        visit: &mut dyn FnMut(TcpSocket),
    ) -> Result<ReadStats, SourceError> {
        self.with_netlink(|nl| match family {
            Some(f) => nl.dump_tcp(f, states, ext, visit),
            None => nl.dump_tcp_any_family(states, ext, visit),
        })
    }

    /// unix_diag: UNIX sockets whose state bit is in `states`.
    pub fn unix_diag(
        &mut self,
        states: u32,
        visit: &mut dyn FnMut(UnixSocket),
    ) -> Result<ReadStats, SourceError> {
        self.with_netlink(|nl| nl.dump_unix(states, visit))
    }

    /// `net/tcp` or `net/tcp6` ([`procfs::parse_tcp`]). A missing
    /// `net/tcp6` (a kernel booted with `ipv6.disable=1`) is no IPv6
    /// socket, not an error.
    pub fn proc_net_tcp(
        &self,
        family: Family,
        visit: &mut dyn FnMut(TcpSocket),
    ) -> Result<ReadStats, SourceError> {
        let rel = match family {
            Family::Ipv4 => "net/tcp",
            Family::Ipv6 => "net/tcp6",
        };
        let reader = match self.procfs.open(rel) {
            Err(e) if family == Family::Ipv6 && e.is_not_found() => {
                return Ok(ReadStats::default());
            }
            r => r?,
        };
        procfs::parse_tcp(family, reader, visit).map_err(|source| SourceError::Io {
            path: self.procfs.join(rel),
            source,
        })
    }

    /// `net/unix` ([`procfs::parse_unix`]).
    pub fn proc_net_unix(
        &self,
        visit: &mut dyn FnMut(UnixSocket),
    ) -> Result<ReadStats, SourceError> {
        let reader = self.procfs.open("net/unix")?;
        procfs::parse_unix(reader, visit).map_err(|source| SourceError::Io {
            path: self.procfs.join("net/unix"),
            source,
        })
    }
}

/// The whole of `file` from offset 0 (pread(2)), as text.
fn read_from_start(file: &std::fs::File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut bytes = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = file.read_at(&mut buf, bytes.len() as u64)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
