//! Per-socket costs of the poller's user-space work, without the kernel:
//! decoding inet_diag and unix_diag messages, parsing `/proc/net/tcp` and
//! `/proc/net/unix`, classifying sockets (the collectors' `observe()`),
//! and the ephemeral-port model. Reported per socket
//! (`Throughput::Elements`).
//!
//!     cargo bench --bench poller
//!     cargo bench --bench poller -- inet_diag     # one group
//!
//! The inputs mirror a 35k-socket proxy host (30k TIME_WAIT + 5k
//! ESTABLISHED toward 32 loopback destinations, a few listeners) and 10k
//! UNIX sockets. Netlink messages are laid out as the kernel sends them to
//! a reader with `CAP_NET_ADMIN` (kernel 6.18, x86_64): TIME_WAIT 96 bytes
//! (`inet_diag_msg` + `INET_DIAG_MARK`), full sockets 124 bytes (+
//! `SHUTDOWN`, `CGROUP_ID`, `SOCKOPT`), packed into 32 KiB datagrams like
//! `netlink_dump()` does. The procfs inputs are the kernel 6.18 fixture
//! lines (`tests/fixtures/kernel-6.18/`) repeated.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use sockscope::collector::ephemeral_ports::{self, EphemeralPorts, PortModel};
use sockscope::collector::listen_queue::{TcpListeners, UnixListeners};
use sockscope::collector::tcp_states::TcpStates;
use sockscope::collector::unix_states::UnixStates;
use sockscope::model::{Family, PortRange, TcpQueues, TcpSocket, TcpState};
use sockscope::source::procfs;
use sockscope::source::sock_diag::{Frame, decode_inet, decode_unix, walk_frames};
use sockscope::source::sysctl::Sysctls;

const TCP_SOCKETS: usize = 35_000;
const UNIX_SOCKETS: usize = 10_000;
const SEQ: u32 = 7;
/// `SOCK_DIAG_BY_FAMILY`
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// What `netlink_dump()` puts in one datagram at most (32 KiB skb).
const DATAGRAM: usize = 32 * 1024;

/// One `nlattr` (type, payload), padded to 4 bytes.
fn nla(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A `SOCK_DIAG_BY_FAMILY` message: `nlmsghdr` + payload.
fn framed(payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut v = Vec::with_capacity(len.next_multiple_of(4));
    v.extend_from_slice(&(len as u32).to_ne_bytes());
    v.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    v.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    v.extend_from_slice(&SEQ.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(len.next_multiple_of(4), 0);
    v
}

/// `struct inet_diag_msg` (include/uapi/linux/inet_diag.h) for an IPv4
/// socket, plus the attributes the kernel adds without extensions.
fn inet_msg(
    state: u8,
    local: SocketAddr,
    remote: SocketAddr,
    expires: u32,
    rq: u32,
    wq: u32,
) -> Vec<u8> {
    let ip = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let mut m = vec![2, state, if state == 6 { 3 } else { 0 }, 0];
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&remote.port().to_be_bytes());
    m.extend_from_slice(&ip(local));
    m.extend_from_slice(&[0; 12]);
    m.extend_from_slice(&ip(remote));
    m.extend_from_slice(&[0; 12]);
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    m.extend_from_slice(&0x1122_3344_5566_7788u64.to_ne_bytes()); // idiag_cookie
    m.extend_from_slice(&expires.to_ne_bytes());
    m.extend_from_slice(&rq.to_ne_bytes());
    m.extend_from_slice(&wq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_uid
    m.extend_from_slice(&(if state == 6 { 0u32 } else { 12345 }).to_ne_bytes());
    if state == 6 {
        nla(&mut m, 15, &0u32.to_ne_bytes()); // INET_DIAG_MARK
    } else {
        nla(&mut m, 8, &[0]); // INET_DIAG_SHUTDOWN
        nla(&mut m, 15, &0u32.to_ne_bytes()); // INET_DIAG_MARK
        nla(&mut m, 21, &1u64.to_ne_bytes()); // INET_DIAG_CGROUP_ID
        nla(&mut m, 22, &[0, 0]); // INET_DIAG_SOCKOPT
    }
    m
}

/// The sockets of the 35k world, in a scrambled (hash-table-like) order
/// after the listeners.
fn tcp_world() -> Vec<(u8, SocketAddr, SocketAddr, u32, u32, u32)> {
    let ep = |ip: u8, port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, ip)), port);
    let mut out = Vec::with_capacity(TCP_SOCKETS);
    for p in 0..8 {
        out.push((10, ep(0, 7100 + p), ep(0, 0), 0, 0, 4096));
    }
    let tw = TCP_SOCKETS * 6 / 7;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..TCP_SOCKETS - out.len() {
        let r = next();
        let dst = ep(1 + (r % 4) as u8, 7100 + ((r >> 8) % 8) as u16);
        let port = 1024 + (r >> 16) as u16 % 64000;
        if i < tw {
            out.push((6, ep(1, port), dst, 1 + (r >> 32) as u32 % 60_000, 0, 0));
        } else if i % 2 == 0 {
            out.push((1, ep(1, port), dst, 0, 0, 0)); // client side
        } else {
            out.push((1, dst, ep(1, port), 0, 0, 0)); // server side
        }
    }
    // Listeners first, the rest shuffled.
    let mut rest = out.split_off(8);
    for i in (1..rest.len()).rev() {
        rest.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    out.extend(rest);
    out
}

