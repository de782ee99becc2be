//! The fallback chains of the socket-table readers, built once from
//! `--source` ([`SourceMode`]) and the kind of read (every socket, or the
//! listeners alone), and the observer seam they feed.
//!
//! A chain is an ordered list of [`TcpReader`]s (or [`UnixReader`]s). TCP
//! first tries the one dump of both families when the kernel serves it
//! (`TCPDIAG_GETSOCK`), then, for each family it did not deliver, each of
//! that family's readers in turn (inet_diag, then `/proc/net/tcp{,6}`)
//! until one succeeds. Each reader fills a fresh observer, so one that
//! fails half-way is discarded whole and its fallback counts nothing
//! twice; what a reader delivered is merged into the result. Every attempt
//! runs through [`Health::execute`] and its status is pushed to the
//! caller's list, in the order tried.
//!
//! Readers deliver a family's listeners before any other socket: inet_diag
//! is asked for `TCP_LISTEN_ONLY` first, and `/proc/net/tcp` walks the
//! listening hash before the established one (`tcp_seq_next()`), so an
//! observer that needs the listening ports to classify the rest (the
//! ephemeral-port pools: a socket on a listening port was not picked by
//! `connect()`) has them when it needs them ([`TcpObserver`]).
//!
//! A polled source that streams records takes a reader here (a `Kernel`
//! method that streams typed records into an observer), an observer trait
//! and a chain; one that returns a value (a count, a table's fill) needs
//! none of this: its `Part` is read in `Poller::poll_with` (README
//! "Architecture").

use crate::collector::health::{Health, SourceStatus};
use crate::model::{Family, TcpSocket, UnixSocket};
use crate::source::kernel::Kernel;
use crate::source::sock_diag::{
    EXT_SKMEMINFO, TCP_ALL_STATES, TCP_LISTEN_ONLY, TCPF_BOUND_INACTIVE, UNIX_ALL_STATES,
    UNIX_LISTEN_ONLY,
};
use crate::source::{ReadStats, SourceError, SourceId};

/// Where socket tables are read from (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// sock_diag netlink, falling back per family to procfs on failure.
    Auto,
    /// sock_diag netlink only.
    Netlink,
    /// `/proc/net/{tcp,tcp6,unix}` only.
    Procfs,
}

/// What a read asks of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Listeners only (netlink only: procfs cannot filter by state).
    Listeners,
    /// Every socket; with bound-only sockets (`TCPF_BOUND_INACTIVE`,
    /// kernel ≥ 6.8) when `bound` is true.
    Census { bound: bool },
}

/// Consumes TCP sockets as a reader yields them: every listener of a
/// family before any other socket of it (module docs).
pub(crate) trait TcpObserver {
    fn observe(&mut self, s: &TcpSocket);
    /// Called once `reader` has delivered `family` whole.
    fn family_read(&mut self, family: Family, reader: TcpReader);
    /// Adds what another observer of the same read saw.
    fn merge(&mut self, other: Self);
}

/// Consumes UNIX sockets as a reader yields them.
pub(crate) trait UnixObserver {
    fn observe(&mut self, s: &UnixSocket);
}

/// One reader of a TCP socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpReader {
    /// inet_diag, both families in one dump (`TCPDIAG_GETSOCK`).
    InetDiagAny,
    /// inet_diag, one family (`SOCK_DIAG_BY_FAMILY`).
    InetDiag(Family),
    /// `/proc/net/tcp` or `/proc/net/tcp6`.
    ProcNetTcp(Family),
}

impl TcpReader {
    /// True for sock_diag netlink.
    pub(crate) fn netlink(self) -> bool {
        !matches!(self, TcpReader::ProcNetTcp(_))
    }

