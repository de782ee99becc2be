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
    let r = report(&m, &l, &e, 20, &mut PoolEntries::default());
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
    let r = report(&m, &l, &e, 20, &mut PoolEntries::default());
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
    let r = report(&m, &l, &e, 20, &mut PoolEntries::default());
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
    report(&m, &l, &e, 20, &mut PoolEntries::default())
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
    let mut light = report(&m, &l, &e, 20, &mut PoolEntries::default());
    cap_across(
        &mut [(1, &mut full), (2, &mut light)],
        2,
        &mut std::collections::HashMap::new(),
    );
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
    let r = report(&m, &listeners.ports, &e, 20, &mut PoolEntries::default());
    assert_eq!(r.listening_in_range, 2);
    assert_eq!(r.pools_total, 2, "{:?}", r.pools);
    for p in &r.pools {
        assert_eq!(p.available, 100 - 2 - 1, "{p:?}");
    }
}

/// A pool of 127.0.0.1 toward 127.0.0.1:7100 in a 500-port range: `load`
/// gives, per second of age (0 = the youngest), the TIME_WAIT sockets that
/// entered that long ago, plus `est` established sockets.
fn loaded_pool(reuse: u8, load: &[(u32, u16)], est: u16) -> (PortModel, EphemeralPorts) {
    let m = PortModel::new(&sysctls((40000, 40499), reuse));
    let l = PortSet::default();
    let mut e = EphemeralPorts::default();
    let mut port = 40000u16;
    let mut add = |e: &mut EphemeralPorts, state, expires| {
        let s = sock(
            state,
            &format!("127.0.0.1:{port}"),
            "127.0.0.1:7100",
            expires,
        );
        e.observe(&m, &l, &s);
        port += 1;
    };
    for _ in 0..est {
        add(&mut e, TcpState::Established, None);
    }
    for &(age_s, n) in load {
        for i in 0..n {
            // Spread over the second: ages age_s + 0.1 .. age_s + 0.9.
            let age_ms = age_s * 1000 + 100 + u32::from(i) * 800 / u32::from(n.max(1));
            add(&mut e, TcpState::TimeWait, Some(TIME_WAIT_MS - age_ms));
        }
    }
    (m, e)
}

fn forecast(reuse: u8, load: &[(u32, u16)], est: u16) -> Pool {
    let (m, e) = loaded_pool(reuse, load, est);
    let r = report(&m, &PortSet::default(), &e, 20, &mut PoolEntries::default());
    r.pools[0].clone()
}

/// 1.5× the pool's capacity (500 ports / 60 s = 8.3/s) for 10 s from idle,
/// no reuse: 125 ports taken, 375 left, none back before 50 s: the load
/// takes the rest in 30 s.
#[test]
fn forecast_of_a_load_over_capacity() {
    let load: Vec<(u32, u16)> = (0..10).map(|a| (a, 12 + (a % 2) as u16)).collect();
    let p = forecast(0, &load, 0);
    assert_eq!(p.available, 500 - 125);
    assert!((p.time_wait_rate_per_second - 12.5).abs() < 1e-9, "{p:?}");
    assert_eq!(p.exhaustion_seconds, Some(375.0 / 12.5));
}

/// Half a load's history: its oldest TIME_WAIT is 4 s old, so the rate is
/// over 5 s, not the 10 s window (the churn began within it).
#[test]
fn rate_of_a_pool_whose_churn_just_began() {
    let p = forecast(0, &[(0, 25), (1, 25), (2, 25), (3, 25), (4, 25)], 0);
    assert!((p.time_wait_rate_per_second - 25.0).abs() < 1e-9, "{p:?}");
    assert_eq!(p.exhaustion_seconds, Some(375.0 / 25.0));
}

/// 60 % of capacity for two minutes: 5 per second over every age of
/// TIME_WAIT; as many ports come back each second as are taken: never.
#[test]
fn steady_load_under_capacity_never_runs_out() {
    let load: Vec<(u32, u16)> = (0..60).map(|a| (a, 5)).collect();
    let p = forecast(0, &load, 20);
    assert_eq!(p.available, 500 - 300 - 20);
    assert!((p.time_wait_rate_per_second - 5.0).abs() < 1e-9);
    assert_eq!(p.exhaustion_seconds, None);
    // The first minute of the same load (TIME_WAIT still building up) is
    // no exhaustion either: the steady state is 300 + 20 of 500.
    for minute_part in [5u32, 20, 45] {
        let load: Vec<(u32, u16)> = (0..minute_part).map(|a| (a, 5)).collect();
        assert_eq!(
            forecast(0, &load, 20).exhaustion_seconds,
            None,
            "{minute_part} s in"
        );
    }
}

