//! Accept queues per listener: depth, limit, drops, and the queued (Q) vs
//! accepted (A) connections behind nginx's `Active connections` (README
//! "Lab": Active counts A, the agent's own connection included, not Q).
//!
//! TCP: a listener's `idiag_rqueue` is `sk_ack_backlog` (queued, not yet
//! `accept()`ed) and `idiag_wqueue` is `sk_max_ack_backlog` =
//! min(backlog, somaxconn) (`inet_diag_get_info()`/`tcp_diag_get_info()`).
//! Queued children are full ESTABLISHED sockets in the established hash,
//! so the dump lists them too: accepted = ESTABLISHED on the listener's
//! address − queued.
//!
//! UNIX: unix_diag's `UNIX_DIAG_RQLEN` is (queued, backlog) for a
//! listener; `/proc/net/unix` lists each queued embryo as an `SS_CONNECTING`
//! line carrying the listener's path. Accepted server-side sockets carry
//! the listener's name too (`unix_stream_connect()` copies `addr`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::collector::cap::OtherCounters;
use crate::metrics::Families;
use crate::model::{Family, SocketDrops, TcpSocket, TcpState, UnixName, UnixSocket, UnixState};
use foldhash::HashMap as FoldHashMap;

crate::metric_specs! {
    /// [`Listener::length`]: TCP `idiag_rqueue` of a LISTEN socket
    /// (`sk_ack_backlog`); UNIX the first word of `UNIX_DIAG_RQLEN`, or
    /// the `SS_CONNECTING` lines of `/proc/net/unix` carrying its name.
    LISTEN_QUEUE_LENGTH = "sockscope_listen_queue_length", Gauge, ["proto", "listener"],
        "Current accept-queue depth per listener (sk_ack_backlog: inet_diag idiag_rqueue, UNIX_DIAG_RQLEN), as of the latest poll.";
    /// [`Listener::limit`]: TCP `idiag_wqueue` of a LISTEN socket
    /// (`sk_max_ack_backlog`); UNIX the second word of `UNIX_DIAG_RQLEN`.
    LISTEN_QUEUE_LIMIT = "sockscope_listen_queue_limit", Gauge, ["proto", "listener"],
        "Accept-queue limit per listener, min(backlog, somaxconn) (sk_max_ack_backlog: inet_diag idiag_wqueue, UNIX_DIAG_RQLEN); absent when the source does not report it (procfs).";
    /// [`ListenerSample::full_seconds_total`] ([`FullTime`]).
    LISTEN_QUEUE_FULL = "sockscope_listen_queue_full_seconds_total", Counter, ["proto", "listener"],
        "Seconds the listener's accept queue was sampled at or over its limit.";
    /// [`Listener::connecting`] (= the queue length) and
    /// [`Listener::connected`]: TCP ESTABLISHED sockets on the listener's
    /// address minus the queued ones; UNIX `SS_CONNECTED` sockets carrying
    /// its name (`unix_stream_connect()` copies the listener's `addr`).
    LISTEN_CONNECTIONS = "sockscope_listen_connections", Gauge, ["proto", "listener", "state"],
        "Connections per listener: connecting = queued, not yet accepted (Q, the queue length), as of the latest poll; connected = accepted and still open (A: ESTABLISHED on the listener's address minus Q, or UNIX sockets carrying its name), as of the latest census.";
    /// [`ListenerSample::drops_total`] ([`ListenerTotals`]): the sum of
    /// the `sk_drops` growth of every socket behind the label.
    LISTEN_DROPS = "sockscope_listen_queue_drops_total", Counter, ["proto", "listener"],
        "Connections the TCP listener dropped: the growth of its sockets' sk_drops (inet_diag INET_DIAG_SKMEMINFO, SK_MEMINFO_DROPS; ss -tlm 'd'), counted by tcp_listendrop() when the accept or SYN queue is full, plus other discards on the listening socket (a final-ACK drop counts twice). Kept monotonic across socket restarts and the --listen.max-listeners cap; absent with --source procfs and for UNIX listeners.";
    /// [`Listener::sockets`].
    LISTEN_SOCKETS = "sockscope_listen_sockets", Gauge, ["proto", "listener"],
        "Listening sockets behind each listener label (more than 1 for an SO_REUSEPORT group, summed), as of the latest poll.";
}

