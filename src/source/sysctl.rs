//! The sysctls that bound accept queues and ephemeral ports, read from
//! `/proc/sys` under the `--path.procfs` root. Pure parsers are separate
//! from the file reads.

use crate::source::{ProcRoot, SourceError};

/// The settings sockscope models. Required values are plain fields; values
/// that older kernels lack are `Option`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sysctls {
    /// `net.core.somaxconn`: cap on every `listen()` backlog.
    pub somaxconn: u32,
    /// `net.ipv4.ip_local_port_range`: first and last port (inclusive) that
    /// `connect()` picks ephemeral ports from.
    pub port_range: (u16, u16),
    /// `net.ipv4.ip_local_reserved_ports`: ports `connect()` never picks.
    pub reserved_ports: Vec<(u16, u16)>,
    /// `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only (default).
    pub tcp_tw_reuse: u8,
    /// `net.ipv4.tcp_tw_reuse_delay` in ms (kernel ≥ 6.13); `None` before.
    pub tcp_tw_reuse_delay_ms: Option<u32>,
    /// `net.ipv4.tcp_timestamps`: TIME_WAIT reuse needs timestamps.
    pub tcp_timestamps: u8,
    /// `net.ipv4.tcp_max_tw_buckets`: TIME_WAIT sockets beyond this are not
    /// created (the connection is closed without TIME_WAIT).
    pub tcp_max_tw_buckets: u32,
}

fn read_trimmed(root: &ProcRoot, rel: &str) -> Result<String, SourceError> {
    Ok(root.read_to_string(rel)?.trim().to_owned())
}

fn number<T: std::str::FromStr>(root: &ProcRoot, rel: &str) -> Result<T, SourceError> {
    let s = read_trimmed(root, rel)?;
    s.parse().map_err(|_| SourceError::Parse {
        path: root.join(rel),
        what: format!("not a number: {s:?}"),
    })
}

impl Sysctls {
    /// Reads every sysctl under `root/sys/net/...`.
    ///
    /// Errors: a required file is missing or unparsable (the error names
    /// it). A missing `tcp_tw_reuse_delay` is not an error.
    pub fn read(root: &ProcRoot) -> Result<Sysctls, SourceError> {
        let range_rel = "sys/net/ipv4/ip_local_port_range";
        let range = read_trimmed(root, range_rel)?;
        let port_range = parse_port_range(&range).ok_or_else(|| SourceError::Parse {
            path: root.join(range_rel),
            what: format!("expected two ports, got {range:?}"),
        })?;
        let reserved_rel = "sys/net/ipv4/ip_local_reserved_ports";
        let reserved = read_trimmed(root, reserved_rel)?;
        let reserved_ports = parse_port_list(&reserved).ok_or_else(|| SourceError::Parse {
            path: root.join(reserved_rel),
            what: format!("expected a port list like 8080,9000-9100, got {reserved:?}"),
        })?;
        let delay_rel = "sys/net/ipv4/tcp_tw_reuse_delay";
        let tcp_tw_reuse_delay_ms = if root.join(delay_rel).exists() {
            Some(number(root, delay_rel)?)
        } else {
            None
        };
        Ok(Sysctls {
            somaxconn: number(root, "sys/net/core/somaxconn")?,
            port_range,
            reserved_ports,
            tcp_tw_reuse: number(root, "sys/net/ipv4/tcp_tw_reuse")?,
            tcp_tw_reuse_delay_ms,
            tcp_timestamps: number(root, "sys/net/ipv4/tcp_timestamps")?,
            tcp_max_tw_buckets: number(root, "sys/net/ipv4/tcp_max_tw_buckets")?,
        })
    }
}

/// Parses `ip_local_port_range` ("32768\t60999"). `None` unless it is two
/// ports with first ≤ last.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_ascii_whitespace();
    let lo = it.next()?.parse().ok()?;
    let hi = it.next()?.parse().ok()?;
    (it.next().is_none() && lo <= hi).then_some((lo, hi))
}

