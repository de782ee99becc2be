//! Kernel counters beside the socket census: TcpExt `ListenOverflows` /
//! `ListenDrops` of `/proc/net/netstat` and the `TCP:` line of
//! `/proc/net/sockstat` ([`crate::source::counters`]).

use crate::metrics::Families;
use crate::source::counters::{Netstat, Sockstat};

crate::metric_specs! {
    LISTEN_OVERFLOWS = "sockscope_tcp_listen_overflows_total", Counter, [],
        "TcpExt ListenOverflows from /proc/net/netstat: connections dropped because an accept queue was full.";
    LISTEN_DROPS = "sockscope_tcp_listen_drops_total", Counter, [],
        "TcpExt ListenDrops from /proc/net/netstat: connections dropped at a listener for any reason.";
    SOCKSTAT_TW = "sockscope_sockstat_tcp_tw", Gauge, [],
        "TIME_WAIT sockets in the namespace per /proc/net/sockstat (cross-check of sockscope_tcp_sockets{state=\"time_wait\"}).";
    SOCKSTAT_INUSE = "sockscope_sockstat_tcp_inuse", Gauge, [],
        "TCP sockets in use per /proc/net/sockstat.";
    SOCKSTAT_ORPHAN = "sockscope_sockstat_tcp_orphan", Gauge, [],
        "Orphaned TCP sockets (closed by the application, still in the kernel) per /proc/net/sockstat.";
}

fn f(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// The counter families of the files that were read; a figure the file
/// lacked is absent.
pub fn encode(netstat: Option<&Netstat>, sockstat: Option<&Sockstat>, out: &mut Families) {
    if let Some(n) = netstat {
        out.one(&LISTEN_OVERFLOWS, f(n.listen_overflows));
        out.one(&LISTEN_DROPS, f(n.listen_drops));
    }
    if let Some(s) = sockstat {
        out.one(&SOCKSTAT_TW, f(s.tcp_tw));
        out.one(&SOCKSTAT_INUSE, f(s.tcp_inuse));
        out.one(&SOCKSTAT_ORPHAN, f(s.tcp_orphan));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_and_absent_when_missing() {
        let (n, _) = Netstat::parse("TcpExt: ListenOverflows ListenDrops\nTcpExt: 17 21\n");
        let (s, _) = Sockstat::parse("TCP: inuse 3 orphan 0 tw 1200 alloc 4 mem 1\n");
        let text = crate::metrics::encoded(|o| encode(Some(&n), Some(&s), o));
        for line in [
            "# TYPE sockscope_tcp_listen_overflows_total counter\n",
            "sockscope_tcp_listen_overflows_total 17\n",
            "sockscope_tcp_listen_drops_total 21\n",
            "sockscope_sockstat_tcp_tw 1200\n",
            "sockscope_sockstat_tcp_inuse 3\n",
            "sockscope_sockstat_tcp_orphan 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let (partial, _) = Sockstat::parse("TCP: inuse 3\n");
        let text = crate::metrics::encoded(|o| encode(None, Some(&partial), o));
        assert_eq!(
            text,
            "# HELP sockscope_sockstat_tcp_inuse TCP sockets in use per /proc/net/sockstat.\n\
             # TYPE sockscope_sockstat_tcp_inuse gauge\nsockscope_sockstat_tcp_inuse 3\n"
        );
    }
}
