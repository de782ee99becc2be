//! Counters of `/proc/net/netstat` and `/proc/net/sockstat` under the
//! `--path.procfs` root: reads, then pure parsers.

use crate::source::{ProcRoot, ReadStats, SourceError};

/// The TcpExt figures of `/proc/net/netstat` (`/proc/PID/net/netstat`
/// for another namespace), from `netstat_seq_show()`
/// (net/ipv4/proc.c).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Netstat {
    /// TcpExt `ListenOverflows`: SYNs/ACKs dropped because an accept queue
    /// was full (`LINUX_MIB_LISTENOVERFLOWS`).
    pub listen_overflows: Option<u64>,
    /// TcpExt `ListenDrops`: every drop at a listener, overflows included
    /// (`LINUX_MIB_LISTENDROPS`).
    pub listen_drops: Option<u64>,
}

/// The `TCP:` line of `/proc/net/sockstat` (`sockstat_seq_show()`,
/// net/ipv4/proc.c).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sockstat {
    /// `tw`: TIME_WAIT sockets in the namespace.
    pub tcp_tw: Option<u64>,
    /// `inuse`: TCP sockets in use.
    pub tcp_inuse: Option<u64>,
    /// `orphan`: TCP sockets no process holds.
    pub tcp_orphan: Option<u64>,
}

/// Looks up `key` in the `prefix` section of a netstat/snmp-style file: a
/// header line `Prefix: K1 K2 ...` followed by `Prefix: V1 V2 ...`.
pub(crate) fn netstat_value(content: &str, prefix: &str, key: &str) -> Option<u64> {
    let mut lines = content.lines();
    while let Some(header) = lines.next() {
        let Some(keys) = header
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(':'))
        else {
            continue;
        };
        let values = lines.next()?.strip_prefix(prefix)?.strip_prefix(':')?;
        let idx = keys.split_ascii_whitespace().position(|k| k == key)?;
        return values.split_ascii_whitespace().nth(idx)?.parse().ok();
    }
    None
}

/// Looks up `key` in a sockstat line `Prefix: k1 v1 k2 v2 ...`.
pub(crate) fn sockstat_value(content: &str, prefix: &str, key: &str) -> Option<u64> {
    let line = content
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(':'))?;
    let mut it = line.split_ascii_whitespace();
    while let Some(k) = it.next() {
        let v = it.next()?;
        if k == key {
            return v.parse().ok();
        }
    }
    None
}

impl Netstat {
    /// Parses the content of `/proc/net/netstat`; a missing key stays
    /// `None` and counts as a parse error in the returned stats.
    pub fn parse(content: &str) -> (Netstat, ReadStats) {
        let n = Netstat {
            listen_overflows: netstat_value(content, "TcpExt", "ListenOverflows"),
            listen_drops: netstat_value(content, "TcpExt", "ListenDrops"),
        };
        (n, stats(&[n.listen_overflows, n.listen_drops]))
    }

    /// Reads and parses `root/net/netstat`.
    pub fn read(root: &ProcRoot) -> Result<(Netstat, ReadStats), SourceError> {
        Ok(Netstat::parse(&root.read_to_string("net/netstat")?))
    }
}

impl Sockstat {
    /// Parses the content of `/proc/net/sockstat`; a missing key stays
    /// `None` and counts as a parse error in the returned stats.
    pub fn parse(content: &str) -> (Sockstat, ReadStats) {
        let s = Sockstat {
            tcp_tw: sockstat_value(content, "TCP", "tw"),
            tcp_inuse: sockstat_value(content, "TCP", "inuse"),
            tcp_orphan: sockstat_value(content, "TCP", "orphan"),
        };
        (s, stats(&[s.tcp_tw, s.tcp_inuse, s.tcp_orphan]))
    }

    /// Reads and parses `root/net/sockstat`.
    pub fn read(root: &ProcRoot) -> Result<(Sockstat, ReadStats), SourceError> {
        Ok(Sockstat::parse(&root.read_to_string("net/sockstat")?))
    }
}

/// One record per figure found, one parse error per figure missing.
fn stats(figures: &[Option<u64>]) -> ReadStats {
    let missing = figures.iter().filter(|v| v.is_none()).count() as u64;
    ReadStats {
        records: figures.len() as u64 - missing,
        parse_errors: missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From kernel 6.18 (trimmed to the first TcpExt columns that matter).
    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops\n\
                           TcpExt: 0 0 17 21\n\
                           IpExt: InNoRoutes\nIpExt: 0\n";
    const SOCKSTAT: &str =
        "sockets: used 6\nTCP: inuse 3 orphan 0 tw 1200 alloc 4 mem 1\nUDP: inuse 0 mem 0\n";

    #[test]
    fn counters() {
        let (n, st) = Netstat::parse(NETSTAT);
        assert_eq!((n.listen_overflows, n.listen_drops), (Some(17), Some(21)));
        assert_eq!((st.records, st.parse_errors), (2, 0));
        let (s, st) = Sockstat::parse(SOCKSTAT);
        assert_eq!(
            (s.tcp_tw, s.tcp_inuse, s.tcp_orphan),
            (Some(1200), Some(3), Some(0))
        );
        assert_eq!(st.parse_errors, 0);
        let (_, st) = Netstat::parse("TcpExt: A\nTcpExt: x\n");
        assert_eq!((st.records, st.parse_errors), (0, 2));
        let (_, st) = Sockstat::parse("garbage");
        assert_eq!(st.parse_errors, 3);
    }

    proptest::proptest! {
        #[test]
        fn never_panic(a in ".{0,200}") {
            let _ = Netstat::parse(&a);
            let _ = Sockstat::parse(&a);
        }
    }
}