/// Protocol of a listener (`proto` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Unix,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Unix => "unix",
        }
    }
}

/// What a listener row stands for; its [`fmt::Display`] is the `listener`
/// label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "String")]
pub enum ListenerKey {
    /// `127.0.0.1:8080`, `[::]:443`.
    Tcp(SocketAddr),
    /// `/run/app.sock`, `@abstract`; a relative path is shown as `./path`
    /// so that no UNIX name reads `other`.
    Unix(UnixName),
    /// `other`: the aggregate of the listeners beyond
    /// `--listen.max-listeners`.
    Other,
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerKey::Tcp(a) => write!(f, "{a}"),
            ListenerKey::Unix(UnixName::Path(p)) if !p.starts_with('/') => write!(f, "./{p}"),
            ListenerKey::Unix(n) => write!(f, "{n}"),
            ListenerKey::Other => f.write_str("other"),
        }
    }
}

impl From<ListenerKey> for String {
    fn from(k: ListenerKey) -> String {
        k.to_string()
    }
}

/// One row of the listener table, after the cardinality cap.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Listener {
    pub proto: Proto,
    /// The `listener` label.
    pub listener: ListenerKey,
    /// Current accept-queue depth (sum over an `SO_REUSEPORT` group).
    pub length: u64,
    /// Accept-queue limit, min(backlog, somaxconn); `None` when the source
    /// (procfs) does not report it.
    pub limit: Option<u64>,
    /// Queued, not yet accepted (Q).
    pub connecting: u64,
    /// Accepted and still open (A).
    pub connected: u64,
    /// Number of listening sockets behind this row.
    pub sockets: u64,
    /// TCP with inet_diag `INET_DIAG_SKMEMINFO`: each listening socket's
    /// `sk_drops` and cookie (an `SO_REUSEPORT` group has several). `None`
    /// where it was not read (UNIX, procfs).
    #[serde(skip)]
    pub socket_drops: Option<Vec<SocketDrops>>,
}

impl Listener {
    /// length / limit, or `None` without a limit.
    pub fn fill(&self) -> Option<f64> {
        self.limit.map(|l| self.length as f64 / l.max(1) as f64)
    }

    /// True when the queue was at or over its limit.
    pub fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.length >= l)
    }
}

#[derive(Debug, Clone, Default)]
struct TcpEntry {
    family: Option<Family>,
    addr: Option<SocketAddr>,
    length: u64,
    limit: Option<u64>,
    established: u64,
    sockets: u64,
    /// Accepted connections carried from the latest census by
    /// [`TcpListeners::carry_connections`] (a listener-only dump has no
    /// ESTABLISHED sockets to count).
    connected: Option<u64>,
    /// Every socket's `sk_drops`, when the dump asked for them.
    drops: Option<Vec<SocketDrops>>,
}

/// Listening ports as a bitmap (65,536 bits), for the O(1) "is this a
/// listening port" test of every socket.
#[derive(Clone)]
pub struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        PortSet(Box::new([0; 1024]))
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortSet({} ports)", self.len())
    }
}

