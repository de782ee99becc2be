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
    /// A request socket (SYN received, SYN-ACK sent): inet_diag reports it
    /// as 12; `/proc/net/tcp` prints it as `SYN_RECV` (03).
    NewSynRecv = 12,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 12] = [
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
        TcpState::NewSynRecv,
    ];

    /// The kernel number to state; `None` for numbers outside 1..=12
    /// (e.g. `TCP_BOUND_INACTIVE` = 13, which is not a connection state).
    pub fn from_kernel(n: u8) -> Option<TcpState> {
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
            TcpState::NewSynRecv => "new_syn_recv",
        }
    }

    /// Index into `[_; 12]` tables.
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
    /// For LISTEN: accept-queue length (`sk_ack_backlog`). Otherwise bytes
    /// in the receive queue. inet_diag `idiag_rqueue`; procfs `rx_queue`.
    pub rqueue: u32,
    /// For LISTEN: the accept-queue limit (`sk_max_ack_backlog`,
    /// min(backlog, somaxconn)), inet_diag `idiag_wqueue` only; `None` from
    /// procfs, whose `tx_queue` is always 0 for listeners.
    pub wqueue: Option<u32>,
    /// Milliseconds until the socket's timer fires; for TIME_WAIT, the time
    /// left before it is destroyed (inet_diag `idiag_expires`; procfs
    /// `tm->when`, in jiffies converted with USER_HZ=100... see procfs).
    /// `None` when the source has no timer.
    pub expires_ms: Option<u32>,
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
    pub fn from_kernel(n: u32) -> Option<UnixType> {
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
    /// Listeners only: (queued connections, backlog limit) from unix_diag
    /// `UNIX_DIAG_RQLEN`. `None` from procfs, which has no such column.
    pub listen_queue: Option<(u32, u32)>,
}

/// Formats a listener's address the way the `listener` label shows it:
/// `127.0.0.1:8080`, `[::]:443`.
pub fn socket_label(addr: &SocketAddr) -> String {
    addr.to_string()
}

/// True for 127.0.0.0/8, `::1` and v4-mapped loopback (`::ffff:127.x`):
/// the addresses `tcp_twsk_unique()` treats as loopback when
/// `tcp_tw_reuse` = 2.
pub fn is_loopback(ip: &IpAddr) -> bool {
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
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn loopback_includes_v4_mapped() {
        assert!(is_loopback(&"::ffff:127.0.0.2".parse().unwrap()));
        assert!(is_loopback(&"127.1.2.3".parse().unwrap()));
        assert!(!is_loopback(&"::ffff:10.0.0.1".parse().unwrap()));
    }
}
