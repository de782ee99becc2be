//! The sysctls that bound accept queues and ephemeral ports, read from
//! `/proc/sys` under the `--path.procfs` root (per network namespace: each
//! namespace has its own `net.*`). Pure parsers are separate from the file
//! reads.

use crate::model::PortRange;
use crate::source::{ProcRoot, SourceError};

/// The settings sockscope models. Required values are plain fields; values
/// that older kernels lack are `Option`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sysctls {
    /// `net.core.somaxconn`: cap on every `listen()` backlog.
    pub somaxconn: u32,
    /// `net.ipv4.ip_local_port_range`: the ports `connect()` picks
    /// ephemeral ports from.
    pub port_range: PortRange,
    /// `net.ipv4.ip_local_reserved_ports`: ports `connect()` never picks,
    /// as inclusive ranges (JSON `[{"first": …, "last": …}]`).
    #[serde(serialize_with = "serialize_ranges")]
    pub reserved_ports: Vec<(u16, u16)>,
    /// `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only (default).
    pub tcp_tw_reuse: u8,
    /// `net.ipv4.tcp_tw_reuse_delay` in ms (kernel ≥ 6.14); `None` before.
    pub tcp_tw_reuse_delay_ms: Option<u32>,
    /// `net.ipv4.tcp_timestamps`: TIME_WAIT reuse needs timestamps.
    pub tcp_timestamps: u8,
    /// `net.ipv4.tcp_max_tw_buckets`: TIME_WAIT sockets beyond this are not
    /// created (the connection is closed without TIME_WAIT).
    pub tcp_max_tw_buckets: u32,
}

fn serialize_ranges<S: serde::Serializer>(ranges: &[(u16, u16)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Range {
        first: u16,
        last: u16,
    }
    s.collect_seq(ranges.iter().map(|&(first, last)| Range { first, last }))
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
/// ports with 1 ≤ first ≤ last ([`PortRange::new`]).
pub fn parse_port_range(s: &str) -> Option<PortRange> {
    let mut it = s.split_ascii_whitespace();
    let lo = it.next()?.parse().ok()?;
    let hi = it.next()?.parse().ok()?;
    it.next().is_none().then_some(())?;
    PortRange::new(lo, hi)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_and_list() {
        assert_eq!(
            parse_port_range("32768\t60999\n"),
            PortRange::new(32768, 60999)
        );
        assert_eq!(parse_port_range("0 10"), None);
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

    proptest::proptest! {
        #[test]
        fn never_panic(a in ".{0,200}", b in ".{0,200}") {
            let _ = parse_port_list(&a);
            let _ = parse_port_list(&b);
            let _ = parse_port_range(&a);
            let _ = parse_port_range(&b);
        }
    }
}