impl PortSet {
    pub fn insert(&mut self, p: u16) {
        self.0[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    pub fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(crate) fn union(&mut self, other: &PortSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }
    /// Ports in `lo..=hi` that are set.
    pub(crate) fn count_in(&self, lo: u16, hi: u16) -> u64 {
        (lo..=hi).filter(|&p| self.contains(p)).count() as u64
    }
}

/// TCP listeners of one census. Listeners must be observed before the
/// connections they accepted (the kernel dumps the listening hash first,
/// for inet_diag and `/proc/net/tcp` alike).
#[derive(Debug, Default, Clone)]
pub struct TcpListeners {
    entries: FoldHashMap<SocketAddr, TcpEntry>,
    /// Ports held by `bind()`: listening ports, and the ports of bound
    /// sockets that neither listen nor connect (inet_diag with
    /// `TCPF_BOUND_INACTIVE`, kernel ≥ 6.8: state CLOSE, peer port 0),
    /// which the kernel dumps after the listeners and before the
    /// established hash. `connect()` skips a port whose bind bucket came
    /// from `bind()`, toward every destination: the ephemeral-port model
    /// takes these ports out of every pool.
    pub ports: PortSet,
    /// The bound-only ports among [`TcpListeners::ports`], which the census
    /// reads on its own cadence and carries between reads
    /// (`crate::poller`).
    pub bound: PortSet,
    /// Bound-only sockets seen, per family (IPv4, IPv6).
    pub bound_sockets: [u64; 2],
}

impl TcpListeners {
    /// Records a LISTEN socket, or counts an ESTABLISHED one against the
    /// listener it belongs to (exact address first, then the wildcard).
    pub fn observe(&mut self, s: &TcpSocket) {
        match s.state {
            TcpState::Listen => {
                let Some(q) = s.queues.accept() else { return };
                self.ports.insert(s.local.port());
                let e = self.entries.entry(s.local).or_default();
                e.family = Some(s.family);
                e.addr = Some(s.local);
                e.length += u64::from(q.queued);
                e.limit = match (e.limit, q.limit) {
                    (Some(a), Some(b)) => Some(a + u64::from(b)),
                    (None, Some(b)) if e.sockets == 0 => Some(u64::from(b)),
                    (limit, _) => limit,
                };
                e.sockets += 1;
                if let Some(d) = q.drops {
                    e.drops.get_or_insert_with(Vec::new).push(d);
                }
            }
            // Bound, not listening, not connected (kernel ≥ 6.8).
            TcpState::Close if s.remote.port() == 0 => {
                self.ports.insert(s.local.port());
                self.bound.insert(s.local.port());
                self.bound_sockets[usize::from(s.family == Family::Ipv6)] += 1;
            }
            TcpState::Established if self.ports.contains(s.local.port()) => {
                if let Some(e) = self.entries.get_mut(&s.local) {
                    e.established += 1;
                    return;
                }
                let unspecified = match s.local {
                    SocketAddr::V4(_) => SocketAddr::new([0, 0, 0, 0].into(), s.local.port()),
                    SocketAddr::V6(_) => {
                        SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), s.local.port())
                    }
                };
                if let Some(e) = self.entries.get_mut(&unspecified) {
                    e.established += 1;
                }
            }
            _ => {}
        }
    }

    /// Adds another family's listeners.
    pub fn merge(&mut self, other: TcpListeners) {
        self.ports.union(&other.ports);
        self.bound.union(&other.bound);
        for (a, b) in self.bound_sockets.iter_mut().zip(other.bound_sockets) {
            *a += b;
        }
        self.entries.extend(other.entries);
    }

    /// For listeners sampled by a listener-only dump: takes each one's
    /// accepted-connection count (A) from `census`, the latest full dump,
    /// since only a full dump lists the ESTABLISHED sockets A is counted
    /// from. A listener the census did not see gets 0.
    pub(crate) fn carry_connections(&mut self, census: &TcpListeners) {
        for (addr, e) in &mut self.entries {
            e.connected = Some(census.entries.get(addr).map_or(0, TcpEntry::accepted));
        }
    }

    fn rows(&self) -> impl Iterator<Item = Listener> + '_ {
        self.entries.iter().map(|(addr, e)| Listener {
            proto: Proto::Tcp,
            listener: ListenerKey::Tcp(*addr),
            length: e.length,
            limit: e.limit,
            connecting: e.length,
            connected: e.accepted(),
            sockets: e.sockets,
            socket_drops: e.drops.clone(),
        })
    }
}

impl TcpEntry {
    /// Accepted and still open: ESTABLISHED on the listener's address minus
    /// those still queued, unless carried from a census.
    fn accepted(&self) -> u64 {
        self.connected
            .unwrap_or(self.established.saturating_sub(self.length))
    }
}

#[derive(Debug, Clone, Default)]
struct UnixEntry {
    listeners: u64,
    rqlen: Option<(u64, u64)>,
    connecting: u64,
    connected: u64,
}

/// UNIX listeners of one census, keyed by bound name. Sockets may arrive
/// in any order (hash-table order).
#[derive(Debug, Default, Clone)]
pub struct UnixListeners {
    names: FoldHashMap<UnixName, UnixEntry>,
}

