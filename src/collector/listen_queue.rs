//! Accept queues per listener: depth, limit, and the queued (Q) vs accepted
//! (A) connections of seed 001's `Active = Q + A + 1`.
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

use std::net::SocketAddr;

use crate::model::{Family, TcpSocket, TcpState, UnixName, UnixSocket, UnixState};
use foldhash::HashMap as FoldHashMap;

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

/// One row of the listener table, after the cardinality cap.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Listener {
    pub proto: Proto,
    /// `127.0.0.1:8080`, `[::]:443`, `/run/app.sock`, `@abstract`, or
    /// `other` for the aggregate of listeners beyond the cap.
    pub listener: String,
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
    pub fn union(&mut self, other: &PortSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }
    /// Ports in `lo..=hi` that are set.
    pub fn count_in(&self, lo: u16, hi: u16) -> u64 {
        (lo..=hi).filter(|&p| self.contains(p)).count() as u64
    }
}

/// TCP listeners of one census. Listeners must be observed before the
/// connections they accepted (the kernel dumps the listening hash first,
/// for inet_diag and `/proc/net/tcp` alike).
#[derive(Debug, Default, Clone)]
pub struct TcpListeners {
    entries: FoldHashMap<SocketAddr, TcpEntry>,
    /// Listening ports, for the ephemeral-port classification.
    pub ports: PortSet,
}

