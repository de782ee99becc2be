use super::*;

/// An inet_diag message for a client-side TIME_WAIT socket, as the kernel
/// sends it on x86_64 (little-endian host; ports and addresses in network
/// order): 127.0.0.1:40000 → 127.0.0.1:7100, 30 s left.
#[rustfmt::skip]
const TIME_WAIT_MSG: [u8; 72] = [
    0x02,                   // idiag_family: AF_INET
    0x06,                   // idiag_state: TCP_TIME_WAIT
    0x03,                   // idiag_timer: 3 (TIME_WAIT timer)
    0x00,                   // idiag_retrans
    0x9c, 0x40,             // idiag_sport: 40000 (be16)
    0x1b, 0xbc,             // idiag_dport: 7100 (be16)
    127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // idiag_src
    127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // idiag_dst
    0x00, 0x00, 0x00, 0x00, // idiag_if
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // idiag_cookie
    0x30, 0x75, 0x00, 0x00, // idiag_expires: 30000 ms
    0x00, 0x00, 0x00, 0x00, // idiag_rqueue
    0x00, 0x00, 0x00, 0x00, // idiag_wqueue
    0x00, 0x00, 0x00, 0x00, // idiag_uid
    0x00, 0x00, 0x00, 0x00, // idiag_inode (0 for TIME_WAIT)
];

/// An IPv6 listener `[::]:8443` with 9 queued connections and a limit of 8
/// (backlog 8: the accept queue holds limit + 1).
#[rustfmt::skip]
const LISTEN6_MSG: [u8; 72] = [
    0x0a,                   // idiag_family: AF_INET6
    0x0a,                   // idiag_state: TCP_LISTEN
    0x00,                   // idiag_timer: none
    0x00,                   // idiag_retrans
    0x20, 0xfb,             // idiag_sport: 8443
    0x00, 0x00,             // idiag_dport
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // idiag_src: ::
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // idiag_dst: ::
    0x00, 0x00, 0x00, 0x00, // idiag_if
    0, 0, 0, 0, 0, 0, 0, 0, // idiag_cookie
    0x00, 0x00, 0x00, 0x00, // idiag_expires
    0x09, 0x00, 0x00, 0x00, // idiag_rqueue: sk_ack_backlog = 9
    0x08, 0x00, 0x00, 0x00, // idiag_wqueue: sk_max_ack_backlog = 8
    0xe8, 0x03, 0x00, 0x00, // idiag_uid: 1000
    0x39, 0x30, 0x00, 0x00, // idiag_inode
];

#[test]
fn decodes_time_wait_with_expires() {
    let s = decode_inet(&TIME_WAIT_MSG).unwrap();
    assert_eq!(s.family, Family::Ipv4);
    assert_eq!(s.state, TcpState::TimeWait);
    assert_eq!(s.local, "127.0.0.1:40000".parse().unwrap());
    assert_eq!(s.remote, "127.0.0.1:7100".parse().unwrap());
    assert_eq!(s.expires_ms, Some(30_000));
}

#[test]
fn decodes_listener_queue_and_limit() {
    let s = decode_inet(&LISTEN6_MSG).unwrap();
    assert_eq!(s.family, Family::Ipv6);
    assert_eq!(s.state, TcpState::Listen);
    assert_eq!(s.local, "[::]:8443".parse().unwrap());
    assert_eq!(
        s.queues,
        TcpQueues::Accept(ListenQueue {
            queued: 9,
            limit: Some(8),
            drops: None,
        })
    );
    assert_eq!(s.expires_ms, None);
}

#[test]
fn rejects_short_and_unknown_state() {
    assert!(decode_inet(&TIME_WAIT_MSG[..40]).is_err());
    let mut bad = TIME_WAIT_MSG;
    bad[1] = 13; // TCP_BOUND_INACTIVE: not a connection state
    assert!(decode_inet(&bad).is_err());
    bad[1] = 6;
    bad[0] = 1; // AF_UNIX in an inet message
    assert!(decode_inet(&bad).is_err());
}

/// A UNIX stream listener bound to `/tmp/my app.sock` with 5 queued
/// connections and backlog 4.
#[rustfmt::skip]
const UNIX_LISTENER_MSG: [u8; 52] = [
    0x01,                   // udiag_family: AF_UNIX
    0x01,                   // udiag_type: SOCK_STREAM
    0x0a,                   // udiag_state: TCP_LISTEN
    0x00,                   // pad
    0x0e, 0x4f, 0x00, 0x00, // udiag_ino
    0xa0, 0x02, 0, 0, 0, 0, 0, 0, // udiag_cookie
    0x15, 0x00,             // nla_len: 21
    0x00, 0x00,             // nla_type: UNIX_DIAG_NAME
    b'/', b't', b'm', b'p', b'/', b'm', b'y', b' ', b'a', b'p', b'p', b'.', b's', b'o', b'c', b'k', 0x00,
    0x00, 0x00, 0x00,       // padding to 4
    0x0c, 0x00,             // nla_len: 12
    0x04, 0x00,             // nla_type: UNIX_DIAG_RQLEN
    0x05, 0x00, 0x00, 0x00, // queued: 5
    0x04, 0x00, 0x00, 0x00, // backlog: 4
];

