//! The floor for a sock_diag poll: sends the same dump requests as the
//! poller's census (a LISTEN-only inet_diag dump, then every other state,
//! both families in one legacy `TCPDIAG_GETSOCK` dump each; then unix_diag
//! with NAME|RQLEN) and only walks the
//! netlink message headers (`nlmsg_len`, `nlmsg_type`), decoding nothing.
//! Used by `bench/poll.sh`.
//!
//!     cargo run --release --example netlink_walk -- [--iterations N] [--buf BYTES]
//!         [--unix-show MASK] [--per-family] [--listeners-only] [--bound-inactive] [--interval-ms MS]
//!
//! Options: `--unix-show MASK` (the `UDIAG_SHOW_*` bits of the unix_diag
//! request; the poller asks NAME|RQLEN = 17, it asked 29 =
//! NAME|PEER|ICONS|RQLEN before), `--per-family` (one
//! `SOCK_DIAG_BY_FAMILY` dump per family instead of one legacy dump for
//! both: the poller's fallback), `--listeners-only` (only the LISTEN-only
//! dumps: TCP per family, and unix_diag with the TCP_LISTEN state bit, as
//! the agent's polls between censuses do), `--interval-ms MS` (sleep between iterations: at the agent's
//! 1 s cadence the kernel's socket structures are no longer in the CPU
//! caches, which back-to-back iterations find them in).
//!
//! Prints one line per iteration and a summary line with the medians:
//! `median_ms=.. tcp_ms=.. unix_ms=.. cpu_ms=.. messages=.. recvs=..`
//! (`cpu_ms`: the thread's CPU time, user + kernel, which other load on
//! the machine does not inflate the way it does wall time).

use std::time::Instant;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkHeader, NetlinkMessage,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    unix::{ShowFlags, StateFlags as UnixStateFlags, UnixRequest},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// The census's states: every TCP state, as `src/source/sock_diag.rs`.
const TCP_ALL_STATES: u32 = 0x1ffe;
/// `TCPF_BOUND_INACTIVE` (1 << 13, bound-only sockets, kernel ≥ 6.8; it
/// makes the kernel walk its bind hash too, and an older kernel ignores the
/// bit): added with `--bound-inactive`, as the census does on its own
/// cadence.
const TCPF_BOUND_INACTIVE: u32 = 1 << 13;
const TCP_LISTEN_ONLY: u32 = 1 << 10;

#[derive(Default, Clone, Copy)]
struct Walk {
    messages: u64,
    recvs: u64,
}

fn dump(sock: &mut Socket, buf: &mut [u8], seq: u32, req: SockDiagMessage, w: &mut Walk) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, req.into());
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    sock.send(&out, 0).expect("send");
    walk_replies(sock, buf, w);
}

fn walk_replies(sock: &mut Socket, buf: &mut [u8], w: &mut Walk) {
    loop {
        let n = sock.recv(&mut &mut buf[..], 0).expect("recv");
        w.recvs += 1;
        let mut off = 0;
        // struct nlmsghdr: u32 nlmsg_len, u16 nlmsg_type, ...
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if kind == NLMSG_DONE || kind == NLMSG_ERROR {
                return;
            }
            w.messages += 1;
            if len < 16 {
                panic!("bad nlmsg_len {len}");
            }
            off += (len + 3) & !3;
        }
    }
}

/// The legacy `TCPDIAG_GETSOCK` request (`struct inet_diag_req`), which
/// the kernel serves with `sdiag_family = AF_UNSPEC`: one walk of the
/// established hash for both families (`inet_diag_dump_compat()`).
fn dump_compat(sock: &mut Socket, buf: &mut [u8], seq: u32, states: u32, w: &mut Walk) {
    let mut req = Vec::with_capacity(76);
    req.extend_from_slice(&76u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&18u16.to_ne_bytes()); // TCPDIAG_GETSOCK
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[AF_INET, 0, 0, 0]); // family (ignored), src_len, dst_len, ext
    req.extend_from_slice(&[0u8; 40]); // sockid: ports, addresses, if
    req.extend_from_slice(&[0xff; 8]); // cookie: INET_DIAG_NOCOOKIE
    req.extend_from_slice(&states.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
    sock.send(&req, 0).expect("send");
    walk_replies(sock, buf, w);
}