impl UnixListeners {
    pub fn observe(&mut self, s: &UnixSocket) {
        let Some(name) = &s.name else { return };
        let e = match self.names.get_mut(name) {
            Some(e) => e,
            None => self.names.entry(name.clone()).or_default(),
        };
        match s.state {
            UnixState::Listen => {
                e.listeners += 1;
                if let Some(q) = s.listen_queue {
                    let (q0, l0) = e.rqlen.unwrap_or((0, 0));
                    let l = q.limit.unwrap_or(0);
                    e.rqlen = Some((q0 + u64::from(q.queued), l0 + u64::from(l)));
                }
            }
            UnixState::Connecting => e.connecting += 1,
            UnixState::Connected => e.connected += 1,
            _ => {}
        }
    }

    /// For listeners sampled by a listener-only dump: takes the counts
    /// only a full dump has (accepted connections; `SS_CONNECTING` embryos,
    /// the queue length when `UNIX_DIAG_RQLEN` is missing) from `census`.
    pub(crate) fn carry_connections(&mut self, census: &UnixListeners) {
        for (name, e) in &mut self.names {
            let c = census.names.get(name);
            e.connected = c.map_or(0, |c| c.connected);
            e.connecting = c.map_or(0, |c| c.connecting);
        }
    }

    fn rows(&self) -> impl Iterator<Item = Listener> + '_ {
        self.names
            .iter()
            .filter(|(_, e)| e.listeners > 0)
            .map(|(name, e)| {
                let (length, limit) = match e.rqlen {
                    Some((q, l)) => (q, Some(l)),
                    None => (e.connecting, None),
                };
                Listener {
                    proto: Proto::Unix,
                    listener: ListenerKey::Unix(name.clone()),
                    length,
                    limit,
                    connecting: length,
                    connected: e.connected,
                    sockets: e.listeners,
                    socket_drops: None,
                }
            })
    }
}

/// Every listener of `tcp` and `unix`, in no particular order: the rows
/// [`ListenerTotals::accumulate`] and [`ListenerTotals::cap`] take.
pub fn table(tcp: &TcpListeners, unix: &UnixListeners) -> Vec<Listener> {
    tcp.rows().chain(unix.rows()).collect()
}

impl Listener {
    /// An empty `listener="other"` row.
    fn other(proto: Proto) -> Listener {
        Listener {
            proto,
            listener: ListenerKey::Other,
            length: 0,
            limit: Some(0),
            connecting: 0,
            connected: 0,
            sockets: 0,
            socket_drops: None,
        }
    }

    /// Adds `r` into this aggregate row (a limit only while every row has
    /// one).
    fn absorb(&mut self, r: &Listener) {
        self.length += r.length;
        self.limit = self.limit.zip(r.limit).map(|(a, b)| a + b);
        self.connecting += r.connecting;
        self.connected += r.connected;
        self.sockets += r.sockets;
    }
}

/// How long a listener that dropped a connection ranks first for the
/// cap, whatever its queue fill (a listener drops with an empty queue
/// between bursts).
pub(crate) const RECENT_DROPS: Duration = Duration::from_secs(300);

/// The order of the `--listen.max-listeners` cap: listeners that dropped
/// within [`RECENT_DROPS`] first, then by queue fill (length/limit;
/// length/`somaxconn` without a limit), then by length, then by name.
fn rank(a: &ListenerSample, b: &ListenerSample, somaxconn: u32) -> std::cmp::Ordering {
    let fill = |l: &Listener| {
        l.fill()
            .unwrap_or(l.length as f64 / f64::from(somaxconn.max(1)))
    };
    let (x, y) = (&a.listener, &b.listener);
    b.dropping
        .cmp(&a.dropping)
        .then(fill(y).total_cmp(&fill(x)))
        .then(y.length.cmp(&x.length))
        .then_with(|| (x.proto, &x.listener).cmp(&(y.proto, &y.listener)))
}

/// The aggregate rows' counters of one namespace: per protocol, the
/// full-time and drop counters of `listener="other"` ([`OtherCounters`]).
#[derive(Debug, Default)]
pub struct ListenerCap {
    other: HashMap<Proto, OtherCounters<ListenerKey, 2>>,
}