#[test]
fn decodes_unix_listener() {
    let s = decode_unix(&UNIX_LISTENER_MSG).unwrap();
    assert_eq!(s.sock_type, UnixType::Stream);
    assert_eq!(s.state, UnixState::Listen);
    assert_eq!(s.name, Some(UnixName::Path("/tmp/my app.sock".into())));
    assert_eq!(
        s.listen_queue,
        Some(ListenQueue {
            queued: 5,
            limit: Some(4),
            drops: None,
        })
    );
}

#[test]
fn decodes_abstract_connected_dgram() {
    #[rustfmt::skip]
    let msg: [u8; 28] = [
        0x01, 0x02, 0x01, 0x00, // AF_UNIX, SOCK_DGRAM, TCP_ESTABLISHED, pad
        0x01, 0x00, 0x00, 0x00, // udiag_ino
        0, 0, 0, 0, 0, 0, 0, 0, // udiag_cookie
        0x09, 0x00, 0x00, 0x00, // nla_len 9, UNIX_DIAG_NAME
        0x00, b'a', b'b', b'c', b'd', // abstract "\0abcd"
        0x00, 0x00, 0x00,       // padding
    ];
    let s = decode_unix(&msg).unwrap();
    assert_eq!(s.sock_type, UnixType::Dgram);
    assert_eq!(s.state, UnixState::Connected);
    assert_eq!(s.name.unwrap().to_string(), "@abcd");
    assert_eq!(s.listen_queue, None);
}

/// Wraps a payload in a netlink header (type, seq) the way the kernel does.
fn frame(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut v = Vec::new();
    v.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
    v.extend_from_slice(&kind.to_ne_bytes()); // nlmsg_type
    v.extend_from_slice(&0x2u16.to_ne_bytes()); // nlmsg_flags: NLM_F_MULTI
    v.extend_from_slice(&seq.to_ne_bytes()); // nlmsg_seq
    v.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    v.extend_from_slice(payload);
    v.resize(len.next_multiple_of(4), 0);
    v
}

#[test]
fn walks_frames_until_done() {
    let mut buf = frame(SOCK_DIAG_BY_FAMILY, 7, &TIME_WAIT_MSG);
    buf.extend(frame(SOCK_DIAG_BY_FAMILY, 6, &TIME_WAIT_MSG)); // stale seq
    buf.extend(frame(SOCK_DIAG_BY_FAMILY, 7, &LISTEN6_MSG));
    buf.extend(frame(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
    buf.extend(frame(SOCK_DIAG_BY_FAMILY, 7, &LISTEN6_MSG)); // after DONE: not read
    let mut frames = Vec::new();
    let done = walk_frames(&buf, 7, |f| {
        frames.push(format!("{f:?}").chars().take(8).collect::<String>())
    })
    .unwrap();
    assert!(done);
    assert_eq!(frames, ["Socket([", "Other", "Socket([", "Done(0)"]);
}

#[test]
fn done_with_errno_and_error_frames() {
    let buf = frame(NLMSG_DONE, 1, &(-16i32).to_ne_bytes()); // -EBUSY
    let mut seen = None;
    walk_frames(&buf, 1, |f| seen = Some(format!("{f:?}"))).unwrap();
    assert_eq!(seen.as_deref(), Some("Done(-16)"));

    let mut err = (-1i32).to_ne_bytes().to_vec(); // -EPERM
    err.extend_from_slice(&[0u8; 16]); // the offending request's header
    let buf = frame(NLMSG_ERROR, 1, &err);
    walk_frames(&buf, 1, |f| seen = Some(format!("{f:?}"))).unwrap();
    assert_eq!(seen.as_deref(), Some("Error(-1)"));
}

#[test]
fn truncated_frame_is_an_error_not_a_panic() {
    let buf = frame(SOCK_DIAG_BY_FAMILY, 1, &TIME_WAIT_MSG);
    assert!(walk_frames(&buf[..30], 1, |_| {}).is_err());
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_inet(&bytes);
            let _ = decode_unix(&bytes);
            let _ = walk_frames(&bytes, 0, |_| {});
        }

        #[test]
        fn mutated_messages_never_panic(i in 0usize..72, b in any::<u8>(), cut in 0usize..=72) {
            let mut m = TIME_WAIT_MSG;
            m[i] = b;
            let _ = decode_inet(&m[..cut]);
            let mut u = UNIX_LISTENER_MSG;
            u[i % u.len()] = b;
            let _ = decode_unix(&u[..cut.min(u.len())]);
        }
    }
}

