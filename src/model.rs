//! Kernel socket states and the per-socket records every source yields.
//!
//! Sources (`crate::source`) stream one record per socket into a visitor;
//! collectors (`crate::collector`) aggregate them. No source keeps the whole
//! dump in memory.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Address family of an inet socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `AF_INET`
    Ipv4,
    /// `AF_INET6`
    Ipv6,
}

impl Family {
    /// Both families, in exposition order.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The `family` label value.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// Its index in [`Family::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// TCP states as numbered in `include/net/tcp_states.h` (the `st` column of
/// `/proc/net/tcp`, `idiag_state` of inet_diag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
}

impl TcpState {
    /// Every state user space sees, in kernel order. `TCP_NEW_SYN_RECV`
    /// (12) is kernel-internal: inet_diag fills `idiag_state =
    /// TCP_SYN_RECV` for request sockets (`inet_req_diag_fill()`), and
    /// `/proc/net/tcp` prints `03` (`get_openreq4()`).
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    /// The kernel number to state; `None` for numbers outside 1..=11.
    /// `TCP_NEW_SYN_RECV` (12), should a kernel ever report it, is a
    /// request socket: [`TcpState::SynRecv`]. `TCP_BOUND_INACTIVE` (13) is
    /// not a connection state: `None`.
    pub(crate) fn from_kernel(n: u8) -> Option<TcpState> {
        if n == 12 {
            return Some(TcpState::SynRecv);
        }
        TcpState::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The `state` label value (the kernel name, lower case).
    pub fn label(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::FinWait1 => "fin_wait1",
            TcpState::FinWait2 => "fin_wait2",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
        }
    }

    /// Index into `[_; TcpState::ALL.len()]` tables.
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

/// One TCP socket as seen by inet_diag or `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub family: Family,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The two queue fields, whose meaning depends on the state.
    pub queues: TcpQueues,
    /// Milliseconds until the socket's timer fires; for TIME_WAIT, the time
    /// left before it is destroyed (inet_diag `idiag_expires`; procfs
    /// `tm->when`, in jiffies converted with USER_HZ=100... see procfs).
    /// `None` when the source has no timer.
    pub expires_ms: Option<u32>,
}

/// A listener's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections queued, not yet `accept()`ed: `sk_ack_backlog` (TCP:
    /// inet_diag `idiag_rqueue`, procfs `rx_queue`; UNIX: the first word of
    /// `UNIX_DIAG_RQLEN`). The kernel lets it reach limit + 1.
    pub queued: u32,
    /// The queue's limit, min(`listen()` backlog, `somaxconn`):
    /// `sk_max_ack_backlog` (TCP: inet_diag `idiag_wqueue`; UNIX: the
    /// second word of `UNIX_DIAG_RQLEN`). `None` from procfs, which does not
    /// print it.
    pub limit: Option<u32>,
    /// TCP listeners read by inet_diag with `INET_DIAG_SKMEMINFO`: the
    /// socket's `sk_drops` and its identity. `None` for UNIX, procfs, and
    /// dumps that did not ask for it.
    pub drops: Option<SocketDrops>,
}

/// A listening socket's drop count and identity, from one inet_diag dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketDrops {
    /// `idiag_cookie` (`sock_gen_cookie()`): unique per socket for the
    /// kernel's uptime, so a listener that closes and reopens (or an
    /// `SO_REUSEPORT` member that restarts) is a new socket whose
    /// `sk_drops` starts at 0.
    pub cookie: u64,
    /// `sk_drops`: `SK_MEMINFO_DROPS` of the `INET_DIAG_SKMEMINFO`
    /// attribute (`sk_get_meminfo()`, net/core/sock.c; `ss -tlm` prints it
    /// as `d…`). For a listener, `tcp_listendrop()` counts every SYN or
    /// final ACK dropped because the accept queue (or the SYN queue) was
    /// full, and every other discard on the socket (a socket filter, a full
    /// backlog): a superset of its share of TcpExt `ListenDrops`. A drop
    /// at the final-ACK stage counts twice (`tcp_listendrop()` and the
    /// discard path of `tcp_v4_rcv()`). Wraps at 2^32.
    pub drops: u32,
}

/// The two queue fields of a TCP socket: inet_diag `idiag_rqueue` and
/// `idiag_wqueue` (`inet_diag_get_info()` → `tcp_diag_get_info()`),
/// procfs `rx_queue` and `tx_queue`. A listener's are its accept queue;
/// any other socket's are byte counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpQueues {
    /// `TCP_LISTEN`: the accept queue.
    Accept(ListenQueue),
    /// Any other state: bytes received and not read (`rcv_nxt -
    /// copied_seq`), and bytes sent and not acknowledged (`write_seq -
    /// snd_una`).
    Bytes { recv: u32, send: u32 },
}

