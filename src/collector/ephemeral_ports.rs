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

use crate::collector::cap::OtherCounters;
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
    /// [`Pool::time_wait_entries_total`] ([`PoolEntries`]).
    EPHEMERAL_TW_ENTRIES = "sockscope_ephemeral_ports_time_wait_entries_total", Counter, ["local_ip", "destination"],
        "Sockets of the pool that entered TIME_WAIT (this side closed first: the port stays held for 60 s), counted at each census from the TIME_WAIT sockets younger than the time since the previous census (60 s - idiag_expires). Misses TIME_WAIT sockets gone before a census saw them (taken over by tcp_tw_reuse, or censuses more than 60 s apart). With the eBPF event source on (--ebpf), counted in the kernel as they happen instead (FIN_WAIT2/CLOSING -> CLOSE without error), exact. Kept monotonic across the --ephemeral.top-destinations cap.";
    /// [`Pool::exhaustion_seconds`] ([`exhaustion_seconds`]).
    EPHEMERAL_EXHAUSTION = "sockscope_ephemeral_ports_exhaustion_seconds", Gauge, ["local_ip", "destination"],
        "Seconds until available reaches 0 if the pool keeps taking ports at its current rate (TIME_WAIT entries over the last 10 s: counted by the eBPF event source when it runs, else from the TIME_WAIT sockets' ages), with its TIME_WAIT sockets freed on their timers (idiag_expires) or when tcp_tw_reuse may take them over; +Inf when at that rate the pool's steady state stays under its limit. Counted from the latest census, minus its age. Blind to bursts shorter than the census interval, to connections held open, and to per-socket IP_LOCAL_PORT_RANGE; for destination=\"other\" the least among the pools it aggregates.";
    /// [`EphemeralReport::pools_total`].
    EPHEMERAL_POOLS = "sockscope_ephemeral_ports_pools", Gauge, [],
        "Distinct (local IP, destination) pools before the --ephemeral.top-destinations cap, as of the latest census.";
}

/// `TCP_TIMEWAIT_LEN` (include/net/tcp.h): 60 s.
pub(crate) const TIME_WAIT_MS: u32 = 60_000;
/// TIME_WAIT reuse delay before `tcp_tw_reuse_delay` existed (one second).
pub(crate) const DEFAULT_TW_REUSE_DELAY_MS: u32 = 1_000;
/// Seconds of TIME_WAIT history the churn rate of [`exhaustion_seconds`]
/// is estimated over: the TIME_WAIT sockets at most this old, divided by
/// this (or by the age of the pool's oldest TIME_WAIT socket, when the pool
/// has none older: its churn started within the window).
pub(crate) const RATE_WINDOW_SECONDS: u32 = 10;
/// A pool at or under this share of the limit, or forecast to run out
/// within [`NEAR_EXHAUSTION_SECONDS`], is near exhaustion: the census
/// then reads bound-only sockets every time ([`EphemeralReport::near_exhaustion`]).
pub(crate) const NEAR_EXHAUSTION_RATIO: f64 = 0.10;
/// See [`NEAR_EXHAUSTION_RATIO`].
pub(crate) const NEAR_EXHAUSTION_SECONDS: f64 = 120.0;
/// Buckets of [`TimeWaitTimers`]: whole seconds left, 0..=59.
const TIMER_BUCKETS: usize = 60;

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

    /// Whether `tcp_twsk_unique()` may take over the pool's TIME_WAIT
    /// sockets once they are older than the delay ([`PortModel::tw_reusable`]
    /// without the age).
    pub fn reuses(&self, key: &PoolKey) -> bool {
        let reuse = match self.tw_reuse {
            0 => false,
            2 => is_loopback(&key.local_ip) || is_loopback(&key.destination.ip()),
            _ => true,
        };
        reuse && self.timestamps
    }
}

/// TIME_WAIT sockets of one pool by the whole seconds left on their timer
/// (`idiag_expires`; the timer column of `/proc/net/tcp`): `[n]` holds
/// those with n to n + 1 s left (59 also anything longer). 120 bytes per
/// pool that has TIME_WAIT sockets, whatever their number.
type TimeWaitTimers = Box<[u16; TIMER_BUCKETS]>;