fn inet(family: u8, states: u32) -> SockDiagMessage {
    SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::from_bits_retain(states),
        socket_id: if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        },
    })
}

fn unix(show: ShowFlags, states: u32) -> SockDiagMessage {
    SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: UnixStateFlags::from_bits_retain(states),
        inode: 0,
        show_flags: show,
        cookie: [0xff; 8],
    })
}

/// CPU time of this thread so far (user + kernel), in ms.
/// `CLOCK_THREAD_CPUTIME_ID` accounts the running slice up to now; the
/// first field of `/proc/thread-self/schedstat` is only brought up to date
/// at scheduler events, and a dump never sleeps.
fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut iterations = 10usize;
    let mut buf_len = 64 * 1024;
    let mut per_family = false;
    let mut listeners_only = false;
    let mut bound_inactive = 0;
    let mut interval_ms = 0u64;
    let mut unix_show = ShowFlags::NAME | ShowFlags::RQLEN; // as the poller asks
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> u64 { args.next().and_then(|v| v.parse().ok()).expect("a number") };
        match a.as_str() {
            "--iterations" => iterations = value() as usize,
            "--buf" => buf_len = value() as usize,
            "--per-family" => per_family = true,
            "--listeners-only" => listeners_only = true,
            "--bound-inactive" => bound_inactive = TCPF_BOUND_INACTIVE,
            "--interval-ms" => interval_ms = value(),
            "--unix-show" => unix_show = ShowFlags::from_bits_retain(value() as u32),
            _ => {
                eprintln!(
                    "usage: netlink_walk [--iterations N] [--buf BYTES] [--unix-show UDIAG_SHOW_MASK] [--per-family] [--listeners-only] [--bound-inactive] [--interval-ms MS]"
                );
                std::process::exit(2);
            }
        }
    }
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).expect("socket");
    sock.bind_auto().expect("bind");
    sock.connect(&SocketAddr::new(0, 0)).expect("connect");
    let mut buf = vec![0u8; buf_len];
    let mut seq = 0;
    let (mut all, mut tcp, mut unx, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = Walk::default();
    for i in 0..iterations {
        if i > 0 && interval_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(interval_ms));
        }
        let mut w = Walk::default();
        let c0 = cpu_ms();
        let t0 = Instant::now();
        let rest = (TCP_ALL_STATES & !TCP_LISTEN_ONLY) | bound_inactive;
        let tcp_dumps: &[u32] = if listeners_only {
            &[TCP_LISTEN_ONLY]
        } else {
            &[TCP_LISTEN_ONLY, rest]
        };
        if !per_family && !listeners_only {
            for &states in tcp_dumps {
                seq += 1;
                dump_compat(&mut sock, &mut buf, seq, states, &mut w);
            }
        } else {
            for family in [AF_INET, AF_INET6] {
                for &states in tcp_dumps {
                    seq += 1;
                    dump(&mut sock, &mut buf, seq, inet(family, states), &mut w);
                }
            }
        }
        let t1 = Instant::now();
        seq += 1;
        let unix_states = if listeners_only {
            TCP_LISTEN_ONLY
        } else {
            u32::MAX
        };
        dump(
            &mut sock,
            &mut buf,
            seq,
            unix(unix_show.clone(), unix_states),
            &mut w,
        );
        let t2 = Instant::now();
        let c = cpu_ms() - c0;
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        println!(
            "iteration={i} total_ms={:.3} tcp_ms={:.3} unix_ms={:.3} cpu_ms={c:.3} messages={} recvs={}",
            ms(t0, t2),
            ms(t0, t1),
            ms(t1, t2),
            w.messages,
            w.recvs
        );
        cpu.push(c);
        all.push(ms(t0, t2));
        tcp.push(ms(t0, t1));
        unx.push(ms(t1, t2));
        last = w;
    }
    println!(
        "median_ms={:.3} tcp_ms={:.3} unix_ms={:.3} cpu_ms={:.3} messages={} recvs={} buf={}",
        median(&mut all),
        median(&mut tcp),
        median(&mut unx),
        median(&mut cpu),
        last.messages,
        last.recvs,
        buf_len
    );
}