impl TcpQueues {
    /// The accept queue of a listener; `None` for any other socket.
    pub fn accept(&self) -> Option<ListenQueue> {
        match self {
            TcpQueues::Accept(q) => Some(*q),
            TcpQueues::Bytes { .. } => None,
        }
    }
}

/// `net.ipv4.ip_local_port_range`: the ports `connect()` picks from,
/// `first..=last`, checked to hold `1 <= first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `None` unless `1 <= first <= last` (the kernel refuses anything
    /// else, `ipv4_local_port_range()`).
    pub fn new(first: u16, last: u16) -> Option<PortRange> {
        (first >= 1 && first <= last).then_some(PortRange { first, last })
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// `SOCK_*` type of a UNIX socket (`sk_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixType {
    Stream,
    Dgram,
    Seqpacket,
}

impl UnixType {
    pub const ALL: [UnixType; 3] = [UnixType::Stream, UnixType::Dgram, UnixType::Seqpacket];

    /// From the kernel's `SOCK_STREAM` (1), `SOCK_DGRAM` (2),
    /// `SOCK_SEQPACKET` (5).
    pub(crate) fn from_kernel(n: u32) -> Option<UnixType> {
        match n {
            1 => Some(UnixType::Stream),
            2 => Some(UnixType::Dgram),
            5 => Some(UnixType::Seqpacket),
            _ => None,
        }
    }

    /// The `sock_type` label value.
    pub fn label(self) -> &'static str {
        match self {
            UnixType::Stream => "stream",
            UnixType::Dgram => "dgram",
            UnixType::Seqpacket => "seqpacket",
        }
    }
}

/// The state column of `/proc/net/unix`: `socket_state` (`SS_*`,
/// include/uapi/linux/net.h) as printed by `unix_seq_show()`
/// (net/unix/af_unix.c), plus `listen` for sockets with `__SO_ACCEPTCON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixState {
    /// `SS_UNCONNECTED` (01): not connected, not listening.
    Unconnected,
    /// `SS_CONNECTING` (02): an embryo — the server side of a connection
    /// queued on a listener, not yet `accept()`ed.
    Connecting,
    /// `SS_CONNECTED` (03).
    Connected,
    /// `SS_DISCONNECTING` (04): an orphan not in `ESTABLISHED`.
    Disconnecting,
    /// A listener (Flags `00010000`, `__SO_ACCEPTCON`).
    Listen,
}

impl UnixState {
    pub const ALL: [UnixState; 5] = [
        UnixState::Unconnected,
        UnixState::Connecting,
        UnixState::Connected,
        UnixState::Disconnecting,
        UnixState::Listen,
    ];

    /// The `state` label value.
    pub fn label(self) -> &'static str {
        match self {
            UnixState::Unconnected => "unconnected",
            UnixState::Connecting => "connecting",
            UnixState::Connected => "connected",
            UnixState::Disconnecting => "disconnecting",
            UnixState::Listen => "listen",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The address a UNIX socket is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixName {
    /// A filesystem path (may contain spaces).
    Path(String),
    /// An abstract name, shown with a leading `@` as `ss` and
    /// `/proc/net/unix` do. Bytes that are not UTF-8 are replaced.
    Abstract(String),
}

impl fmt::Display for UnixName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixName::Path(p) => f.write_str(p),
            UnixName::Abstract(a) => write!(f, "@{a}"),
        }
    }
}

/// One UNIX socket as seen by unix_diag or `/proc/net/unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    pub sock_type: UnixType,
    pub state: UnixState,
    /// Bound name; `None` for unbound sockets (most client sockets).
    pub name: Option<UnixName>,
    /// Listeners only, from unix_diag `UNIX_DIAG_RQLEN` (always with a
    /// limit). `None` from procfs, which has no such column.
    pub listen_queue: Option<ListenQueue>,
}

/// True for 127.0.0.0/8, `::1` and v4-mapped loopback (`::ffff:127.x`):
/// the addresses `tcp_twsk_unique()` treats as loopback when
/// `tcp_tw_reuse` = 2.
pub(crate) fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_state_numbers_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(s as u8), Some(s));
        }
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(12), Some(TcpState::SynRecv));
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn port_range_is_checked() {
        assert!(PortRange::new(0, 10).is_none());
        assert!(PortRange::new(40000, 39999).is_none());
        let r = PortRange::new(5000, 5000).unwrap();
        assert!(r.contains(5000) && !r.contains(5001));
    }

    #[test]
    fn loopback_includes_v4_mapped() {
        assert!(is_loopback(&"::ffff:127.0.0.2".parse().unwrap()));
        assert!(is_loopback(&"127.1.2.3".parse().unwrap()));
        assert!(!is_loopback(&"::ffff:10.0.0.1".parse().unwrap()));
    }
}