/// Ports that come back on the TIME_WAIT schedule: 5/s for 55 s plus
/// established sockets; the oldest TIME_WAIT (54 s) frees its ports 6 s
/// from now, then 5 a second, as fast as the load takes them. With 31 left
/// the pool never runs out; with 29 it does, before the first comes back.
#[test]
fn forecast_counts_the_ports_that_come_back() {
    let load: Vec<(u32, u16)> = (0..55).map(|a| (a, 5)).collect();
    let p = forecast(0, &load, 500 - 275 - 31);
    assert_eq!(p.available, 31);
    assert_eq!(p.exhaustion_seconds, None, "{p:?}");
    let p = forecast(0, &load, 500 - 275 - 29);
    assert_eq!(p.available, 29);
    let s = p.exhaustion_seconds.unwrap();
    assert!((s - 29.0 / 5.0).abs() < 1e-9, "{s}");
}

/// With `tcp_tw_reuse` on toward loopback, a port is held for the reuse
/// delay (1 s), not 60 s: a load at 3× the no-reuse capacity never runs
/// out; toward another address (`tcp_tw_reuse` = 2) it does.
#[test]
fn forecast_with_tw_reuse() {
    let load: Vec<(u32, u16)> = (0..10).map(|a| (a, 25)).collect();
    let p = forecast(2, &load, 0);
    assert_eq!(p.available, 500 - 25, "older than 1 s: reusable");
    assert_eq!(p.exhaustion_seconds, None);
    let p = forecast(0, &load, 0);
    assert_eq!(p.exhaustion_seconds, Some(250.0 / 25.0));
}

#[test]
fn forecast_of_an_idle_or_empty_pool() {
    let p = forecast(0, &[], 10);
    assert_eq!(
        (p.time_wait_rate_per_second, p.exhaustion_seconds),
        (0.0, None)
    );
    let load: Vec<(u32, u16)> = (0..10).map(|a| (a, 50)).collect();
    let p = forecast(0, &load, 0);
    assert_eq!((p.available, p.exhaustion_seconds), (0, Some(0.0)));
}

/// Infinity on `/metrics` (the `prometheus` crate writes Rust's `inf`,
/// which Go's `ParseFloat`, and so Prometheus and promtool, read as
/// +Inf), `null` in `snapshot --json`.
#[test]
fn infinite_forecast_is_encoded() {
    let p = forecast(0, &[(0, 3)], 0);
    assert_eq!(p.exhaustion_seconds, None);
    let (m, e) = loaded_pool(0, &[(0, 3)], 0);
    let r = report(&m, &PortSet::default(), &e, 20, &mut PoolEntries::default());
    let text = crate::metrics::encoded(|f| r.encode(f));
    let line = text
        .lines()
        .find(|l| l.starts_with("sockscope_ephemeral_ports_exhaustion_seconds{"))
        .unwrap();
    assert!(line.ends_with(" inf"), "{line}");
    assert!(
        text.contains("# TYPE sockscope_ephemeral_ports_time_wait_entries_total counter\n"),
        "{text}"
    );
    let json = serde_json::to_value(&r.pools[0]).unwrap();
    assert_eq!(json["exhaustion_seconds"], serde_json::Value::Null);
}

/// Entries into TIME_WAIT: a census counts the TIME_WAIT sockets younger
/// than the time since the previous one; the totals carry over, and a
/// pool with no socket left is forgotten.
#[test]
fn time_wait_entries_accumulate_across_censuses() {
    let m = PortModel::new(&sysctls((40000, 40499), 0));
    let l = PortSet::default();
    let mut entries = PoolEntries::default();
    let tw = |port: u16, age_ms: u32| {
        sock(
            TcpState::TimeWait,
            &format!("127.0.0.1:{port}"),
            "127.0.0.1:7100",
            Some(TIME_WAIT_MS - age_ms),
        )
    };
    // First census: everything present counts.
    let mut e = EphemeralPorts::default();
    for p in 0..5 {
        e.observe(&m, &l, &tw(40000 + p, 3000 + u32::from(p)));
    }
    let r = report(&m, &l, &e, 20, &mut entries);
    assert_eq!(r.pools[0].time_wait_entries_total, 5);
    // 2 s later: the same 5 (now older) and 3 new ones.
    let mut e = EphemeralPorts::new(2000);
    for p in 0..5 {
        e.observe(&m, &l, &tw(40000 + p, 5000 + u32::from(p)));
    }
    for p in 5..8 {
        e.observe(&m, &l, &tw(40000 + p, 1500));
    }
    let r = report(&m, &l, &e, 20, &mut entries);
    assert_eq!(r.pools[0].time_wait_entries_total, 8);
    assert_eq!(entries.len(), 1);
    // No socket left: forgotten.
    let r = report(&m, &l, &EphemeralPorts::new(2000), 20, &mut entries);
    assert!(r.pools.is_empty());
    assert!(entries.is_empty());
}

