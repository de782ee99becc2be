//! Ephemeral-port usage and headroom per (local IP, destination) pool.
//!
//! `connect()` without `bind()` picks a local port in
//! `__inet_hash_connect()` (net/ipv4/inet_hashtables.c): it walks
//! `ip_local_port_range` from a random even offset, ports of `low`'s
//! parity first, then the others (`remaining` = the range size rounded
//! down to even; a port past the end wraps back by `remaining`), skips
//! `ip_local_reserved_ports` (`inet_is_local_reserved_port()`) and ports
//! whose bind bucket came from an explicit `bind()` (listeners), and takes
//! a port whose 4-tuple (src IP, src port, dst IP, dst port) is unused
//! (`__inet_check_established()`). A TIME_WAIT socket holding the 4-tuple
//! is taken over when `tcp_twsk_unique()` (net/ipv4/tcp_ipv4.c) allows it:
//! - `tcp_tw_reuse` = 0: never;
//! - 1: when the connection used TCP timestamps and the TIME_WAIT socket
//!   is older than `tcp_tw_reuse_delay` ms (kernel ≥ 6.14, default 1000;
//!   before that, one second);
//! - 2: as 1, but only when its source or destination is loopback.
//!
//! An odd-sized range: every port is reachable (the last, `low + remaining`,
//! from any even offset but 0), except that the first, `low`, is reached
//! only from offset 0. Measured on 5.10, 6.1, 6.12 and 6.18 with 101 ports:
//! `connect()` took all 101, or (1 run in 3 on 6.1 and 6.12) failed at 100
//! with `low` still free. So `limit` is the whole range; with an odd range
//! `available` 1 may already refuse.
//!
//! So toward one destination, `available` = usable range − ports held by
//! `bind()` in the range (listeners, and bound-only sockets where the
//! kernel lists them: inet_diag with `TCPF_BOUND_INACTIVE`, kernel ≥ 6.8)
//! − sockets of the pool that `connect()` cannot take over.
//! Ports are shared between pools: a port used toward one destination is
//! still free toward another.
//!
//! Approximations: per-socket timestamp use is not visible in the dump, so
//! `tcp_timestamps` ≠ 0 is taken to mean every TIME_WAIT socket has them;
//! the age of a TIME_WAIT socket is 60 s (`TCP_TIMEWAIT_LEN`) − its
//! `idiag_expires`; a connected socket whose port came from an explicit
//! `bind()` holds that port for every destination but is counted in its
//! own pool only; bound-only sockets are invisible before kernel 6.8 and
//! with `--source procfs`, so there `available` is too high by their
//! number.
//!
//! Per-socket ranges (`IP_LOCAL_PORT_RANGE`, kernel >= 6.3 and 6.1.32+)
//! are not modelled: sock_diag does not report a socket's range, so
//! `limit` and `available` are the namespace's, and a socket with a
//! narrower range meets `EADDRNOTAVAIL` once its own range is used up
//! toward the destination. Since 6.8 (207184853dbd) such a socket walks
//! its range one port at a time, every port of an odd-sized range
//! included; before, with the parity rule above. README "The
//! ephemeral-port model"; tests/netns_port_exhaustion.rs
//! `netns_port_exhaustion_socket_range`.

use std::net::{IpAddr, SocketAddr};

use crate::collector::listen_queue::PortSet;
use crate::metrics::Families;
use crate::model::{TcpSocket, TcpState, is_loopback};
use crate::source::sysctl::Sysctls;
use foldhash::HashMap as FoldHashMap;

