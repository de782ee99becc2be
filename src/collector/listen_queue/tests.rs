use super::*;
use crate::model::{ListenQueue, SocketDrops, TcpQueues};

/// The listener table of `tcp` and `unix` as one poll serves it: every
/// row's counters accumulated, then the cap of `max`.
fn table(tcp: &TcpListeners, unix: &UnixListeners, somaxconn: u32, max: usize) -> Vec<Listener> {
    let mut totals = ListenerTotals::default();
    let rows = totals.accumulate(super::table(tcp, unix), Instant::now());
    totals
        .cap(rows, somaxconn, max)
        .into_iter()
        .map(|s| s.listener)
        .collect()
}

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
        queues: match state {
            TcpState::Listen => TcpQueues::Accept(ListenQueue {
                queued: rq,
                limit: wq,
                drops: None,
            }),
            _ => TcpQueues::Bytes { recv: rq, send: 0 },
        },
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
    assert_eq!(rows[0].listener.to_string(), "0.0.0.0:8080");
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
    assert_eq!(rows[0].listener.to_string(), "/run/my app.sock");
    assert_eq!(
        (rows[0].length, rows[0].limit, rows[0].connected),
        (2, None, 1)
    );
    // netlink: RQLEN carries the queue
    let mut n = UnixListeners::default();
    n.observe(&sock(
        UnixState::Listen,
        Some(ListenQueue {
            queued: 5,
            limit: Some(4),
            drops: None,
        }),
    ));
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
    assert_eq!(other.listener, ListenerKey::Other);
    assert_eq!(other.sockets, 100);
    assert_eq!(other.limit, Some(1000));
    let total: u64 = (1..=300u64).map(|p| p % 7).sum();
    assert_eq!(rows.iter().map(|r| r.length).sum::<u64>(), total);
}

/// A relative UNIX path named `other` cannot be mistaken for the
/// aggregate row: it is shown as `./other`.
#[test]
fn listener_labels_never_collide_with_the_aggregate() {
    let rel = ListenerKey::Unix(UnixName::Path("other".into()));
    assert_eq!(rel.to_string(), "./other");
    assert_eq!(ListenerKey::Other.to_string(), "other");
    assert_eq!(
        ListenerKey::Unix(UnixName::Abstract("other".into())).to_string(),
        "@other"
    );
    assert_eq!(
        ListenerKey::Unix(UnixName::Path("/run/other".into())).to_string(),
        "/run/other"
    );
}