/// What the census counted of one pool.
#[derive(Debug, Clone, Default)]
struct PoolState {
    counts: PoolCounts,
    timers: Option<TimeWaitTimers>,
    /// TIME_WAIT sockets younger than [`EphemeralPorts::new_within_ms`].
    entered: u64,
}

impl PoolState {
    fn add(&mut self, o: &PoolState) {
        self.counts.add(&o.counts);
        self.entered += o.entered;
        if let Some(t) = &o.timers {
            let mine = self
                .timers
                .get_or_insert_with(|| Box::new([0; TIMER_BUCKETS]));
            for (a, b) in mine.iter_mut().zip(t.iter()) {
                *a = a.saturating_add(*b);
            }
        }
    }
}

/// The churn rate of a pool from its TIME_WAIT timers: sockets aged at most
/// [`RATE_WINDOW_SECONDS`] (age = 60 s − time left) per second of that
/// window, or of the pool's own history when its oldest TIME_WAIT socket is
/// younger (its churn began within the window). Per second.
pub(crate) fn time_wait_rate(timers: &[u16; TIMER_BUCKETS]) -> f64 {
    // Bucket n (n..n+1 s left) holds sockets aged (59 - n, 60 - n] s.
    let age_bucket = |n: usize| TIMER_BUCKETS - 1 - n;
    let Some(oldest) = (0..TIMER_BUCKETS)
        .filter(|&n| timers[n] > 0)
        .map(age_bucket)
        .max()
    else {
        return 0.0;
    };
    let window = RATE_WINDOW_SECONDS as usize;
    let young: u64 = (0..TIMER_BUCKETS)
        .filter(|&n| age_bucket(n) < window)
        .map(|n| u64::from(timers[n]))
        .sum();
    young as f64 / (oldest + 1).min(window) as f64
}