    fn id(self, read: Read) -> SourceId {
        let listen = read == Read::Listeners;
        match self {
            TcpReader::InetDiagAny if listen => SourceId::InetDiagListen,
            TcpReader::InetDiagAny => SourceId::InetDiag,
            TcpReader::InetDiag(Family::Ipv4) if listen => SourceId::InetDiagIpv4Listen,
            TcpReader::InetDiag(Family::Ipv4) => SourceId::InetDiagIpv4,
            TcpReader::InetDiag(Family::Ipv6) if listen => SourceId::InetDiagIpv6Listen,
            TcpReader::InetDiag(Family::Ipv6) => SourceId::InetDiagIpv6,
            TcpReader::ProcNetTcp(Family::Ipv4) => SourceId::ProcNetTcp,
            TcpReader::ProcNetTcp(Family::Ipv6) => SourceId::ProcNetTcp6,
        }
    }

    /// One read of the table into `visit`: the listeners first (with
    /// `INET_DIAG_SKMEMINFO`, for their `sk_drops`), then, for a census,
    /// every other state.
    fn read(
        self,
        kernel: &mut Kernel,
        read: Read,
        visit: &mut dyn FnMut(TcpSocket),
    ) -> Result<ReadStats, SourceError> {
        let family = match self {
            TcpReader::InetDiagAny => None,
            TcpReader::InetDiag(f) => Some(f),
            TcpReader::ProcNetTcp(f) => return kernel.proc_net_tcp(f, visit),
        };
        let mut stats = kernel.inet_diag(family, TCP_LISTEN_ONLY, EXT_SKMEMINFO, visit)?;
        if let Read::Census { bound } = read {
            let mut rest = TCP_ALL_STATES & !TCP_LISTEN_ONLY;
            if bound {
                rest |= TCPF_BOUND_INACTIVE;
            }
            stats.add(kernel.inet_diag(family, rest, 0, visit)?);
        }
        Ok(stats)
    }

    fn families(self) -> &'static [Family] {
        match self {
            TcpReader::InetDiagAny => &Family::ALL,
            TcpReader::InetDiag(Family::Ipv4) | TcpReader::ProcNetTcp(Family::Ipv4) => {
                &[Family::Ipv4]
            }
            TcpReader::InetDiag(Family::Ipv6) | TcpReader::ProcNetTcp(Family::Ipv6) => {
                &[Family::Ipv6]
            }
        }
    }
}

/// The TCP readers of one kind of read, in fallback order.
#[derive(Debug, Clone)]
pub(crate) struct TcpChain {
    read: Read,
    /// Try [`TcpReader::InetDiagAny`] first (where the kernel serves it).
    any: bool,
    /// Each family's readers, in order.
    per_family: [Vec<TcpReader>; 2],
}

/// What a chain read: the merged observer, which families were read, and
/// whether every family came from netlink.
pub(crate) struct ChainRead<O> {
    pub observer: O,
    /// Per [`Family::ALL`].
    pub read: [bool; 2],
    pub netlink: bool,
}

impl<O> ChainRead<O> {
    /// True when every family was read.
    pub(crate) fn whole(&self) -> bool {
        self.read.iter().all(|&r| r)
    }
}

impl TcpChain {
    /// The chain of `read` under `mode`; `any_family`: try the one dump of
    /// both families first (`Config::inet_diag_any_family`).
    pub(crate) fn new(mode: SourceMode, any_family: bool, read: Read) -> TcpChain {
        let netlink = mode != SourceMode::Procfs;
        let procfs = mode != SourceMode::Netlink && read != Read::Listeners;
        let per_family = Family::ALL.map(|f| {
            let mut v = Vec::new();
            if netlink {
                v.push(TcpReader::InetDiag(f));
            }
            if procfs {
                v.push(TcpReader::ProcNetTcp(f));
            }
            v
        });
        TcpChain {
            read,
            any: netlink && any_family,
            per_family,
        }
    }

    /// The census chain, asking for bound-only sockets when `bound`.
    ///
    /// # Panics
    /// On a listeners-only chain.
    pub(crate) fn with_bound(&mut self, bound: bool) -> &Self {
        assert!(self.read != Read::Listeners, "a census chain");
        self.read = Read::Census { bound };
        self
    }

