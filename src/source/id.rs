//! The name of every source, as the `source` label shows it.

use std::fmt;

/// One reader of the kernel. Its [`SourceId::label`] is the value of the
/// `source` label on `sockscope_source_*` and `sockscope_parse_errors_total`
/// (the only meaning of that label name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum SourceId {
    /// inet_diag, TCP of both families in one dump (`TCPDIAG_GETSOCK`).
    InetDiag,
    /// inet_diag, one `SOCK_DIAG_BY_FAMILY` dump for `AF_INET`.
    InetDiagIpv4,
    /// inet_diag, one `SOCK_DIAG_BY_FAMILY` dump for `AF_INET6`.
    InetDiagIpv6,
    /// inet_diag, listeners of both families in one dump (polls between
    /// censuses; `TCPDIAG_GETSOCK`, as [`SourceId::InetDiag`]).
    InetDiagListen,
    /// inet_diag, `AF_INET` listeners only (when the one dump is refused).
    InetDiagIpv4Listen,
    /// inet_diag, `AF_INET6` listeners only.
    InetDiagIpv6Listen,
    /// unix_diag, every UNIX socket.
    UnixDiag,
    /// unix_diag, listeners only.
    UnixDiagListen,
    /// `/proc/net/tcp`.
    ProcNetTcp,
    /// `/proc/net/tcp6`.
    ProcNetTcp6,
    /// `/proc/net/unix`.
    ProcNetUnix,
    /// `/proc/sys/net/...`: the sysctls of `crate::source::sysctl`.
    Sysctl,
    /// `/proc/net/netstat` (TcpExt counters).
    ProcNetNetstat,
    /// `/proc/net/sockstat`.
    ProcNetSockstat,
    /// The eBPF connect-outcome counters (the `flows` map of
    /// `source::ebpf`), read host-wide once per poll.
    EbpfConnects,
}

impl SourceId {
    /// Every source, in exposition order.
    pub const ALL: [SourceId; 15] = [
        SourceId::InetDiag,
        SourceId::InetDiagIpv4,
        SourceId::InetDiagIpv6,
        SourceId::InetDiagListen,
        SourceId::InetDiagIpv4Listen,
        SourceId::InetDiagIpv6Listen,
        SourceId::UnixDiag,
        SourceId::UnixDiagListen,
        SourceId::ProcNetTcp,
        SourceId::ProcNetTcp6,
        SourceId::ProcNetUnix,
        SourceId::Sysctl,
        SourceId::ProcNetNetstat,
        SourceId::ProcNetSockstat,
        SourceId::EbpfConnects,
    ];

    /// The `source` label value.
    pub fn label(self) -> &'static str {
        match self {
            SourceId::InetDiag => "inet_diag",
            SourceId::InetDiagIpv4 => "inet_diag_ipv4",
            SourceId::InetDiagIpv6 => "inet_diag_ipv6",
            SourceId::InetDiagListen => "inet_diag_listen",
            SourceId::InetDiagIpv4Listen => "inet_diag_ipv4_listen",
            SourceId::InetDiagIpv6Listen => "inet_diag_ipv6_listen",
            SourceId::UnixDiag => "unix_diag",
            SourceId::UnixDiagListen => "unix_diag_listen",
            SourceId::ProcNetTcp => "proc_net_tcp",
            SourceId::ProcNetTcp6 => "proc_net_tcp6",
            SourceId::ProcNetUnix => "proc_net_unix",
            SourceId::Sysctl => "sysctl",
            SourceId::ProcNetNetstat => "proc_net_netstat",
            SourceId::ProcNetSockstat => "proc_net_sockstat",
            SourceId::EbpfConnects => "ebpf_connects",
        }
    }

    /// Index into `[_; SourceId::ALL.len()]` tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<SourceId> for &'static str {
    fn from(id: SourceId) -> &'static str {
        id.label()
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_labels_are_distinct() {
        for (i, id) in SourceId::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
        }
        let labels: std::collections::BTreeSet<_> =
            SourceId::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(labels.len(), SourceId::ALL.len());
    }
}