/// The full time grows by the time between polls while a queue is full,
/// and every family is encoded for a row with a limit.
#[test]
fn full_time_and_encoded_families() {
    let mut t = TcpListeners::default();
    t.observe(&tcp(TcpState::Listen, "127.0.0.1:8080", 9, Some(8)));
    t.observe(&tcp(TcpState::Established, "127.0.0.1:8080", 0, None));
    let mut full = ListenerTotals::default();
    let t0 = Instant::now();
    let rows = super::table(&t, &UnixListeners::default());
    assert_eq!(full.accumulate(rows.clone(), t0)[0].full_seconds_total, 0.0);
    let later = full.accumulate(rows, t0 + Duration::from_millis(1500));
    assert_eq!(later[0].full_seconds_total, 1.5);
    let text = crate::metrics::encoded(|f| encode(&later, f));
    let l = "proto=\"tcp\",listener=\"127.0.0.1:8080\"";
    for line in [
        format!("sockscope_listen_queue_length{{{l}}} 9\n"),
        format!("sockscope_listen_queue_limit{{{l}}} 8\n"),
        format!("sockscope_listen_queue_full_seconds_total{{{l}}} 1.5\n"),
        format!("sockscope_listen_connections{{{l},state=\"connecting\"}} 9\n"),
        format!("sockscope_listen_connections{{{l},state=\"connected\"}} 0\n"),
        format!("sockscope_listen_sockets{{{l}}} 1\n"),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(text.contains("# TYPE sockscope_listen_queue_full_seconds_total counter\n"));

    // Without a limit (procfs) the limit and the full time are absent.
    let mut no_limit = later.clone();
    no_limit[0].listener.limit = None;
    let text = crate::metrics::encoded(|f| encode(&no_limit, f));
    assert!(!text.contains("sockscope_listen_queue_limit"), "{text}");
    assert!(!text.contains("sockscope_listen_queue_full_seconds_total"));
}

/// The cap holds across namespaces: the fullest rows of all tables are
/// kept, each namespace's rest summed into its own `other` row.
#[test]
fn cap_across_namespaces() {
    let table_of = |ports: std::ops::Range<u16>, queued: u32| {
        let mut t = TcpListeners::default();
        for p in ports {
            t.observe(&tcp(
                TcpState::Listen,
                &format!("127.0.0.1:{p}"),
                queued,
                Some(10),
            ));
        }
        ListenerTotals::default()
            .accumulate(super::table(&t, &UnixListeners::default()), Instant::now())
    };
    let mut a = table_of(1..6, 9); // five 90 % full
    let mut b = table_of(1..6, 1); // five 10 % full
    cap_across(&mut [(1, &mut a), (2, &mut b)], 6, &mut HashMap::new());
    assert_eq!(a.len(), 5, "a's rows are the fullest: all kept");
    assert!(a.iter().all(|r| r.listener.listener != ListenerKey::Other));
    let b_kept: Vec<_> = b
        .iter()
        .filter(|r| r.listener.listener != ListenerKey::Other)
        .collect();
    assert_eq!(b_kept.len(), 1);
    let other = b
        .iter()
        .find(|r| r.listener.listener == ListenerKey::Other)
        .unwrap();
    assert_eq!((other.listener.length, other.listener.sockets), (4, 4));
    assert_eq!(other.listener.limit, Some(40));
    // Under the cap nothing changes.
    let mut c = table_of(1..3, 1);
    let before = c.clone();
    cap_across(&mut [(3, &mut c)], 6, &mut HashMap::new());
    assert_eq!(c, before);
}

fn with_drops(local: &str, queued: u32, sockets: &[(u64, u32)]) -> Listener {
    let mut t = TcpListeners::default();
    for &(cookie, drops) in sockets {
        let mut s = tcp(TcpState::Listen, local, queued, Some(8));
        if let TcpQueues::Accept(q) = &mut s.queues {
            q.drops = Some(SocketDrops { cookie, drops });
        }
        t.observe(&s);
    }
    super::table(&t, &UnixListeners::default()).remove(0)
}

/// `sk_drops` per socket becomes one counter per listener that never goes
/// backwards: a socket's growth is added; a new socket (a restart, a
/// reopened listener, another `SO_REUSEPORT` member) adds its whole count.
#[test]
fn drops_total_survives_socket_restarts() {
    let mut totals = ListenerTotals::default();
    let t0 = Instant::now();
    let mut poll = |sockets: &[(u64, u32)], s: u64| {
        let rows = vec![with_drops("127.0.0.1:7300", 0, sockets)];
        totals.accumulate(rows, t0 + Duration::from_secs(s))[0].drops_total
    };
    assert_eq!(poll(&[(1, 5)], 0), Some(5.0));
    assert_eq!(poll(&[(1, 7)], 1), Some(7.0));
    // Closed and reopened: a new cookie, starting again at 2.
    assert_eq!(poll(&[(2, 2)], 2), Some(9.0));
    // An SO_REUSEPORT group: a second member joins with 1.
    assert_eq!(poll(&[(2, 3), (3, 1)], 3), Some(11.0));
    // sk_drops wraps at 2^32: the growth modulo 2^32.
    assert_eq!(
        poll(&[(2, 3), (3, u32::MAX)], 4),
        Some(11.0 + f64::from(u32::MAX - 1))
    );
    assert_eq!(
        poll(&[(2, 3), (3, 1)], 5),
        Some(11.0 + f64::from(u32::MAX - 1) + 2.0)
    );
    // Without SKMEMINFO (procfs), no counter.
    let mut t = TcpListeners::default();
    t.observe(&tcp(TcpState::Listen, "127.0.0.1:7301", 0, None));
    let rows = totals.accumulate(super::table(&t, &UnixListeners::default()), t0);
    assert_eq!(rows[0].drops_total, None);
    let text = crate::metrics::encoded(|f| encode(&rows, f));
    assert!(
        !text.contains("sockscope_listen_queue_drops_total"),
        "{text}"
    );
}

/// A listener that dropped with an empty queue ranks before fuller ones
/// that did not, and the `other` row's counters never go backwards as
/// listeners move across the cap.
#[test]
fn cap_keeps_dropping_listeners_and_monotonic_other() {
    let mut totals = ListenerTotals::default();
    let t0 = Instant::now();
    let mut other_drops = Vec::new();
    let mut other_full = Vec::new();
    for (i, dropper) in [(0u64, 0u32), (1, 40), (2, 40), (3, 45)] {
        let rows = vec![
            // Two nearly full listeners (7 and 6 of 8), never dropping.
            with_drops("127.0.0.1:7001", 7, &[(11, 3)]),
            with_drops("127.0.0.1:7002", 6, &[(12, 3)]),
            // An empty one that drops from the second poll on.
            with_drops("127.0.0.1:7003", 0, &[(13, dropper)]),
        ];
        let now = t0 + Duration::from_secs(i);
        let rows = totals.accumulate(rows, now);
        let capped = totals.cap(rows, 4096, 1);
        let kept: Vec<String> = capped
            .iter()
            .map(|r| r.listener.listener.to_string())
            .collect();
        let other = capped.last().unwrap();
        assert_eq!(other.listener.listener, ListenerKey::Other);
        other_drops.push(other.drops_total.unwrap());
        other_full.push(other.full_seconds_total);
        if i == 0 {
            assert_eq!(kept[0], "127.0.0.1:7001", "fullest first");
        } else {
            assert_eq!(
                kept[0], "127.0.0.1:7003",
                "the dropping listener is kept: {kept:?}"
            );
        }
    }
    // A summed-totals `other` would have gone 3 + 0 → 3 + 3 (7003 left it
    // with 0, 7001 joined with 3): the same here, but never below.
    assert!(
        other_drops.windows(2).all(|w| w[0] <= w[1]),
        "{other_drops:?}"
    );
    assert!(
        other_full.windows(2).all(|w| w[0] <= w[1]),
        "{other_full:?}"
    );
}