    /// Reads the table through the chain (module docs). `fresh` makes an
    /// empty observer for each attempt.
    pub(crate) fn read<O: TcpObserver>(
        &self,
        kernel: &mut Kernel,
        health: &mut Health,
        sources: &mut Vec<SourceStatus>,
        fresh: &dyn Fn() -> O,
    ) -> ChainRead<O> {
        let mut out = ChainRead {
            observer: fresh(),
            read: [false; 2],
            netlink: true,
        };
        if self.any && kernel.any_family() {
            self.attempt(
                TcpReader::InetDiagAny,
                kernel,
                health,
                sources,
                fresh,
                &mut out,
            );
        }
        for (i, readers) in self.per_family.iter().enumerate() {
            for &r in readers {
                if out.read[i] {
                    break;
                }
                self.attempt(r, kernel, health, sources, fresh, &mut out);
            }
            if !out.read[i] {
                out.netlink = false;
                // A listeners-only read that misses a family is replaced
                // by the census: no point in reading on.
                if self.read == Read::Listeners {
                    break;
                }
            }
        }
        out
    }

    fn attempt<O: TcpObserver>(
        &self,
        r: TcpReader,
        kernel: &mut Kernel,
        health: &mut Health,
        sources: &mut Vec<SourceStatus>,
        fresh: &dyn Fn() -> O,
        out: &mut ChainRead<O>,
    ) {
        let (got, st) = health.execute(r.id(self.read), || {
            let mut o = fresh();
            let stats = r.read(kernel, self.read, &mut |s| o.observe(&s))?;
            Ok((o, stats))
        });
        sources.push(st);
        let Some(mut o) = got else { return };
        for &f in r.families() {
            o.family_read(f, r);
            out.read[f.index()] = true;
        }
        out.netlink &= r.netlink();
        out.observer.merge(o);
    }
}

/// One reader of the UNIX socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnixReader {
    /// unix_diag.
    UnixDiag,
    /// `/proc/net/unix`.
    ProcNetUnix,
}

/// The UNIX readers of one kind of read, in fallback order.
#[derive(Debug, Clone)]
pub(crate) struct UnixChain {
    read: Read,
    readers: Vec<UnixReader>,
}

impl UnixChain {
    /// The chain of `read` under `mode` (listeners: unix_diag only).
    pub(crate) fn new(mode: SourceMode, read: Read) -> UnixChain {
        let mut readers = Vec::new();
        if mode != SourceMode::Procfs {
            readers.push(UnixReader::UnixDiag);
        }
        if mode != SourceMode::Netlink && read != Read::Listeners {
            readers.push(UnixReader::ProcNetUnix);
        }
        UnixChain { read, readers }
    }

    /// Reads the table through the chain: the first reader that succeeds,
    /// and whether it was netlink; `None` when none did.
    pub(crate) fn read<O: UnixObserver>(
        &self,
        kernel: &mut Kernel,
        health: &mut Health,
        sources: &mut Vec<SourceStatus>,
        fresh: &dyn Fn() -> O,
    ) -> Option<(O, bool)> {
        for &r in &self.readers {
            let id = match (r, self.read) {
                (UnixReader::UnixDiag, Read::Listeners) => SourceId::UnixDiagListen,
                (UnixReader::UnixDiag, _) => SourceId::UnixDiag,
                (UnixReader::ProcNetUnix, _) => SourceId::ProcNetUnix,
            };
            let (got, st) = health.execute(id, || {
                let mut o = fresh();
                let mut visit = |s: UnixSocket| o.observe(&s);
                let stats = match (r, self.read) {
                    (UnixReader::UnixDiag, Read::Listeners) => {
                        kernel.unix_diag(UNIX_LISTEN_ONLY, &mut visit)?
                    }
                    (UnixReader::UnixDiag, _) => kernel.unix_diag(UNIX_ALL_STATES, &mut visit)?,
                    (UnixReader::ProcNetUnix, _) => kernel.proc_net_unix(&mut visit)?,
                };
                Ok((o, stats))
            });
            sources.push(st);
            if let Some(o) = got {
                return Some((o, r == UnixReader::UnixDiag));
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "chain/tests.rs"]
mod tests;