/// Live dump in the test process's namespace: must succeed and agree with
/// the kernel's own framing (ends with DONE 0).
#[test]
fn live_dump_succeeds() {
    let mut sd = SockDiag::open().expect("open NETLINK_SOCK_DIAG");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut found = false;
    sd.dump_tcp(Family::Ipv4, TCP_LISTEN_ONLY, 0, &mut |s| {
        found |= s.local.port() == port && s.state == TcpState::Listen;
    })
    .unwrap();
    assert!(found, "our listener on port {port} is in the dump");
    let stats = sd.dump_unix(UNIX_ALL_STATES, &mut |_| {}).unwrap();
    assert_eq!(stats.parse_errors, 0);
}

/// The listener-only unix_diag dump (the agent's between-census ticks)
/// lists our listener with its queue and no connected socket; the full
/// dump lists both.
#[test]
fn live_unix_listen_only_dump() {
    let dir = std::env::temp_dir().join(format!("sockscope-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("l.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let _queued = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let _pair = std::os::unix::net::UnixStream::pair().unwrap();
    let name = UnixName::Path(path.to_string_lossy().into_owned());

    let mut sd = SockDiag::open().expect("open NETLINK_SOCK_DIAG");
    let (mut ours, mut states) = (None, std::collections::BTreeSet::new());
    sd.dump_unix(UNIX_LISTEN_ONLY, &mut |s| {
        states.insert(format!("{:?}", s.state));
        if s.name.as_ref() == Some(&name) {
            ours = Some(s.listen_queue);
        }
    })
    .unwrap();
    let queue = ours.expect("our listener is in the listener-only dump");
    assert!(
        matches!(queue, Some(ListenQueue { queued: 1, limit: Some(backlog), .. }) if backlog >= 1),
        "UNIX_DIAG_RQLEN of our listener: 1 queued, a backlog: {queue:?}"
    );
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        ["Listen"],
        "a listener-only dump lists listeners only"
    );

    let mut connected = 0;
    sd.dump_unix(UNIX_ALL_STATES, &mut |s| {
        connected += usize::from(s.state == UnixState::Connected);
    })
    .unwrap();
    assert!(
        connected >= 2,
        "the full dump lists our socketpair ({connected} connected)"
    );
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The legacy request is laid out as `struct inet_diag_req`: 76 bytes with
/// the header, type TCPDIAG_GETSOCK, the states at payload offset 52.
#[test]
fn legacy_request_layout() {
    assert_eq!(16 + INET_DIAG_REQ_LEN, 76);
    assert_eq!(
        INET_DIAG_REQ_LEN,
        4 + 48 + 4 + 4,
        "family/src_len/dst_len/ext, sockid, states, dbs"
    );
}

/// One legacy dump lists the listeners of both families (the kernel
/// serves it with AF_UNSPEC), each message with its own family.
#[test]
fn live_any_family_dump() {
    let mut sd = SockDiag::open().expect("open NETLINK_SOCK_DIAG");
    assert!(sd.any_family(), "this kernel serves TCPDIAG_GETSOCK");
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
    let (a4, a6) = (v4.local_addr().unwrap(), v6.local_addr().unwrap());
    let (mut seen4, mut seen6) = (None, None);
    let stats = sd
        .dump_tcp_any_family(TCP_LISTEN_ONLY, 0, &mut |s| {
            assert_eq!(s.state, TcpState::Listen, "LISTEN only: {s:?}");
            if s.local == a4 {
                seen4 = Some(s.family);
            }
            if s.local == a6 {
                seen6 = Some(s.family);
            }
        })
        .unwrap();
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(seen4, Some(Family::Ipv4), "{a4} in the dump");
    assert_eq!(seen6, Some(Family::Ipv6), "{a6} in the dump");
}

/// A dump whose replies never come fails with `Timeout` after the time
/// limit, instead of freezing the poll: here no request is sent, so
/// nothing ever answers sequence number 1.
#[test]
fn a_dump_without_end_times_out() {
    let mut sd = SockDiag::open_with_timeout(std::time::Duration::from_millis(200)).unwrap();
    sd.seq = sd.seq.wrapping_add(1);
    let started = std::time::Instant::now();
    let err = sd
        .receive("test", &mut |_, _| panic!("no reply was asked for"))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            SourceError::Timeout {
                request: "test",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.reason(), crate::source::ErrorReason::Timeout);
    assert!(took >= std::time::Duration::from_millis(190), "{took:?}");
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    // The socket still works for the next dump.
    let mut n = 0;
    sd.dump_unix(UNIX_LISTEN_ONLY, &mut |_| n += 1).unwrap();
}

/// The census asks for bound-only sockets on its own cadence (kernel ≥
/// 6.8; older kernels ignore the bit), not in every dump: the state mask
/// of every state leaves the bit out. The kernel reports them as
/// TCP_CLOSE with a zero peer.
#[test]
fn bound_inactive_is_apart_and_reported_as_close() {
    assert_eq!(TCPF_BOUND_INACTIVE, 1 << 13);
    assert_eq!(TCP_ALL_STATES & TCPF_BOUND_INACTIVE, 0);
    assert_eq!(TCP_ALL_STATES & 1, 0, "bit 0 is no state");
    let mut bound = TIME_WAIT_MSG;
    bound[1] = 7; // TCP_CLOSE
    bound[2] = 0; // no timer
    bound[6..8].fill(0); // peer port 0
    bound[24..40].fill(0); // peer address 0.0.0.0
    let s = decode_inet(&bound).unwrap();
    assert_eq!(s.state, TcpState::Close);
    assert_eq!(s.remote.port(), 0);
    assert_eq!(s.expires_ms, None);
}

/// A listener's reply with `INET_DIAG_SKMEMINFO` (asked with
/// [`EXT_SKMEMINFO`]): `sk_drops` is the ninth `u32`, the cookie the two
/// words of `idiag_cookie`, low first.
#[test]
fn decodes_listener_drops_from_skmeminfo() {
    let mut m = LISTEN6_MSG.to_vec();
    m[44..48].copy_from_slice(&0x0000_0002u32.to_ne_bytes());
    m[48..52].copy_from_slice(&0x0000_0001u32.to_ne_bytes());
    // struct nlattr { u16 nla_len = 4 + 9 * 4, u16 nla_type = 7 }
    m.extend_from_slice(&40u16.to_ne_bytes());
    m.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
    for i in 0..9u32 {
        // rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc,
        // wmem_queued, optmem, backlog, drops = 51
        m.extend_from_slice(&(if i == 8 { 51 } else { 1000 + i }).to_ne_bytes());
    }
    let s = decode_inet(&m).unwrap();
    let q = s.queues.accept().unwrap();
    assert_eq!(
        q.drops,
        Some(SocketDrops {
            cookie: 0x1_0000_0002,
            drops: 51
        })
    );
    // An attribute too short for SK_MEMINFO_DROPS is malformed, not 0.
    let mut short = LISTEN6_MSG.to_vec();
    short.extend_from_slice(&8u16.to_ne_bytes());
    short.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
    short.extend_from_slice(&7u32.to_ne_bytes());
    assert!(decode_inet(&short).is_err());
    // Another socket's attributes are not looked at.
    assert_eq!(
        decode_inet(&TIME_WAIT_MSG).unwrap().queues,
        TcpQueues::Bytes { recv: 0, send: 0 }
    );
}

/// A live listener that never accepts, backlog 1, with non-blocking
/// clients beyond its queue: the SKMEMINFO dump reports its `sk_drops`,
/// which grows past 0 (the dropped SYNs), and the same cookie twice.
#[test]
fn live_listener_drops() {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(1).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.set_nonblocking(true).unwrap();
        let _ = c.connect(&addr.into());
        clients.push(c);
    }
    let mut sd = SockDiag::open().unwrap();
    let read = |sd: &mut SockDiag| {
        let mut got = None;
        sd.dump_tcp(Family::Ipv4, TCP_LISTEN_ONLY, EXT_SKMEMINFO, &mut |s| {
            if s.local == addr {
                got = s.queues.accept().and_then(|q| q.drops);
            }
        })
        .unwrap();
        got.expect("our listener, with SKMEMINFO")
    };
    // The third handshake onwards is dropped (the queue holds limit + 1 =
    // 2); each drop is counted as it happens, so wait for the first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = read(&mut sd);
    let mut now = first;
    while now.drops == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
        now = read(&mut sd);
    }
    assert!(now.drops > 0, "dropped SYNs counted: {now:?}");
    assert_eq!(now.cookie, first.cookie, "the same socket");
    // Without the extension, no drops are decoded.
    let mut plain = None;
    sd.dump_tcp(Family::Ipv4, TCP_LISTEN_ONLY, 0, &mut |s| {
        if s.local == addr {
            plain = s.queues.accept();
        }
    })
    .unwrap();
    assert_eq!(plain.unwrap().drops, None);
    drop(clients);
}
