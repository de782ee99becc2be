//! Ephemeral-port usage and headroom per (source IP, destination) pool.
//!
//! `connect()` without `bind()` picks a local port in
//! `__inet_hash_connect()` (net/ipv4/inet_hashtables.c): it walks
//! `ip_local_port_range` (an odd-sized range loses its last port:
//! `remaining &= ~1U`), skips `ip_local_reserved_ports`
//! (`inet_is_local_reserved_port()`) and ports whose bind bucket came from
//! an explicit `bind()` (listeners), and takes a port whose 4-tuple
//! (src IP, src port, dst IP, dst port) is unused
//! (`__inet_check_established()`). A TIME_WAIT socket holding the 4-tuple
//! is taken over when `tcp_twsk_unique()` (net/ipv4/tcp_ipv4.c) allows it:
//! - `tcp_tw_reuse` = 0: never;
//! - 1: when the connection used TCP timestamps and the TIME_WAIT socket
//!   is older than `tcp_tw_reuse_delay` ms (kernel ≥ 6.13, default 1000;
//!   before that, one second);
//! - 2: as 1, but only when its source or destination is loopback.
//!
//! So toward one destination, `available` = usable range − listening ports
//! in the range − sockets of the pool that `connect()` cannot take over.
//! Ports are shared between pools: a port used toward one destination is
//! still free toward another.
//!
//! Approximations: per-socket timestamp use is not visible in the dump, so
//! `tcp_timestamps` ≠ 0 is taken to mean every TIME_WAIT socket has them;
//! the age of a TIME_WAIT socket is 60 s (`TCP_TIMEWAIT_LEN`) − its
//! `idiag_expires`; sockets bound with `bind()` but not listening are not
//! visible as bind buckets and are counted like connected ones.

use std::net::{IpAddr, SocketAddr};

use crate::collector::listen_queue::PortSet;
use crate::model::{TcpSocket, TcpState, is_loopback};
use crate::source::sysctl::Sysctls;
use foldhash::HashMap as FoldHashMap;

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): 60 s.
pub const TIME_WAIT_MS: u32 = 60_000;
/// TIME_WAIT reuse delay before `tcp_tw_reuse_delay` existed (one second).
pub const DEFAULT_TW_REUSE_DELAY_MS: u32 = 1_000;

/// Sockets of one pool, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolCounts {
    pub established: u64,
    pub time_wait: u64,
    pub other: u64,
    /// TIME_WAIT sockets that `connect()` could take over now.
    pub time_wait_reusable: u64,
}

impl PoolCounts {
    pub fn used(&self) -> u64 {
        self.established + self.time_wait + self.other
    }

    /// Ports of this pool that `connect()` cannot take.
    pub fn blocking(&self) -> u64 {
        self.used() - self.time_wait_reusable
    }

    fn add(&mut self, o: &PoolCounts) {
        self.established += o.established;
        self.time_wait += o.time_wait;
        self.other += o.other;
        self.time_wait_reusable += o.time_wait_reusable;
    }
}

/// The kernel settings the model needs, derived from [`Sysctls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortModel {
    pub range: (u16, u16),
    /// Ports `connect()` may pick: usable range size − reserved ports in it.
    pub limit: u64,
    pub tw_reuse: u8,
    pub tw_reuse_delay_ms: u32,
    pub timestamps: bool,
}

impl PortModel {
    pub fn new(s: &Sysctls) -> PortModel {
        let (lo, hi) = s.port_range;
        let mut remaining = u64::from(hi) - u64::from(lo) + 1;
        if remaining > 1 {
            remaining &= !1;
        }
        // The ports the kernel's walk can reach: lo .. lo + remaining.
        let last = (u64::from(lo) + remaining - 1) as u16;
        let reserved = (lo..=last)
            .filter(|p| s.reserved_ports.iter().any(|&(a, b)| (a..=b).contains(p)))
            .count() as u64;
        PortModel {
            range: (lo, last),
            limit: remaining - reserved,
            tw_reuse: s.tcp_tw_reuse,
            tw_reuse_delay_ms: s.tcp_tw_reuse_delay_ms.unwrap_or(DEFAULT_TW_REUSE_DELAY_MS),
            timestamps: s.tcp_timestamps != 0,
        }
    }