/// Parses `ip_local_reserved_ports` ("" or "8080,9000-9100") into inclusive
/// ranges. `None` on any malformed element.
pub fn parse_port_list(s: &str) -> Option<Vec<(u16, u16)>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',')
        .map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                    (a <= b).then_some((a, b))
                }
                None => part.parse().ok().map(|p| (p, p)),
            }
        })
        .collect()
}

/// `/proc/net/netstat` and `/proc/net/sockstat` figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    /// TcpExt `ListenOverflows`: SYNs/ACKs dropped because an accept queue
    /// was full (`LINUX_MIB_LISTENOVERFLOWS`).
    pub listen_overflows: Option<u64>,
    /// TcpExt `ListenDrops`: every drop at a listener, overflows included.
    pub listen_drops: Option<u64>,
    /// sockstat `TCP: ... tw N`: TIME_WAIT sockets in the namespace.
    pub sockstat_tcp_tw: Option<u64>,
    /// sockstat `TCP: inuse N`.
    pub sockstat_tcp_inuse: Option<u64>,
    /// sockstat `TCP: orphan N`.
    pub sockstat_tcp_orphan: Option<u64>,
}

/// Looks up `key` in the `prefix` section of a netstat/snmp-style file: a
/// header line `Prefix: K1 K2 ...` followed by `Prefix: V1 V2 ...`.
pub fn netstat_value(content: &str, prefix: &str, key: &str) -> Option<u64> {
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
pub fn sockstat_value(content: &str, prefix: &str, key: &str) -> Option<u64> {
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

impl KernelCounters {
    /// Parses the contents of `/proc/net/netstat` and `/proc/net/sockstat`.
    /// A missing key stays `None` (the caller counts it as a parse error).
    pub fn parse(netstat: &str, sockstat: &str) -> KernelCounters {
        KernelCounters {
            listen_overflows: netstat_value(netstat, "TcpExt", "ListenOverflows"),
            listen_drops: netstat_value(netstat, "TcpExt", "ListenDrops"),
            sockstat_tcp_tw: sockstat_value(sockstat, "TCP", "tw"),
            sockstat_tcp_inuse: sockstat_value(sockstat, "TCP", "inuse"),
            sockstat_tcp_orphan: sockstat_value(sockstat, "TCP", "orphan"),
        }
    }

    /// Number of expected figures that were absent.
    pub fn missing(&self) -> u64 {
        [
            self.listen_overflows,
            self.listen_drops,
            self.sockstat_tcp_tw,
            self.sockstat_tcp_inuse,
            self.sockstat_tcp_orphan,
        ]
        .iter()
        .filter(|v| v.is_none())
        .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_and_list() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("40000 39999"), None);
        assert_eq!(parse_port_range("1 2 3"), None);
        assert_eq!(parse_port_list(""), Some(vec![]));
        assert_eq!(
            parse_port_list("8080,9000-9100"),
            Some(vec![(8080, 8080), (9000, 9100)])
        );
        assert_eq!(parse_port_list("9100-9000"), None);
        assert_eq!(parse_port_list("x"), None);
    }

    // From kernel 6.18 (trimmed to the first TcpExt columns that matter).
    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops\n\
                           TcpExt: 0 0 17 21\n\
                           IpExt: InNoRoutes\nIpExt: 0\n";
    const SOCKSTAT: &str =
        "sockets: used 6\nTCP: inuse 3 orphan 0 tw 1200 alloc 4 mem 1\nUDP: inuse 0 mem 0\n";

    #[test]
    fn counters() {
        let c = KernelCounters::parse(NETSTAT, SOCKSTAT);
        assert_eq!(c.listen_overflows, Some(17));
        assert_eq!(c.listen_drops, Some(21));
        assert_eq!(c.sockstat_tcp_tw, Some(1200));
        assert_eq!(c.sockstat_tcp_inuse, Some(3));
        assert_eq!(c.missing(), 0);
        let c = KernelCounters::parse("TcpExt: A\nTcpExt: x\n", "garbage");
        assert_eq!(c.missing(), 5);
    }

    proptest::proptest! {
        #[test]
        fn never_panic(a in ".{0,200}", b in ".{0,200}") {
            let _ = KernelCounters::parse(&a, &b);
            let _ = parse_port_list(&a);
            let _ = parse_port_range(&b);
        }
    }
}
