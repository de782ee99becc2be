//! The sysctls that bound accept queues and ephemeral ports, as gauges:
//! `sockscope_sysctl_*`, one per file of `/proc/sys/net` that
//! [`Sysctls::read`] reads.

use crate::metrics::Families;
use crate::source::sysctl::Sysctls;

crate::metric_specs! {
    SOMAXCONN = "sockscope_sysctl_somaxconn", Gauge, [],
        "net.core.somaxconn: the cap on every listen() backlog.";
    PORT_RANGE_FIRST = "sockscope_sysctl_ip_local_port_range_first", Gauge, [],
        "net.ipv4.ip_local_port_range: first port.";
    PORT_RANGE_LAST = "sockscope_sysctl_ip_local_port_range_last", Gauge, [],
        "net.ipv4.ip_local_port_range: last port.";
    TW_REUSE = "sockscope_sysctl_tcp_tw_reuse", Gauge, [],
        "net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only.";
    TW_REUSE_DELAY = "sockscope_sysctl_tcp_tw_reuse_delay_seconds", Gauge, [],
        "net.ipv4.tcp_tw_reuse_delay (kernel >= 6.14; 1 s before): age after which a TIME_WAIT socket may be reused.";
    TCP_TIMESTAMPS = "sockscope_sysctl_tcp_timestamps", Gauge, [],
        "net.ipv4.tcp_timestamps: TIME_WAIT reuse needs TCP timestamps.";
    MAX_TW_BUCKETS = "sockscope_sysctl_tcp_max_tw_buckets", Gauge, [],
        "net.ipv4.tcp_max_tw_buckets: TIME_WAIT sockets beyond this are not created.";
}

/// Every `sockscope_sysctl_*` family; `tcp_tw_reuse_delay` only where
/// the kernel has it.
pub fn encode(s: &Sysctls, out: &mut Families) {
    out.one(&SOMAXCONN, Some(f64::from(s.somaxconn)));
    out.one(&PORT_RANGE_FIRST, Some(f64::from(s.port_range.first())));
    out.one(&PORT_RANGE_LAST, Some(f64::from(s.port_range.last())));
    out.one(&TW_REUSE, Some(f64::from(s.tcp_tw_reuse)));
    let delay = s.tcp_tw_reuse_delay_ms.map(|ms| f64::from(ms) / 1000.0);
    out.one(&TW_REUSE_DELAY, delay);
    out.one(&TCP_TIMESTAMPS, Some(f64::from(s.tcp_timestamps)));
    out.one(&MAX_TW_BUCKETS, Some(f64::from(s.tcp_max_tw_buckets)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortRange;

    #[test]
    fn one_prefix_and_base_units() {
        let mut s = Sysctls {
            somaxconn: 4096,
            port_range: PortRange::new(32768, 60999).unwrap(),
            reserved_ports: vec![],
            tcp_tw_reuse: 2,
            tcp_tw_reuse_delay_ms: Some(1500),
            tcp_timestamps: 1,
            tcp_max_tw_buckets: 131072,
        };
        let text = crate::metrics::encoded(|f| encode(&s, f));
        for line in [
            "sockscope_sysctl_somaxconn 4096\n",
            "sockscope_sysctl_ip_local_port_range_first 32768\n",
            "sockscope_sysctl_ip_local_port_range_last 60999\n",
            "sockscope_sysctl_tcp_tw_reuse 2\n",
            "sockscope_sysctl_tcp_tw_reuse_delay_seconds 1.5\n",
            "sockscope_sysctl_tcp_timestamps 1\n",
            "sockscope_sysctl_tcp_max_tw_buckets 131072\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        s.tcp_tw_reuse_delay_ms = None;
        let text = crate::metrics::encoded(|f| encode(&s, f));
        assert!(
            !text.contains("tcp_tw_reuse_delay"),
            "absent before 6.14: {text}"
        );
    }
}