/// Seconds until `available` reaches 0 if the pool keeps taking ports at
/// `rate` per second, each held `hold` seconds: 60 s
/// (`TCP_TIMEWAIT_LEN`) without TIME_WAIT reuse, the reuse delay with it
/// ([`PortModel::reuses`]). Ports come back on the pool's TIME_WAIT
/// schedule (`timers`: each socket at the end of its second, a lower bound
/// on when the kernel reaps it; with reuse, once older than the delay).
/// Established and other open sockets are taken to stay as many.
/// `None`: never, since at that rate the pool's steady state (`rate` ×
/// `hold` ports) stays under what it has.
///
/// The available ports at t ≤ hold are `available + freed(t) − rate × t`;
/// after `hold` new ports come back as fast as they are taken, so if that
/// has not reached 0 by then it never does.
/// `rate`: the pool's entries into TIME_WAIT per second, from its timers
/// ([`time_wait_rate`]) or counted as they happen by an event source
/// ([`PoolEntries::set_exact`]).
pub(crate) fn exhaustion_seconds(
    model: &PortModel,
    key: &PoolKey,
    timers: Option<&[u16; TIMER_BUCKETS]>,
    available: u64,
    rate: f64,
) -> Option<f64> {
    if available == 0 {
        return Some(0.0);
    }
    let timers = timers?;
    if rate <= 0.0 {
        return None;
    }
    let reuse = model.reuses(key);
    let (hold, frees_at): (f64, Box<dyn Fn(usize) -> Option<f64>>) = if reuse {
        let delay = f64::from(model.tw_reuse_delay_ms) / 1e3;
        // Reusable once its age (60 s − left) exceeds the delay; those
        // already reusable are counted in `available`.
        let cut = f64::from(TIME_WAIT_MS) / 1e3 - delay;
        (
            delay,
            Box::new(move |n| {
                let end = n as f64 + 1.0;
                (end > cut).then_some(end - cut)
            }),
        )
    } else {
        (
            f64::from(TIME_WAIT_MS) / 1e3,
            Box::new(|n| Some(n as f64 + 1.0)),
        )
    };
    let mut freed = 0.0;
    for (n, &count) in timers.iter().enumerate() {
        let Some(at) = frees_at(n) else { continue };
        if count == 0 {
            continue;
        }
        if at > hold {
            break;
        }
        let zero = (available as f64 + freed) / rate;
        if zero < at {
            return Some(zero);
        }
        freed += f64::from(count);
    }
    let zero = (available as f64 + freed) / rate;
    (zero <= hold).then_some(zero)
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
#[derive(Debug, Clone)]
pub struct EphemeralPorts {
    pools: Vec<(PoolKey, PoolState)>,
    index: FoldHashMap<PoolKey, usize>,
    last: usize,
    /// TIME_WAIT sockets younger than this (ms) entered TIME_WAIT since the
    /// previous census ([`Pool::time_wait_entries_total`]).
    new_within_ms: u32,
}

impl Default for EphemeralPorts {
    /// For a first census: every TIME_WAIT socket counts as an entry.
    fn default() -> Self {
        EphemeralPorts::new(u32::MAX)
    }
}

impl EphemeralPorts {
    /// Counts TIME_WAIT sockets younger than `new_within_ms` as entries
    /// since the previous census (the time since it started).
    pub fn new(new_within_ms: u32) -> EphemeralPorts {
        EphemeralPorts {
            pools: Vec::new(),
            index: FoldHashMap::default(),
            last: 0,
            new_within_ms,
        }
    }

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
        let new_within = self.new_within_ms;
        let p = self.pool(key);
        match s.state {
            TcpState::Established => p.counts.established += 1,
            TcpState::TimeWait => {
                p.counts.time_wait += 1;
                if model.tw_reusable(s) {
                    p.counts.time_wait_reusable += 1;
                }
                if let Some(left) = s.expires_ms {
                    let n = ((left / 1000) as usize).min(TIMER_BUCKETS - 1);
                    let t = p.timers.get_or_insert_with(|| Box::new([0; TIMER_BUCKETS]));
                    t[n] = t[n].saturating_add(1);
                    if TIME_WAIT_MS.saturating_sub(left) < new_within {
                        p.entered += 1;
                    }
                }
            }
            _ => p.counts.other += 1,
        }
    }

    /// The state of `key`'s pool, created empty on first use.
    fn pool(&mut self, key: PoolKey) -> &mut PoolState {
        let hit = self.pools.get(self.last).is_some_and(|(k, _)| *k == key);
        if !hit {
            let next = self.pools.len();
            self.last = *self.index.entry(key).or_insert(next);
            if self.last == next {
                self.pools.push((key, PoolState::default()));
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
    /// Entries into TIME_WAIT counted since the agent first saw the pool
    /// ([`PoolEntries`]); for the `other` row, the growth of the pools it
    /// aggregated while they were in it ([`OtherCounters`]).
    pub time_wait_entries_total: u64,
    /// The churn rate [`exhaustion_seconds`] assumed, per second.
    pub time_wait_rate_per_second: f64,
    /// [`exhaustion_seconds`], less the census's age once carried; `None`
    /// (JSON `null`, `+Inf` on `/metrics`): not at the current rate.
    pub exhaustion_seconds: Option<f64>,
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
pub(crate) const OTHER: &str = "other";

/// Entries into TIME_WAIT per pool across censuses: each census adds the
/// pool's TIME_WAIT sockets younger than the time since the previous one.
/// A pool absent from a census (no socket left) is forgotten: its counter
/// restarts at 0 if it comes back. Memory grows with the pools, not the
/// sockets.
///
/// When an event source counts the entries as they happen
/// ([`PoolEntries::set_exact`]), its counts replace the inference, and
/// the forecast's rate is their growth over the last
/// [`RATE_WINDOW_SECONDS`] of censuses.
#[derive(Debug, Default)]
pub struct PoolEntries {
    totals: FoldHashMap<PoolKey, u64>,
    /// The `destination="other"` row's counter
    /// (`--ephemeral.top-destinations` applied by [`report`]).
    other: OtherCounters<(String, String), 1>,
    /// The event source's counts for the next [`report`], if any.
    exact: Option<FoldHashMap<PoolKey, u64>>,
    /// Per pool, the exact counts at each census of the last
    /// [`RATE_WINDOW_SECONDS`] (oldest first), and when.
    history: FoldHashMap<PoolKey, std::collections::VecDeque<(std::time::Instant, u64)>>,
}

impl PoolEntries {
    /// Entries into TIME_WAIT per pool as counted by an event source
    /// (cumulative), at `now` (the census about to run); `None`: no event
    /// source, infer them. Pools the source does not list have none.
    pub(crate) fn set_exact(
        &mut self,
        counts: Option<&std::collections::HashMap<PoolKey, u64>>,
        now: std::time::Instant,
    ) {
        let Some(counts) = counts else {
            self.exact = None;
            self.history.clear();
            return;
        };
        let window = std::time::Duration::from_secs(RATE_WINDOW_SECONDS.into());
        self.history.retain(|k, _| counts.contains_key(k));
        for (k, &n) in counts {
            let h = self.history.entry(*k).or_default();
            h.push_back((now, n));
            while h
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
            {
                h.pop_front();
            }
        }
        self.exact = Some(counts.iter().map(|(k, v)| (*k, *v)).collect());
    }

    /// The pool's entries per second over the censuses of the last
    /// [`RATE_WINDOW_SECONDS`] from the exact counts; `None` without them,
    /// or with fewer than two censuses of the pool in the window.
    fn exact_rate(&self, key: &PoolKey) -> Option<f64> {
        self.exact.as_ref()?;
        let h = self.history.get(key)?;
        let ((t0, n0), (t1, n1)) = (h.front()?, h.back()?);
        let span = t1.saturating_duration_since(*t0).as_secs_f64();
        (span > 0.0).then(|| n1.saturating_sub(*n0) as f64 / span)
    }

    /// Pools remembered.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }
}

/// The order of the `--ephemeral.top-destinations` cap: the pools closest
/// to exhaustion by either measure — the soonest forecast first (a pool at
/// 40 % that runs out in 20 s before a steady one at 80 %), then the least
/// available, the most used, the key.
fn rank(a: &Pool, b: &Pool) -> std::cmp::Ordering {
    let f = |p: &Pool| p.exhaustion_seconds.unwrap_or(f64::INFINITY);
    f(a).total_cmp(&f(b))
        .then(a.available.cmp(&b.available))
        .then(b.counts.used().cmp(&a.counts.used()))
        .then_with(|| (&a.local_ip, &a.destination).cmp(&(&b.local_ip, &b.destination)))
}

/// Computes headroom and forecast per pool, adds this census's TIME_WAIT
/// entries to `entries`, and keeps the `top` first pools in [`rank`] order
/// (the rest summed into `destination="other"`).
pub fn report(
    model: &PortModel,
    listening: &PortSet,
    ports: &EphemeralPorts,
    top: usize,
    entries: &mut PoolEntries,
) -> EphemeralReport {
    let listening_in_range = listening.count_in(model.range.0, model.range.1);
    let base = model.limit.saturating_sub(listening_in_range);
    let ratio = |avail: u64| usage_ratio(model.limit, avail);
    let mut totals = FoldHashMap::with_capacity_and_hasher(ports.pools.len(), Default::default());
    let mut pools: Vec<Pool> = ports
        .pools
        .iter()
        .map(|(k, st)| {
            let available = base.saturating_sub(st.counts.blocking());
            let total = match &entries.exact {
                Some(x) => x.get(k).copied().unwrap_or(0),
                None => entries.totals.get(k).copied().unwrap_or(0) + st.entered,
            };
            totals.insert(*k, total);
            let timers = st.timers.as_deref();
            let rate = entries
                .exact_rate(k)
                .unwrap_or_else(|| timers.map_or(0.0, time_wait_rate));
            Pool {
                local_ip: k.local_ip.to_string(),
                destination: k.destination.to_string(),
                counts: st.counts,
                available,
                usage_ratio: ratio(available),
                time_wait_entries_total: total,
                time_wait_rate_per_second: rate,
                exhaustion_seconds: exhaustion_seconds(model, k, timers, available, rate),
            }
        })
        .collect();
    entries.totals = totals;
    pools.sort_by(rank);
    let usage_ratio_max = pools.iter().map(|p| p.usage_ratio).fold(0.0, f64::max);
    let pools_total = pools.len() as u64;
    cap(&mut pools, &|i| i < top, model.limit, &mut entries.other);
    EphemeralReport {
        range: model.range,
        limit: model.limit,
        listening_in_range,
        pools,
        pools_total,
        usage_ratio_max,
    }
}

/// Keeps the pools of `keep` (indices into `pools`) and sums the others
/// into one `destination="other"` row: counts summed, the least available
/// and the soonest forecast among them, and a TIME_WAIT entry counter that
/// grows by what theirs grew by ([`OtherCounters`]).
fn cap(
    pools: &mut Vec<Pool>,
    keep: &dyn Fn(usize) -> bool,
    limit: u64,
    other_entries: &mut OtherCounters<(String, String), 1>,
) {
    if (0..pools.len()).all(keep) {
        other_entries.fold(std::iter::empty());
        return;
    }
    let folded = other_entries.fold(pools.iter().enumerate().map(|(i, p)| {
        (
            (p.local_ip.clone(), p.destination.clone()),
            [p.time_wait_entries_total as f64],
            keep(i),
        )
    }));
    let old = std::mem::take(pools);
    let mut other = Pool {
        local_ip: OTHER.into(),
        destination: OTHER.into(),
        counts: PoolCounts::default(),
        available: u64::MAX,
        usage_ratio: 0.0,
        time_wait_entries_total: folded[0] as u64,
        time_wait_rate_per_second: 0.0,
        exhaustion_seconds: None,
    };
    for (i, p) in old.into_iter().enumerate() {
        if keep(i) {
            pools.push(p);
            continue;
        }
        other.counts.add(&p.counts);
        other.available = other.available.min(p.available);
        other.time_wait_rate_per_second += p.time_wait_rate_per_second;
        other.exhaustion_seconds = match (other.exhaustion_seconds, p.exhaustion_seconds) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    other.usage_ratio = usage_ratio(limit, other.available);
    pools.push(other);
}

/// `--ephemeral.top-destinations` across namespaces: keeps the `top`
/// first pools of all `reports` together in [`rank`] order and sums each
/// namespace's other pools into its own `other` row (the least
/// `available` and forecast among them; a TIME_WAIT entry counter that
/// never goes backwards, kept in `caps` per namespace key between polls;
/// a namespace no longer in `reports` is forgotten). The reports come
/// uncapped (each namespace's poller with no cap of its own). At most
/// `top` + namespaces rows remain.
pub(crate) fn cap_across(
    reports: &mut [(u64, &mut EphemeralReport)],
    top: usize,
    caps: &mut std::collections::HashMap<u64, OtherCounters<(String, String), 1>>,
) {
    let mut ranked: Vec<(usize, usize)> = Vec::new();
    for (r, (_, rep)) in reports.iter().enumerate() {
        ranked.extend((0..rep.pools.len()).map(|i| (r, i)));
    }
    ranked.sort_by(|&(ra, ia), &(rb, ib)| {
        rank(&reports[ra].1.pools[ia], &reports[rb].1.pools[ib]).then((ra, ia).cmp(&(rb, ib)))
    });
    let keep: std::collections::HashSet<(usize, usize)> = ranked.into_iter().take(top).collect();
    caps.retain(|k, _| reports.iter().any(|(key, _)| key == k));
    for (r, (key, rep)) in reports.iter_mut().enumerate() {
        let limit = rep.limit;
        cap(
            &mut rep.pools,
            &|i| keep.contains(&(r, i)),
            limit,
            caps.entry(*key).or_default(),
        );
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
    /// True when a pool is at or under [`NEAR_EXHAUSTION_RATIO`] of the
    /// limit or forecast to run out within [`NEAR_EXHAUSTION_SECONDS`].
    pub(crate) fn near_exhaustion(&self) -> bool {
        self.pools.iter().any(|p| {
            (p.available as f64) <= self.limit as f64 * NEAR_EXHAUSTION_RATIO
                || p.exhaustion_seconds
                    .is_some_and(|s| s <= NEAR_EXHAUSTION_SECONDS)
        })
    }

    /// The forecasts `age` after the census they were made at: each
    /// finite one less `age`, at least 0.
    pub(crate) fn age_forecasts(&mut self, age: std::time::Duration) {
        for p in &mut self.pools {
            if let Some(s) = &mut p.exhaustion_seconds {
                *s = (*s - age.as_secs_f64()).max(0.0);
            }
        }
    }

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
            out.push(
                &EPHEMERAL_TW_ENTRIES,
                &[ip, d],
                p.time_wait_entries_total as f64,
            );
            out.push(
                &EPHEMERAL_EXHAUSTION,
                &[ip, d],
                p.exhaustion_seconds.unwrap_or(f64::INFINITY),
            );
        }
        out.one(&EPHEMERAL_LIMIT, Some(self.limit as f64));
        out.one(&EPHEMERAL_RATIO, Some(self.usage_ratio_max));
        out.one(&EPHEMERAL_POOLS, Some(self.pools_total as f64));
    }
}

#[cfg(test)]
#[path = "ephemeral_ports/tests.rs"]
mod tests;
