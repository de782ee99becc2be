use super::*;
use crate::model::{Family, PortRange, TcpQueues};

fn sysctls(range: (u16, u16), reuse: u8) -> Sysctls {
    Sysctls {
        somaxconn: 4096,
        port_range: PortRange::new(range.0, range.1).unwrap(),
        reserved_ports: vec![],
        tcp_tw_reuse: reuse,
        tcp_tw_reuse_delay_ms: Some(1000),
        tcp_timestamps: 1,
        tcp_max_tw_buckets: 131072,
    }
}

fn sock(state: TcpState, local: &str, remote: &str, expires_ms: Option<u32>) -> TcpSocket {
    TcpSocket {
        family: Family::Ipv4,
        state,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        queues: TcpQueues::Bytes { recv: 0, send: 0 },
        expires_ms,
    }
}

#[test]
fn limit_counts_reserved_and_parity() {
    let mut s = sysctls((40000, 40099), 0);
    assert_eq!(PortModel::new(&s).limit, 100);
    s.reserved_ports = vec![(40010, 40019), (50000, 50000)];
    assert_eq!(PortModel::new(&s).limit, 90);
    // 101 ports: connect() reaches every one (kernels 5.10 to 6.18;
    // netns_port_exhaustion_odd_range), not the 100 `remaining` suggests.
    s.port_range = PortRange::new(40000, 40100).unwrap();
    s.reserved_ports = vec![];
    let m = PortModel::new(&s);
    assert_eq!((m.limit, m.range), (101, (40000, 40100)));
    s.port_range = PortRange::new(5000, 5000).unwrap();
    assert_eq!(PortModel::new(&s).limit, 1);
}

/// Fills a pool with `n` TIME_WAIT sockets aged `age_ms` plus `est`
/// established ones and returns the available count for that pool.
fn available(reuse: u8, dst: &str, src: &str, est: u16, tw: u16, age_ms: u32) -> u64 {
    let m = PortModel::new(&sysctls((40000, 40199), reuse));
    let mut e = EphemeralPorts::default();
    let l = PortSet::default();
    for i in 0..est {
        e.observe(
            &m,
            &l,
            &sock(
                TcpState::Established,
                &format!("{src}:{}", 40000 + i),
                dst,
                None,
            ),
        );
    }
    for i in 0..tw {
        let local = format!("{src}:{}", 40100 + i);
        e.observe(
            &m,
            &l,
            &sock(TcpState::TimeWait, &local, dst, Some(TIME_WAIT_MS - age_ms)),
        );
    }
    let r = report(&m, &l, &e, 20);
    assert_eq!(r.pools[0].counts.used(), u64::from(est + tw));
    r.pools[0].available
}

#[test]
fn tw_reuse_0_never_reuses() {
    assert_eq!(
        available(0, "127.0.0.1:7100", "127.0.0.1", 100, 100, 30_000),
        0
    );
}

#[test]
fn tw_reuse_1_reuses_old_time_wait_anywhere() {
    // FIELD-NOTES: 200 ports, 100 established + 100 TIME_WAIT older than
    // 1 s: connect() took exactly 100 more.
    assert_eq!(
        available(1, "10.0.0.1:80", "10.0.0.2", 100, 100, 5_000),
        100
    );
    assert_eq!(available(1, "10.0.0.1:80", "10.0.0.2", 100, 100, 500), 0);
}

#[test]
fn tw_reuse_2_is_loopback_only() {
    assert_eq!(
        available(2, "127.0.0.1:7100", "127.0.0.1", 100, 100, 5_000),
        100
    );
    assert_eq!(available(2, "10.0.0.1:80", "10.0.0.2", 100, 100, 5_000), 0);
    assert_eq!(available(2, "10.0.0.1:80", "127.0.0.1", 0, 50, 5_000), 200);
}

#[test]
fn timestamps_off_blocks_reuse() {
    let mut s = sysctls((40000, 40199), 1);
    s.tcp_timestamps = 0;
    let m = PortModel::new(&s);
    let tw = sock(
        TcpState::TimeWait,
        "127.0.0.1:40001",
        "127.0.0.1:80",
        Some(1000),
    );
    assert!(!m.tw_reusable(&tw));
}

#[test]
fn listeners_and_out_of_range_ports_are_not_outbound() {
    let m = PortModel::new(&sysctls((40000, 40099), 0));
    let mut l = PortSet::default();
    l.insert(40050); // a listener inside the range
    let mut e = EphemeralPorts::default();
    // server side of the listener's connections, and a client outside the range
    e.observe(
        &m,
        &l,
        &sock(
            TcpState::Established,
            "127.0.0.1:40050",
            "127.0.0.1:40001",
            None,
        ),
    );
    e.observe(
        &m,
        &l,
        &sock(
            TcpState::Established,
            "127.0.0.1:22",
            "127.0.0.1:40002",
            None,
        ),
    );
    e.observe(
        &m,
        &l,
        &sock(
            TcpState::Established,
            "127.0.0.1:40001",
            "127.0.0.1:40050",
            None,
        ),
    );
    let r = report(&m, &l, &e, 20);
    assert_eq!(r.pools_total, 1);
    assert_eq!(r.listening_in_range, 1);
    assert_eq!(r.pools[0].destination, "127.0.0.1:40050");
    assert_eq!(r.pools[0].available, 100 - 1 - 1);
}