impl ListenerCap {
    /// Keeps the rows of `keep` (indices into `rows`) and sums the others
    /// into one `listener="other"` row per protocol, whose counters grow by
    /// what the rows beyond the cap grew by (never backwards).
    fn apply(&mut self, rows: &mut Vec<ListenerSample>, keep: &dyn Fn(usize) -> bool) {
        let old = std::mem::take(rows);
        let mut others: Vec<ListenerSample> = Vec::new();
        for proto in [Proto::Tcp, Proto::Unix] {
            let counters = self.other.entry(proto).or_default();
            let folded = counters.fold(
                old.iter()
                    .enumerate()
                    .filter(|(_, r)| r.listener.proto == proto)
                    .map(|(i, r)| {
                        let totals = [r.full_seconds_total, r.drops_total.unwrap_or(0.0)];
                        (r.listener.listener.clone(), totals, keep(i))
                    }),
            );
            let mut other: Option<ListenerSample> = None;
            for (i, r) in old.iter().enumerate() {
                if r.listener.proto != proto || keep(i) {
                    continue;
                }
                let o = other.get_or_insert_with(|| ListenerSample {
                    listener: Listener::other(proto),
                    full_seconds_total: folded[0],
                    drops_total: None,
                    dropping: false,
                });
                o.listener.absorb(&r.listener);
                if r.drops_total.is_some() {
                    o.drops_total = Some(folded[1]);
                }
                o.dropping |= r.dropping;
            }
            others.extend(other);
        }
        rows.extend(
            old.into_iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(_, r)| r),
        );
        rows.extend(others);
    }
}

/// `--listen.max-listeners` across namespaces: keeps the `max` first rows
/// of all `tables` together in [`rank`] order (`somaxconn` 4096 for rows
/// without a limit) and sums each namespace's other rows into its own
/// `listener="other"` row per protocol, with counters that never go
/// backwards (`caps`, one [`ListenerCap`] per namespace key, kept between
/// polls; a namespace no longer in `tables` is forgotten). The tables come
/// uncapped (each namespace's poller with no cap of its own). At most
/// `max` + 2 × namespaces rows remain.
pub(crate) fn cap_across(
    tables: &mut [(u64, &mut Vec<ListenerSample>)],
    max: usize,
    caps: &mut HashMap<u64, ListenerCap>,
) {
    let mut ranked: Vec<(usize, usize)> = Vec::new();
    for (t, (_, rows)) in tables.iter().enumerate() {
        ranked.extend((0..rows.len()).map(|i| (t, i)));
    }
    ranked.sort_by(|&(ta, ia), &(tb, ib)| {
        rank(&tables[ta].1[ia], &tables[tb].1[ib], 4096).then((ta, ia).cmp(&(tb, ib)))
    });
    let keep: std::collections::HashSet<(usize, usize)> = ranked.into_iter().take(max).collect();
    caps.retain(|k, _| tables.iter().any(|(key, _)| key == k));
    for (t, (key, rows)) in tables.iter_mut().enumerate() {
        caps.entry(*key)
            .or_default()
            .apply(rows, &|i| keep.contains(&(t, i)));
    }
}

/// A listener row plus its counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListenerSample {
    #[serde(flatten)]
    pub listener: Listener,
    /// Seconds this listener's queue was sampled at or over its limit.
    pub full_seconds_total: f64,
    /// Connections dropped by its sockets (`sk_drops` growth), since the
    /// agent first saw it; `None` where `sk_drops` is not read.
    pub drops_total: Option<f64>,
    /// It dropped a connection within [`RECENT_DROPS`] (it ranks first for
    /// the cap).
    #[serde(skip)]
    pub dropping: bool,
}

/// One listener's counters across polls.
#[derive(Debug, Default, Clone)]
struct Totals {
    full_seconds: f64,
    /// Sum of its sockets' `sk_drops` growth; `None` until read.
    drops: Option<f64>,
    /// Each socket's `sk_drops` at the previous poll, by cookie.
    sockets: Vec<SocketDrops>,
    last_drop: Option<Instant>,
}