    /// Whether `connect()` could take over this TIME_WAIT socket's 4-tuple
    /// now (`tcp_twsk_unique()`).
    pub fn tw_reusable(&self, s: &TcpSocket) -> bool {
        let reuse = match self.tw_reuse {
            0 => false,
            2 => is_loopback(&s.local.ip()) || is_loopback(&s.remote.ip()),
            _ => true,
        };
        let Some(expires) = s.expires_ms else {
            return false;
        };
        let age = TIME_WAIT_MS.saturating_sub(expires);
        reuse && self.timestamps && age > self.tw_reuse_delay_ms
    }

    fn in_range(&self, port: u16) -> bool {
        (self.range.0..=self.range.1).contains(&port)
    }
}

/// A pool: the 4-tuples toward one destination from one source IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub source: IpAddr,
    pub destination: SocketAddr,
}

/// Outbound sockets of one census, per pool.
///
/// Pools live in a `Vec` indexed by a map, and the last pool touched is
/// tried first: TIME_WAIT sockets toward one upstream often follow each
/// other in the dump, and then a socket costs a key comparison instead of
/// a hash lookup. The map uses foldhash's seeded hasher: std's SipHash
/// costs more than the rest of classifying a socket.
#[derive(Debug, Clone, Default)]
pub struct EphemeralPorts {
    pools: Vec<(PoolKey, PoolCounts)>,
    index: FoldHashMap<PoolKey, usize>,
    last: usize,
}

impl EphemeralPorts {
    /// Counts `s` when its local port is in the range and not a listening
    /// port (so it was picked by `connect()`).
    pub fn observe(&mut self, model: &PortModel, listening: &PortSet, s: &TcpSocket) {
        let port = s.local.port();
        if s.state == TcpState::Listen || !model.in_range(port) || listening.contains(port) {
            return;
        }
        let key = PoolKey {
            source: s.local.ip(),
            destination: s.remote,
        };
        let c = self.pool(key);
        match s.state {
            TcpState::Established => c.established += 1,
            TcpState::TimeWait => {
                c.time_wait += 1;
                if model.tw_reusable(s) {
                    c.time_wait_reusable += 1;
                }
            }
            _ => c.other += 1,
        }
    }

    /// The counts of `key`'s pool, created empty on first use.
    fn pool(&mut self, key: PoolKey) -> &mut PoolCounts {
        let hit = self.pools.get(self.last).is_some_and(|(k, _)| *k == key);
        if !hit {
            let next = self.pools.len();
            self.last = *self.index.entry(key).or_insert(next);
            if self.last == next {
                self.pools.push((key, PoolCounts::default()));
            }
        }
        &mut self.pools[self.last].1
    }

    pub fn merge(&mut self, other: EphemeralPorts) {
        for (k, v) in other.pools {
            self.pool(k).add(&v);
        }
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
}

/// One row of the destination table. `source`/`destination` are `other`
/// for the aggregate beyond `--ephemeral.top-destinations`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pool {
    pub source: String,
    pub destination: String,
    #[serde(flatten)]
    pub counts: PoolCounts,
    /// Ports `connect()` can still take toward this destination. For the
    /// `other` row: the least headroom among the pools it aggregates.
    pub available: u64,
    /// (limit − available) / limit.
    pub usage_ratio: f64,
}