/// Packs framed messages into datagrams of at most [`DATAGRAM`] bytes.
fn datagrams(msgs: impl Iterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::with_capacity(DATAGRAM)];
    for m in msgs {
        let m = framed(&m);
        if out.last().unwrap().len() + m.len() > DATAGRAM {
            out.push(Vec::with_capacity(DATAGRAM));
        }
        out.last_mut().unwrap().extend_from_slice(&m);
    }
    out
}

fn inet_dump() -> Vec<Vec<u8>> {
    datagrams(
        tcp_world()
            .into_iter()
            .map(|(st, l, r, exp, rq, wq)| inet_msg(st, l, r, exp, rq, wq)),
    )
}

/// `struct unix_diag_msg` + the attributes of the poller's
/// `UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN` dump (the kernel adds
/// `UNIX_DIAG_SHUTDOWN` to every message).
fn unix_msg(kind: u8, state: u8, ino: u32, name: Option<&[u8]>, listener: bool) -> Vec<u8> {
    let mut m = vec![1, kind, state, 0];
    m.extend_from_slice(&ino.to_ne_bytes());
    m.extend_from_slice(&[0xa0, 2, 0, 0, 0, 0, 0, 0]);
    if let Some(n) = name {
        nla(&mut m, 0, n); // UNIX_DIAG_NAME
    }
    let mut rq = 0u32.to_ne_bytes().to_vec();
    rq.extend_from_slice(&(if listener { 4096u32 } else { 0 }).to_ne_bytes());
    nla(&mut m, 4, &rq); // UNIX_DIAG_RQLEN
    nla(&mut m, 6, &[0]); // UNIX_DIAG_SHUTDOWN
    m
}

fn unix_dump() -> Vec<Vec<u8>> {
    let path = b"/tmp/sockscope-bench-x1y2z3/app.sock\0";
    let msgs = (0..UNIX_SOCKETS as u32).map(|i| match i {
        0 => unix_msg(1, 10, i, Some(path), true),
        1 => unix_msg(1, 10, i, Some(b"\0sockscope-bench"), true),
        // accepted server sides carry the listener's name
        i if i < 2 + 1000 && i % 2 == 0 => unix_msg(1, 1, i, Some(path), false),
        i => unix_msg(1, 1, i, None, false),
    });
    datagrams(msgs)
}

fn sysctls() -> Sysctls {
    Sysctls {
        somaxconn: 4096,
        port_range: PortRange::new(1024, 65535).unwrap(),
        reserved_ports: vec![],
        tcp_tw_reuse: 2,
        tcp_tw_reuse_delay_ms: Some(1000),
        tcp_timestamps: 1,
        tcp_max_tw_buckets: 262_144,
    }
}

/// The decoded world, for the classification benches.
fn tcp_sockets() -> Vec<TcpSocket> {
    let mut out = Vec::with_capacity(TCP_SOCKETS);
    for d in inet_dump() {
        walk_frames(&d, SEQ, |f| {
            if let Frame::Socket(p) = f {
                out.push(decode_inet(p).expect("valid message"));
            }
        })
        .expect("valid frames");
    }
    assert_eq!(out.len(), TCP_SOCKETS);
    out
}