/// The listener counters across polls: `sockscope_listen_queue_full_seconds_total`
/// (the time since the previous poll is added to every listener sampled at
/// or over its limit) and `sockscope_listen_queue_drops_total` (the growth
/// of each listening socket's `sk_drops` since the previous poll, summed;
/// a socket seen for the first time adds its whole `sk_drops`, which it
/// counted since it was created, so a listener that closes and reopens, or
/// an `SO_REUSEPORT` member that restarts, never takes the counter back).
/// A listener that disappears is forgotten (its counters restart at 0 if
/// it comes back, which `rate()` handles). Then the cap ([`ListenerTotals::cap`]).
#[derive(Debug, Default)]
pub struct ListenerTotals {
    totals: HashMap<(Proto, ListenerKey), Totals>,
    last: Option<Instant>,
    cap: ListenerCap,
}

impl ListenerTotals {
    /// Accumulates the poll at `now` over every listener (before any cap)
    /// and returns the rows with their counters.
    pub(crate) fn accumulate(&mut self, rows: Vec<Listener>, now: Instant) -> Vec<ListenerSample> {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .as_secs_f64();
        self.last = Some(now);
        let mut next = HashMap::with_capacity(rows.len());
        let out = rows
            .into_iter()
            .map(|l| {
                let key = (l.proto, l.listener.clone());
                let mut t = self.totals.remove(&key).unwrap_or_default();
                if l.full() {
                    t.full_seconds += elapsed;
                }
                if let Some(now_drops) = &l.socket_drops {
                    let (mut grew, mut seen_growing) = (0u64, false);
                    for d in now_drops {
                        let was = t.sockets.iter().find(|p| p.cookie == d.cookie);
                        // u32 sk_drops wraps: the growth modulo 2^32.
                        let growth = match was {
                            Some(p) => d.drops.wrapping_sub(p.drops),
                            None => d.drops,
                        };
                        grew += u64::from(growth);
                        // A socket's drops before it was first seen may be
                        // old: only growth seen between polls is recent.
                        seen_growing |= was.is_some() && growth > 0;
                    }
                    t.sockets = now_drops.clone();
                    t.drops = Some(t.drops.unwrap_or(0.0) + grew as f64);
                    if seen_growing {
                        t.last_drop = Some(now);
                    }
                }
                let sample = ListenerSample {
                    full_seconds_total: t.full_seconds,
                    drops_total: t.drops,
                    dropping: t
                        .last_drop
                        .is_some_and(|at| now.saturating_duration_since(at) < RECENT_DROPS),
                    listener: l,
                };
                next.insert(key, t);
                sample
            })
            .collect();
        self.totals = next;
        out
    }

    /// `--listen.max-listeners`: keeps the `max` first rows in [`rank`]
    /// order and sums the rest into one `listener="other"` row per
    /// protocol, with monotonic counters ([`ListenerCap`]).
    pub fn cap(
        &mut self,
        mut rows: Vec<ListenerSample>,
        somaxconn: u32,
        max: usize,
    ) -> Vec<ListenerSample> {
        rows.sort_by(|a, b| rank(a, b, somaxconn));
        if rows.len() <= max {
            return rows;
        }
        self.cap.apply(&mut rows, &|i| i < max);
        rows
    }
}

/// The `sockscope_listen_*` families of the listener table. The limit and
/// the full time are absent for a listener whose source has no limit.
pub fn encode(rows: &[ListenerSample], out: &mut Families) {
    for l in rows {
        let r = &l.listener;
        let name = r.listener.to_string();
        let (proto, name) = (r.proto.label(), name.as_str());
        out.push(&LISTEN_QUEUE_LENGTH, &[proto, name], r.length as f64);
        if let Some(limit) = r.limit {
            out.push(&LISTEN_QUEUE_LIMIT, &[proto, name], limit as f64);
            out.push(&LISTEN_QUEUE_FULL, &[proto, name], l.full_seconds_total);
        }
        if let Some(d) = l.drops_total {
            out.push(&LISTEN_DROPS, &[proto, name], d);
        }
        out.push(
            &LISTEN_CONNECTIONS,
            &[proto, name, "connecting"],
            r.connecting as f64,
        );
        out.push(
            &LISTEN_CONNECTIONS,
            &[proto, name, "connected"],
            r.connected as f64,
        );
        out.push(&LISTEN_SOCKETS, &[proto, name], r.sockets as f64);
    }
}

#[cfg(test)]
#[path = "listen_queue/tests.rs"]
mod tests;