crate::metric_specs! {
    /// [`Pool::counts`]: sockets per pool by `idiag_state`.
    EPHEMERAL_USED = "sockscope_ephemeral_ports_used", Gauge, ["local_ip", "destination", "state"],
        "Outbound TCP sockets (local port in ip_local_port_range, not a listening port) per local IP and destination pool, as of the latest census.";
    /// [`PoolCounts::time_wait_reusable`] ([`PortModel::tw_reusable`]).
    EPHEMERAL_REUSABLE = "sockscope_ephemeral_ports_time_wait_reusable", Gauge, ["local_ip", "destination"],
        "TIME_WAIT sockets of the pool that connect() may take over now (tcp_tw_reuse model), as of the latest census.";
    /// [`EphemeralReport::limit`] ([`PortModel::new`]).
    EPHEMERAL_LIMIT = "sockscope_ephemeral_ports_limit", Gauge, [],
        "Ports connect() can pick: ip_local_port_range size minus ip_local_reserved_ports.";
    /// [`Pool::available`] ([`report`]).
    EPHEMERAL_AVAILABLE = "sockscope_ephemeral_ports_available", Gauge, ["local_ip", "destination"],
        "Ports connect() can still take toward the destination, after ports held by bind() (listeners; bound-only sockets where inet_diag lists them, kernel >= 6.8), live sockets and non-reusable TIME_WAIT; for destination=\"other\" the least among the pools it aggregates. As of the latest census.";
    /// [`EphemeralReport::usage_ratio_max`].
    EPHEMERAL_RATIO = "sockscope_ephemeral_ports_usage_ratio_max", Gauge, [],
        "Worst pool's (limit - available) / limit; 0 without outbound sockets. As of the latest census.";
    /// [`EphemeralReport::pools_total`].
    EPHEMERAL_POOLS = "sockscope_ephemeral_ports_pools", Gauge, [],
        "Distinct (local IP, destination) pools before the --ephemeral.top-destinations cap, as of the latest census.";
}

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
        let (lo, hi) = (s.port_range.first(), s.port_range.last());
        // Every port of the range, odd-sized or not (see the module docs).
        let size = u64::from(hi) - u64::from(lo) + 1;
        let reserved = (lo..=hi)
            .filter(|p| s.reserved_ports.iter().any(|&(a, b)| (a..=b).contains(p)))
            .count() as u64;
        PortModel {
            range: (lo, hi),
            limit: size - reserved,
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

/// A pool: the 4-tuples toward one destination from one local IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub local_ip: IpAddr,
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
            local_ip: s.local.ip(),
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

/// One row of the destination table. `local_ip`/`destination` are `other`
/// for the aggregate beyond `--ephemeral.top-destinations`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pool {
    pub local_ip: String,
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
    /// Ports held by `bind()` (listeners, bound-only sockets) inside the
    /// range: unavailable to every pool.
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
    let ratio = |avail: u64| usage_ratio(model.limit, avail);
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
            local_ip: k.local_ip.to_string(),
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
            local_ip: OTHER.into(),
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

/// `--ephemeral.top-destinations` across namespaces: keeps the `top`
/// pools with the least headroom of all `reports` together and sums each
/// namespace's other pools into its own `other` row (the least `available`
/// among them). At most `top` + namespaces rows remain.
pub fn cap_across(reports: &mut [&mut EphemeralReport], top: usize) {
    let mut ranked: Vec<(u64, usize, usize)> = Vec::new();
    for (r, rep) in reports.iter().enumerate() {
        for (i, p) in rep.pools.iter().enumerate() {
            if p.local_ip != OTHER {
                ranked.push((p.available, r, i));
            }
        }
    }
    if ranked.len() <= top {
        return;
    }
    ranked.sort();
    let keep: std::collections::HashSet<(usize, usize)> =
        ranked[..top].iter().map(|&(_, r, i)| (r, i)).collect();
    for (r, rep) in reports.iter_mut().enumerate() {
        let limit = rep.limit;
        let mut other: Option<Pool> = None;
        let old = std::mem::take(&mut rep.pools);
        for (i, p) in old.into_iter().enumerate() {
            if p.local_ip != OTHER && keep.contains(&(r, i)) {
                rep.pools.push(p);
                continue;
            }
            let o = other.get_or_insert(Pool {
                local_ip: OTHER.into(),
                destination: OTHER.into(),
                counts: PoolCounts::default(),
                available: u64::MAX,
                usage_ratio: 0.0,
            });
            o.counts.add(&p.counts);
            o.available = o.available.min(p.available);
            o.usage_ratio = usage_ratio(limit, o.available);
        }
        rep.pools.extend(other);
    }
}

/// (limit − available) / limit; 1 when there is no port at all.
fn usage_ratio(limit: u64, available: u64) -> f64 {
    if limit == 0 {
        1.0
    } else {
        (limit - available.min(limit)) as f64 / limit as f64
    }
}

impl EphemeralReport {
    /// The `sockscope_ephemeral_ports_*` families.
    pub fn encode(&self, out: &mut Families) {
        for p in &self.pools {
            let (ip, d) = (p.local_ip.as_str(), p.destination.as_str());
            out.push(
                &EPHEMERAL_USED,
                &[ip, d, "established"],
                p.counts.established as f64,
            );
            out.push(
                &EPHEMERAL_USED,
                &[ip, d, "time_wait"],
                p.counts.time_wait as f64,
            );
            out.push(&EPHEMERAL_USED, &[ip, d, "other"], p.counts.other as f64);
            out.push(
                &EPHEMERAL_REUSABLE,
                &[ip, d],
                p.counts.time_wait_reusable as f64,
            );
            out.push(&EPHEMERAL_AVAILABLE, &[ip, d], p.available as f64);
        }
        out.one(&EPHEMERAL_LIMIT, Some(self.limit as f64));
        out.one(&EPHEMERAL_RATIO, Some(self.usage_ratio_max));
        out.one(&EPHEMERAL_POOLS, Some(self.pools_total as f64));
    }
}

#[cfg(test)]
#[path = "ephemeral_ports/tests.rs"]
mod tests;