/// Replicates the data lines of a fixture (after its header) to `n` lines.
fn replicate(fixture: &[u8], n: usize) -> Vec<u8> {
    let text = std::str::from_utf8(fixture).expect("fixture is text");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let data: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let mut out = format!("{header}\n").into_bytes();
    for line in data.iter().cycle().take(n) {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

fn bench_netlink(c: &mut Criterion) {
    let inet = inet_dump();
    let mut g = c.benchmark_group("inet_diag");
    g.throughput(Throughput::Elements(TCP_SOCKETS as u64));
    g.bench_function("walk_frames", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in &inet {
                walk_frames(d, SEQ, |f| n += matches!(f, Frame::Socket(_)) as usize).unwrap();
            }
            black_box(n)
        })
    });
    g.bench_function("walk_and_decode", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for d in &inet {
                walk_frames(d, SEQ, |f| {
                    if let Frame::Socket(p) = f {
                        n += u64::from(decode_inet(p).unwrap().local.port()) + 1;
                    }
                })
                .unwrap();
            }
            black_box(n)
        })
    });
    g.finish();

    let unix = unix_dump();
    let mut g = c.benchmark_group("unix_diag");
    g.throughput(Throughput::Elements(UNIX_SOCKETS as u64));
    g.bench_function("walk_and_decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in &unix {
                walk_frames(d, SEQ, |f| {
                    if let Frame::Socket(p) = f {
                        n += decode_unix(p).unwrap().name.is_some() as usize;
                    }
                })
                .unwrap();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn bench_procfs(c: &mut Criterion) {
    let tcp = replicate(
        include_bytes!("../tests/fixtures/kernel-6.18/tcp"),
        TCP_SOCKETS,
    );
    let tcp6 = replicate(
        include_bytes!("../tests/fixtures/kernel-6.18/tcp6"),
        TCP_SOCKETS,
    );
    let unix = replicate(
        include_bytes!("../tests/fixtures/kernel-6.18/unix"),
        UNIX_SOCKETS,
    );
    let mut g = c.benchmark_group("procfs");
    g.throughput(Throughput::Elements(TCP_SOCKETS as u64));
    g.bench_function("parse_tcp", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let st = procfs::parse_tcp(Family::Ipv4, &tcp[..], &mut |s| {
                n += u64::from(s.local.port())
            })
            .unwrap();
            black_box((n, st))
        })
    });
    g.bench_function("parse_tcp6", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let st = procfs::parse_tcp(Family::Ipv6, &tcp6[..], &mut |s| {
                n += u64::from(s.local.port())
            })
            .unwrap();
            black_box((n, st))
        })
    });
    g.throughput(Throughput::Elements(UNIX_SOCKETS as u64));
    g.bench_function("parse_unix", |b| {
        b.iter(|| {
            let mut n = 0usize;
            let st =
                procfs::parse_unix(&unix[..], &mut |s| n += s.name.is_some() as usize).unwrap();
            black_box((n, st))
        })
    });
    g.finish();
}