/// The ephemeral-port analysis of one sample.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EphemeralReport {
    pub range: (u16, u16),
    pub limit: u64,
    /// Listening ports inside the range (unavailable to every pool).
    pub listening_in_range: u64,
    /// Pools sorted by usage, capped, plus the `other` aggregate.
    pub pools: Vec<Pool>,
    /// Number of pools before the cap.
    pub pools_total: u64,
    /// Worst pool's usage ratio; 0 when there is no outbound socket.
    pub usage_ratio_max: f64,
}

/// Label value of the aggregate row.
pub const OTHER: &str = "other";

/// Computes headroom per pool and keeps the `top` fullest.
pub fn report(
    model: &PortModel,
    listening: &PortSet,
    ports: &EphemeralPorts,
    top: usize,
) -> EphemeralReport {
    let listening_in_range = listening.count_in(model.range.0, model.range.1);
    let base = model.limit.saturating_sub(listening_in_range);
    let ratio = |avail: u64| {
        if model.limit == 0 {
            1.0
        } else {
            (model.limit - avail.min(model.limit)) as f64 / model.limit as f64
        }
    };
    let mut pools: Vec<(PoolKey, PoolCounts, u64)> = ports
        .pools
        .iter()
        .map(|&(k, c)| (k, c, base.saturating_sub(c.blocking())))
        .collect();
    pools.sort_by(|a, b| {
        a.2.cmp(&b.2)
            .then(b.1.used().cmp(&a.1.used()))
            .then(a.0.cmp(&b.0))
    });
    let usage_ratio_max = pools.first().map_or(0.0, |p| ratio(p.2));
    let pools_total = pools.len() as u64;
    let rest = if pools.len() > top {
        pools.split_off(top)
    } else {
        Vec::new()
    };
    let mut rows: Vec<Pool> = pools
        .into_iter()
        .map(|(k, counts, available)| Pool {
            source: k.source.to_string(),
            destination: k.destination.to_string(),
            counts,
            available,
            usage_ratio: ratio(available),
        })
        .collect();
    if let Some(min_avail) = rest.iter().map(|p| p.2).min() {
        let mut counts = PoolCounts::default();
        for (_, c, _) in &rest {
            counts.add(c);
        }
        rows.push(Pool {
            source: OTHER.into(),
            destination: OTHER.into(),
            counts,
            available: min_avail,
            usage_ratio: ratio(min_avail),
        });
    }
    EphemeralReport {
        range: model.range,
        limit: model.limit,
        listening_in_range,
        pools: rows,
        pools_total,
        usage_ratio_max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Family;

    fn sysctls(range: (u16, u16), reuse: u8) -> Sysctls {
        Sysctls {
            somaxconn: 4096,
            port_range: range,
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
            rqueue: 0,
            wqueue: None,
            expires_ms,
        }
    }

    #[test]
    fn limit_counts_reserved_and_parity() {
        let mut s = sysctls((40000, 40099), 0);
        assert_eq!(PortModel::new(&s).limit, 100);
        s.reserved_ports = vec![(40010, 40019), (50000, 50000)];
        assert_eq!(PortModel::new(&s).limit, 90);
        s.port_range = (40000, 40100); // 101 ports: the walk reaches 100
        s.reserved_ports = vec![];
        let m = PortModel::new(&s);
        assert_eq!((m.limit, m.range), (100, (40000, 40099)));
        s.port_range = (5000, 5000);
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
            (other.source.as_str(), other.destination.as_str()),
            (OTHER, OTHER)
        );
        assert_eq!(other.counts.established, 100_000 - 20);
        assert!((r.usage_ratio_max - 5.0 / 28232.0).abs() < 1e-12);
    }

    #[test]
    fn exhausted_pool_has_ratio_one() {
        let m = PortModel::new(&sysctls((40000, 40099), 0));
        let l = PortSet::default();
        let mut e = EphemeralPorts::default();
        for p in 40000..=40099 {
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
        let r = report(&m, &l, &e, 20);
        assert_eq!(r.pools[0].available, 0);
        assert_eq!(r.usage_ratio_max, 1.0);
    }
}