#[test]
fn top_n_bounds_100k_destinations() {
    let m = PortModel::new(&sysctls((32768, 60999), 0));
    let l = PortSet::default();
    let mut e = EphemeralPorts::default();
    for i in 0..100_000u32 {
        let dst = format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255);
        let n = if i == 77 { 5 } else { 1 };
        for j in 0..n {
            e.observe(
                &m,
                &l,
                &sock(
                    TcpState::Established,
                    &format!("10.255.0.1:{}", 40000 + j),
                    &dst,
                    None,
                ),
            );
        }
    }
    let r = report(&m, &l, &e, 20);
    assert_eq!(r.pools.len(), 21);
    assert_eq!(r.pools_total, 100_000);
    assert_eq!(r.pools[0].destination, "10.0.0.77:80");
    assert_eq!(r.pools[0].available, 28232 - 5);
    let other = r.pools.last().unwrap();
    assert_eq!(
        (other.local_ip.as_str(), other.destination.as_str()),
        (OTHER, OTHER)
    );
    assert_eq!(other.counts.established, 100_000 - 20);
    assert!((r.usage_ratio_max - 5.0 / 28232.0).abs() < 1e-12);
}

/// TIME_WAIT sockets aged 1 s from 127.0.0.1 on `ports` toward
/// 127.0.0.1:7100, in a 100-port range without reuse.
fn time_wait_pool(ports: std::ops::Range<u16>) -> EphemeralReport {
    let m = PortModel::new(&sysctls((40000, 40099), 0));
    let l = PortSet::default();
    let mut e = EphemeralPorts::default();
    for p in ports {
        e.observe(
            &m,
            &l,
            &sock(
                TcpState::TimeWait,
                &format!("127.0.0.1:{p}"),
                "127.0.0.1:7100",
                Some(59_000),
            ),
        );
    }
    report(&m, &l, &e, 20)
}

#[test]
fn exhausted_pool_has_ratio_one() {
    let r = time_wait_pool(40000..40100);
    assert_eq!(r.pools[0].available, 0);
    assert_eq!(r.usage_ratio_max, 1.0);
}

#[test]
fn encoded_families() {
    let r = time_wait_pool(40000..40010);
    let text = crate::metrics::encoded(|f| r.encode(f));
    let pool = "local_ip=\"127.0.0.1\",destination=\"127.0.0.1:7100\"";
    for line in [
        format!("sockscope_ephemeral_ports_used{{{pool},state=\"time_wait\"}} 10\n"),
        format!("sockscope_ephemeral_ports_used{{{pool},state=\"established\"}} 0\n"),
        format!("sockscope_ephemeral_ports_used{{{pool},state=\"other\"}} 0\n"),
        format!("sockscope_ephemeral_ports_time_wait_reusable{{{pool}}} 0\n"),
        format!("sockscope_ephemeral_ports_available{{{pool}}} 90\n"),
        "sockscope_ephemeral_ports_limit 100\n".to_owned(),
        "sockscope_ephemeral_ports_usage_ratio_max 0.1\n".to_owned(),
        "sockscope_ephemeral_ports_pools 1\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("source="),
        "the pool label is local_ip: {text}"
    );
}

/// The top-N holds across namespaces: the pools with the least headroom
/// of all reports are kept, each namespace's rest summed into `other`.
#[test]
fn cap_across_namespaces() {
    let mut full = time_wait_pool(40000..40090); // 10 left
    let m = PortModel::new(&sysctls((40000, 40099), 0));
    let l = PortSet::default();
    let mut e = EphemeralPorts::default();
    for (i, dst) in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
        .iter()
        .enumerate()
    {
        for p in 0..=i as u16 {
            e.observe(
                &m,
                &l,
                &sock(
                    TcpState::Established,
                    &format!("10.0.0.9:{}", 40000 + p),
                    dst,
                    None,
                ),
            );
        }
    }
    let mut light = report(&m, &l, &e, 20);
    cap_across(&mut [&mut full, &mut light], 2);
    assert_eq!(full.pools.len(), 1, "the fullest pool is kept");
    assert_eq!(full.pools[0].available, 10);
    assert_eq!(light.pools.len(), 2, "one kept, the rest in other");
    assert_eq!(light.pools[0].destination, "10.0.0.3:80");
    let other = &light.pools[1];
    assert_eq!(
        (other.local_ip.as_str(), other.destination.as_str()),
        (OTHER, OTHER)
    );
    assert_eq!(other.counts.established, 1 + 2);
    assert_eq!(other.available, 100 - 2, "the least headroom among them");
}

/// A socket bound with `bind()` that neither listens nor connects, as
/// inet_diag reports it with `TCPF_BOUND_INACTIVE` (kernel ≥ 6.8): state
/// CLOSE, peer `0.0.0.0:0`. Its port is out of every pool (connect() skips
/// a port whose bind bucket came from bind()), and it is no pool itself.
#[test]
fn bound_only_sockets_hold_their_port_for_every_pool() {
    use crate::collector::listen_queue::TcpListeners;
    let m = PortModel::new(&sysctls((40000, 40099), 0));
    let mut listeners = TcpListeners::default();
    let mut e = EphemeralPorts::default();
    let sockets = [
        sock(TcpState::Close, "127.0.0.1:40010", "0.0.0.0:0", None),
        sock(TcpState::Close, "0.0.0.0:40011", "0.0.0.0:0", None),
        sock(
            TcpState::Established,
            "127.0.0.1:40001",
            "127.0.0.1:7100",
            None,
        ),
        sock(
            TcpState::Established,
            "127.0.0.2:40002",
            "127.0.0.1:7200",
            None,
        ),
    ];
    for s in &sockets {
        listeners.observe(s); // first, as in the census
        e.observe(&m, &listeners.ports, s);
    }
    let r = report(&m, &listeners.ports, &e, 20);
    assert_eq!(r.listening_in_range, 2);
    assert_eq!(r.pools_total, 2, "{:?}", r.pools);
    for p in &r.pools {
        assert_eq!(p.available, 100 - 2 - 1, "{p:?}");
    }
}