fn bench_classify(c: &mut Criterion) {
    let socks = tcp_sockets();
    let model = PortModel::new(&sysctls());
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(TCP_SOCKETS as u64));
    g.bench_function("tcp_states", |b| {
        b.iter(|| {
            let mut st = TcpStates::default();
            for s in &socks {
                st.observe(s);
            }
            black_box(st)
        })
    });
    g.bench_function("tcp_listeners", |b| {
        b.iter(|| {
            let mut l = TcpListeners::default();
            for s in &socks {
                l.observe(s);
            }
            black_box(l)
        })
    });
    let mut listeners = TcpListeners::default();
    for s in &socks {
        listeners.observe(s);
    }
    g.bench_function("ephemeral_observe", |b| {
        b.iter(|| {
            let mut e = EphemeralPorts::default();
            for s in &socks {
                e.observe(&model, &listeners.ports, s);
            }
            black_box(e)
        })
    });
    g.bench_function("all_tcp", |b| {
        b.iter(|| {
            let (mut st, mut l, mut e) = (
                TcpStates::default(),
                TcpListeners::default(),
                EphemeralPorts::default(),
            );
            for s in &socks {
                st.observe(s);
                l.observe(s);
                e.observe(&model, &l.ports, s);
            }
            black_box((st, l, e))
        })
    });
    // The end-to-end user-space cost of one inet_diag poll: frames,
    // decode, every analysis.
    let inet = inet_dump();
    g.bench_function("decode_and_classify_tcp", |b| {
        b.iter(|| {
            let (mut st, mut l, mut e) = (
                TcpStates::default(),
                TcpListeners::default(),
                EphemeralPorts::default(),
            );
            for d in &inet {
                walk_frames(d, SEQ, |f| {
                    if let Frame::Socket(p) = f {
                        let s = decode_inet(p).unwrap();
                        st.observe(&s);
                        l.observe(&s);
                        e.observe(&model, &l.ports, &s);
                    }
                })
                .unwrap();
            }
            black_box((st, l, e))
        })
    });

    let unix = unix_dump();
    let mut usocks = Vec::with_capacity(UNIX_SOCKETS);
    for d in &unix {
        walk_frames(d, SEQ, |f| {
            if let Frame::Socket(p) = f {
                usocks.push(decode_unix(p).unwrap());
            }
        })
        .unwrap();
    }
    g.throughput(Throughput::Elements(UNIX_SOCKETS as u64));
    g.bench_function("unix", |b| {
        b.iter(|| {
            let (mut st, mut l) = (UnixStates::default(), UnixListeners::default());
            for s in &usocks {
                st.observe(s);
                l.observe(s);
            }
            black_box((st, l))
        })
    });
    g.bench_function("decode_and_classify_unix", |b| {
        b.iter(|| {
            let (mut st, mut l) = (UnixStates::default(), UnixListeners::default());
            for d in &unix {
                walk_frames(d, SEQ, |f| {
                    if let Frame::Socket(p) = f {
                        let s = decode_unix(p).unwrap();
                        st.observe(&s);
                        l.observe(&s);
                    }
                })
                .unwrap();
            }
            black_box((st, l))
        })
    });
    g.finish();
}

fn bench_ephemeral(c: &mut Criterion) {
    let model = PortModel::new(&sysctls());
    let mut g = c.benchmark_group("ephemeral_model");
    // TIME_WAIT sockets only: the reuse test runs for each.
    let tw: Vec<TcpSocket> = tcp_sockets()
        .into_iter()
        .filter(|s| s.state == TcpState::TimeWait)
        .collect();
    g.throughput(Throughput::Elements(tw.len() as u64));
    g.bench_function("tw_reusable", |b| {
        b.iter(|| tw.iter().filter(|s| model.tw_reusable(s)).count())
    });
    // The report over many pools: 10k destinations, one socket each.
    let listening = TcpListeners::default();
    let mut e = EphemeralPorts::default();
    let pools = 10_000u32;
    for i in 0..pools {
        let s = TcpSocket {
            family: Family::Ipv4,
            state: TcpState::Established,
            local: SocketAddr::new(Ipv4Addr::new(10, 255, 0, 1).into(), 40000),
            remote: SocketAddr::new(Ipv4Addr::from(0x0a00_0000 | i).into(), 80),
            queues: TcpQueues::Bytes { recv: 0, send: 0 },
            expires_ms: None,
        };
        e.observe(&model, &listening.ports, &s);
        // And one TIME_WAIT socket per pool, for the forecast.
        let tw = TcpSocket {
            state: TcpState::TimeWait,
            local: SocketAddr::new(Ipv4Addr::new(10, 255, 0, 1).into(), 40001),
            expires_ms: Some(30_000 + i % 30_000),
            ..s
        };
        e.observe(&model, &listening.ports, &tw);
    }
    g.throughput(Throughput::Elements(u64::from(pools)));
    let mut entries = ephemeral_ports::PoolEntries::default();
    g.bench_function("report_10k_pools", |b| {
        b.iter(|| {
            black_box(ephemeral_ports::report(
                &model,
                &listening.ports,
                &e,
                20,
                &mut entries,
            ))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_netlink,
    bench_procfs,
    bench_classify,
    bench_ephemeral
);
criterion_main!(benches);