impl TcpListeners {
    /// Records a LISTEN socket, or counts an ESTABLISHED one against the
    /// listener it belongs to (exact address first, then the wildcard).
    pub fn observe(&mut self, s: &TcpSocket) {
        match s.state {
            TcpState::Listen => {
                self.ports.insert(s.local.port());
                let e = self.entries.entry(s.local).or_default();
                e.family = Some(s.family);
                e.addr = Some(s.local);
                e.length += u64::from(s.rqueue);
                e.limit = match (e.limit, s.wqueue) {
                    (Some(a), Some(b)) => Some(a + u64::from(b)),
                    (None, Some(b)) if e.sockets == 0 => Some(u64::from(b)),
                    (limit, _) => limit,
                };
                e.sockets += 1;
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
        self.entries.extend(other.entries);
    }

    /// For listeners sampled by a listener-only dump: takes each one's
    /// accepted-connection count (A) from `census`, the latest full dump,
    /// since only a full dump lists the ESTABLISHED sockets A is counted
    /// from. A listener the census did not see gets 0.
    pub fn carry_connections(&mut self, census: &TcpListeners) {
        for (addr, e) in &mut self.entries {
            e.connected = Some(census.entries.get(addr).map_or(0, TcpEntry::accepted));
        }
    }

    fn rows(&self) -> impl Iterator<Item = Listener> + '_ {
        self.entries.iter().map(|(addr, e)| Listener {
            proto: Proto::Tcp,
            listener: addr.to_string(),
            length: e.length,
            limit: e.limit,
            connecting: e.length,
            connected: e.accepted(),
            sockets: e.sockets,
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
                if let Some((q, l)) = s.listen_queue {
                    let (q0, l0) = e.rqlen.unwrap_or((0, 0));
                    e.rqlen = Some((q0 + u64::from(q), l0 + u64::from(l)));
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
    pub fn carry_connections(&mut self, census: &UnixListeners) {
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
                    listener: name.to_string(),
                    length,
                    limit,
                    connecting: length,
                    connected: e.connected,
                    sockets: e.listeners,
                }
            })
    }
}

/// The label of the aggregate row beyond `--listen.max-listeners`.
pub const OTHER: &str = "other";

/// Builds the listener table: every listener sorted by queue fill
/// (length/limit; length/somaxconn without a limit), the first `max` kept,
/// the rest summed into one `listener="other"` row per protocol.
pub fn table(
    tcp: &TcpListeners,
    unix: &UnixListeners,
    somaxconn: u32,
    max: usize,
) -> Vec<Listener> {
    let mut rows: Vec<Listener> = tcp.rows().chain(unix.rows()).collect();
    let key = |l: &Listener| {
        l.fill()
            .unwrap_or(l.length as f64 / f64::from(somaxconn.max(1)))
    };
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then(b.length.cmp(&a.length))
            .then_with(|| (a.proto, &a.listener).cmp(&(b.proto, &b.listener)))
    });
    if rows.len() <= max {
        return rows;
    }
    let rest = rows.split_off(max);
    for proto in [Proto::Tcp, Proto::Unix] {
        let mut other: Option<Listener> = None;
        for r in rest.iter().filter(|r| r.proto == proto) {
            let o = other.get_or_insert_with(|| Listener {
                proto,
                listener: OTHER.to_owned(),
                length: 0,
                limit: Some(0),
                connecting: 0,
                connected: 0,
                sockets: 0,
            });
            o.length += r.length;
            o.limit = o.limit.zip(r.limit).map(|(a, b)| a + b);
            o.connecting += r.connecting;
            o.connected += r.connected;
            o.sockets += r.sockets;
        }
        rows.extend(other);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(state: TcpState, local: &str, rq: u32, wq: Option<u32>) -> TcpSocket {
        let local: SocketAddr = local.parse().unwrap();
        TcpSocket {
            family: if local.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            state,
            local,
            remote: "127.0.0.1:50000".parse().unwrap(),
            rqueue: rq,
            wqueue: wq,
            expires_ms: None,
        }
    }

    #[test]
    fn tcp_queued_and_accepted() {
        let mut t = TcpListeners::default();
        t.observe(&tcp(TcpState::Listen, "0.0.0.0:8080", 9, Some(8)));
        t.observe(&tcp(TcpState::Listen, "127.0.0.1:9000", 0, Some(128)));
        // 9 queued + 3 accepted on the wildcard listener (any local address)
        for i in 0..12 {
            let local = if i % 2 == 0 {
                "127.0.0.1:8080"
            } else {
                "127.0.0.2:8080"
            };
            t.observe(&tcp(TcpState::Established, local, 0, None));
        }
        t.observe(&tcp(TcpState::Established, "127.0.0.1:9000", 0, None));
        t.observe(&tcp(TcpState::Established, "127.0.0.2:9000", 0, None)); // no listener there
        t.observe(&tcp(TcpState::TimeWait, "127.0.0.1:8080", 0, None));
        let rows = table(&t, &UnixListeners::default(), 4096, 10);
        assert_eq!(rows[0].listener, "0.0.0.0:8080");
        assert_eq!((rows[0].length, rows[0].limit), (9, Some(8)));
        assert_eq!((rows[0].connecting, rows[0].connected), (9, 3));
        assert!(rows[0].full());
        assert_eq!((rows[1].connecting, rows[1].connected), (0, 1));
        assert!(!rows[1].full());
    }

    #[test]
    fn unix_from_procfs_and_netlink() {
        let name = UnixName::Path("/run/my app.sock".into());
        let sock = |state, lq| UnixSocket {
            sock_type: crate::model::UnixType::Stream,
            state,
            name: Some(name.clone()),
            listen_queue: lq,
        };
        // procfs: embryo before its listener, no RQLEN
        let mut p = UnixListeners::default();
        p.observe(&sock(UnixState::Connecting, None));
        p.observe(&sock(UnixState::Listen, None));
        p.observe(&sock(UnixState::Connecting, None));
        p.observe(&sock(UnixState::Connected, None));
        let rows = table(&TcpListeners::default(), &p, 4096, 10);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].listener, "/run/my app.sock");
        assert_eq!(
            (rows[0].length, rows[0].limit, rows[0].connected),
            (2, None, 1)
        );
        // netlink: RQLEN carries the queue
        let mut n = UnixListeners::default();
        n.observe(&sock(UnixState::Listen, Some((5, 4))));
        let rows = table(&TcpListeners::default(), &n, 4096, 10);
        assert_eq!((rows[0].length, rows[0].limit), (5, Some(4)));
        assert!(rows[0].full());
    }

    #[test]
    fn cap_keeps_fullest_and_aggregates_rest() {
        let mut t = TcpListeners::default();
        for port in 1..=300u16 {
            let q = u32::from(port % 7);
            t.observe(&tcp(
                TcpState::Listen,
                &format!("127.0.0.1:{port}"),
                q,
                Some(10),
            ));
        }
        let rows = table(&t, &UnixListeners::default(), 4096, 200);
        assert_eq!(rows.len(), 201);
        assert!(rows[..200].iter().all(|r| r.length >= rows[199].length));
        let other = rows.last().unwrap();
        assert_eq!(other.listener, OTHER);
        assert_eq!(other.sockets, 100);
        assert_eq!(other.limit, Some(1000));
        let total: u64 = (1..=300u64).map(|p| p % 7).sum();
        assert_eq!(rows.iter().map(|r| r.length).sum::<u64>(), total);
    }
}