/// Exact entries from an event source replace the inference, and their
/// growth over the censuses of the last 10 s is the forecast's rate:
/// 300 entries in 2 s (150/s) toward a pool with 400 of 500 ports left
/// runs out in under 3 s, although the TIME_WAIT ages alone say 5/s.
#[test]
fn exact_entries_drive_the_total_and_the_rate() {
    use std::time::{Duration, Instant};
    let m = PortModel::new(&sysctls((40000, 40499), 0));
    let l = PortSet::default();
    let mut entries = PoolEntries::default();
    let key = PoolKey {
        local_ip: "127.0.0.1".parse().unwrap(),
        destination: "127.0.0.1:7100".parse().unwrap(),
    };
    let census = || {
        let mut e = EphemeralPorts::default();
        for p in 0..100 {
            let s = sock(
                TcpState::TimeWait,
                &format!("127.0.0.1:{}", 40000 + p),
                "127.0.0.1:7100",
                Some(TIME_WAIT_MS - 20_000),
            );
            e.observe(&m, &l, &s);
        }
        e
    };
    let t0 = Instant::now();
    entries.set_exact(Some(&[(key, 1000)].into()), t0);
    let first = report(&m, &l, &census(), 20, &mut entries);
    assert_eq!(first.pools[0].time_wait_entries_total, 1000);
    // One census of history: the rate still comes from the timers.
    let timers_rate = first.pools[0].time_wait_rate_per_second;
    assert!(timers_rate < 10.0, "{timers_rate}");
    entries.set_exact(Some(&[(key, 1300)].into()), t0 + Duration::from_secs(2));
    let second = report(&m, &l, &census(), 20, &mut entries);
    let p = &second.pools[0];
    assert_eq!(p.time_wait_entries_total, 1300);
    assert!((p.time_wait_rate_per_second - 150.0).abs() < 1e-9, "{p:?}");
    let s = p.exhaustion_seconds.unwrap();
    assert!(s > 0.0 && s < 3.0, "{s}");
    // Past the window, the oldest census drops out of the rate.
    entries.set_exact(Some(&[(key, 1310)].into()), t0 + Duration::from_secs(11));
    let third = report(&m, &l, &census(), 20, &mut entries);
    assert!((third.pools[0].time_wait_rate_per_second - 10.0 / 9.0).abs() < 1e-9);
    // Back to inference without the source.
    entries.set_exact(None, t0 + Duration::from_secs(12));
    let fourth = report(&m, &l, &census(), 20, &mut entries);
    assert_eq!(fourth.pools[0].time_wait_rate_per_second, timers_rate);
}

/// The cap keeps the pool that runs out soonest before a fuller steady
/// one, and the `other` row's TIME_WAIT entries never go backwards as
/// pools swap places across the cap.
#[test]
fn cap_ranks_by_forecast_and_keeps_counters_monotonic() {
    let m = PortModel::new(&sysctls((40000, 40499), 0));
    let l = PortSet::default();
    let mut entries = PoolEntries::default();
    let mut other_seen = Vec::new();
    let census = |steady_first: bool, new_within: u32, entries: &mut PoolEntries| {
        let mut e = EphemeralPorts::new(new_within);
        // A: steady at 80 % (400 established, a trickle of TIME_WAIT).
        for p in 0..400u16 {
            e.observe(
                &m,
                &l,
                &sock(
                    TcpState::Established,
                    &format!("127.0.0.1:{}", 40000 + p),
                    "127.0.0.1:7100",
                    None,
                ),
            );
        }
        e.observe(
            &m,
            &l,
            &sock(
                TcpState::TimeWait,
                "127.0.0.1:40400",
                "127.0.0.1:7100",
                Some(59_500),
            ),
        );
        // B: 40 % used, all in the last 10 s: runs out in about 15 s.
        let churn = if steady_first { 0 } else { 200u16 };
        for p in 0..churn {
            let age = 100 + u32::from(p) * 45;
            e.observe(
                &m,
                &l,
                &sock(
                    TcpState::TimeWait,
                    &format!("127.0.0.2:{}", 40000 + p),
                    "127.0.0.1:7200",
                    Some(TIME_WAIT_MS - age),
                ),
            );
        }
        report(&m, &l, &e, 1, entries)
    };
    let r = census(false, u32::MAX, &mut entries);
    assert_eq!(
        r.pools[0].destination, "127.0.0.1:7200",
        "the one that runs out: {:?}",
        r.pools
    );
    assert!(r.pools[0].exhaustion_seconds.unwrap() < 30.0);
    other_seen.push(r.pools[1].time_wait_entries_total);
    let r = census(true, 1000, &mut entries);
    assert_eq!(r.pools[0].destination, "127.0.0.1:7100");
    other_seen.push(r.pools.last().unwrap().time_wait_entries_total);
    let r = census(false, 1000, &mut entries);
    other_seen.push(r.pools.last().unwrap().time_wait_entries_total);
    assert!(
        other_seen.windows(2).all(|w| w[0] <= w[1]),
        "{other_seen:?}"
    );
}
