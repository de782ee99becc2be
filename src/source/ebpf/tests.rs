//! Pure decode tests, then live ones (`#[ignore]`d: they need root; run with
//! `--include-ignored`, where a missing prerequisite fails them). A live
//! test re-executes this binary under `unshare -n` (env [`ROLE`]) so its
//! sockets live in a private network namespace, and loads the program
//! filtered to that namespace: other tests on the host do not disturb it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::decode::{self, DecodeError, KEY_LEN};
use super::*;

// ---------------------------------------------------------------- decode

/// A key as `connects.bpf.c` writes it.
fn key(netns: u32, family: u16, dport: u16, saddr: &[u8], daddr: &[u8], outcome: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.extend_from_slice(&netns.to_ne_bytes()); // netns
    k.extend_from_slice(&family.to_ne_bytes()); // family
    k.extend_from_slice(&dport.to_ne_bytes()); // dport, host order
    let mut a = [0u8; 16];
    a[..saddr.len()].copy_from_slice(saddr);
    k.extend_from_slice(&a); // saddr
    let mut a = [0u8; 16];
    a[..daddr.len()].copy_from_slice(daddr);
    k.extend_from_slice(&a); // daddr
    k.extend_from_slice(&outcome.to_ne_bytes()); // outcome
    k.extend_from_slice(&[0, 0]); // pad
    assert_eq!(k.len(), KEY_LEN);
    k
}

#[test]
fn decodes_ipv4() {
    let k = key(4026531840, 2, 7100, &[127, 0, 0, 1], &[10, 1, 2, 3], 111);
    assert_eq!(
        decode::flow(&k),
        Ok(Flow {
            netns: 4026531840,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            destination: "10.1.2.3:7100".parse().unwrap(),
            outcome: Outcome::Errno(111),
        })
    );
    assert_eq!(decode::netns(&k), 4026531840);
}

#[test]
fn decodes_ipv6() {
    let d: Ipv6Addr = "fd00::1:2".parse().unwrap();
    let k = key(
        7,
        10,
        443,
        &Ipv6Addr::LOCALHOST.octets(),
        &d.octets(),
        0x1000,
    );
    let f = decode::flow(&k).unwrap();
    assert_eq!(f.local_ip, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(f.destination, SocketAddr::new(IpAddr::V6(d), 443));
    assert_eq!(f.outcome, Outcome::Established);
}

#[test]
fn decodes_every_outcome_code() {
    let cases = [
        (0x1000, Outcome::Established),
        (0x1001, Outcome::Aborted),
        (0x1002, Outcome::TimeWait),
        (0x1003, Outcome::AddrNotAvail { bound: true }),
        (99, Outcome::AddrNotAvail { bound: false }),
        (111, Outcome::Errno(111)),
        (110, Outcome::Errno(110)),
        (113, Outcome::Errno(113)),
        (101, Outcome::Errno(101)),
        (1, Outcome::Errno(1)),
        (0xfff, Outcome::Errno(4095)),
    ];
    for (code, want) in cases {
        let k = key(1, 2, 80, &[1, 2, 3, 4], &[5, 6, 7, 8], code);
        assert_eq!(
            decode::flow(&k).map(|f| f.outcome),
            Ok(want),
            "code {code:#x}"
        );
    }
    for bad in [0, 0x1004, 0xffff] {
        let k = key(1, 2, 80, &[1, 2, 3, 4], &[5, 6, 7, 8], bad);
        assert_eq!(decode::flow(&k), Err(DecodeError::Outcome(bad)));
    }
}

#[test]
fn rejects_malformed_keys() {
    let k = key(1, 2, 80, &[1, 2, 3, 4], &[5, 6, 7, 8], 111);
    assert_eq!(decode::flow(&[]), Err(DecodeError::Length(0)));
    assert_eq!(decode::flow(&k[..43]), Err(DecodeError::Length(43)));
    let mut long = k.clone();
    long.push(0);
    assert_eq!(decode::flow(&long), Err(DecodeError::Length(45)));
    for family in [0, 1, 17, 0xffff] {
        let k = key(1, family, 80, &[1, 2, 3, 4], &[5, 6, 7, 8], 111);
        assert_eq!(decode::flow(&k), Err(DecodeError::Family(family)));
    }
    assert_eq!(decode::netns(&[1, 2]), 0);
}

#[test]
fn result_labels() {
    let label = |o: Outcome| o.result_label().map(|c| c.into_owned());
    assert_eq!(label(Outcome::Established).as_deref(), Some("established"));
    assert_eq!(label(Outcome::Aborted).as_deref(), Some("aborted"));
    assert_eq!(label(Outcome::TimeWait), None);
    for bound in [false, true] {
        assert_eq!(
            label(Outcome::AddrNotAvail { bound }).as_deref(),
            Some("eaddrnotavail")
        );
    }
    for (n, name) in [
        (111, "econnrefused"),
        (110, "etimedout"),
        (113, "ehostunreach"),
        (101, "enetunreach"),
        (104, "econnreset"),
        (13, "eacces"),
        (1, "eperm"),
    ] {
        assert_eq!(label(Outcome::Errno(n)).as_deref(), Some(name));
    }
    assert_eq!(label(Outcome::Errno(4000)).as_deref(), Some("errno_4000"));
}

#[test]
fn errno_table_is_sorted() {
    // errno_name() binary-searches it.
    for n in 0..4096 {
        if let Some(name) = decode::errno_name(n) {
            assert!(name.starts_with('e'), "{n} {name}");
        }
    }
    assert_eq!(decode::errno_name(111), Some("econnrefused"));
    assert_eq!(decode::errno_name(2), None);
}

#[test]
fn parses_kernel_releases() {
    assert_eq!(parse_release("6.18.0-rc1"), Some((6, 18)));
    assert_eq!(parse_release("5.10.0-32-amd64"), Some((5, 10)));
    assert_eq!(parse_release("weird"), None);
}

#[test]
fn error_chain_finds_the_errno() {
    let io = std::io::Error::from_raw_os_error(1);
    let e = aya::sys::SyscallError {
        call: "bpf_map_create",
        io_error: io,
    };
    assert_eq!(errno_in_chain(&e), Some(1));
    let c = classify(&e, "creating the maps", Some((6, 1)), false);
    assert!(matches!(c, EbpfError::Permission(_)), "{c:?}");
    let c = classify(&e, "creating the maps", Some((5, 10)), true);
    assert!(matches!(c, EbpfError::Memlock(_)), "{c:?}");
    let c = classify(&e, "creating the maps", Some((5, 10)), false);
    assert!(matches!(c, EbpfError::Permission(_)), "{c:?}");
    assert!(!c.to_string().contains('\n'));
}

// ---------------------------------------------------------------- live

/// Env var naming the role of a re-executed test process.
const ROLE: &str = "SOCKSCOPE_EBPF_TEST_ROLE";

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CAP_BPF, CAP_PERFMON, network namespaces): run it as root \
         with --include-ignored"
    );
}

/// Runs `test` of this binary again with `ROLE=role`, under `wrapper`
/// (e.g. `unshare -n --`), and returns its stdout; panics unless it passed.
fn rerun(test: &str, role: &str, wrapper: &[&str]) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let (prog, pre) = wrapper.split_first().expect("a wrapper");
    let out = Command::new(prog)
        .args(pre)
        .arg(&exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {prog}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} as {role} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    println!("--- {test} as {role} ---\n{stdout}");
    stdout
}

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Inode number of the calling process's network namespace.
fn own_netns() -> u32 {
    let st = rustix::fs::stat("/proc/self/ns/net").expect("stat /proc/self/ns/net");
    st.st_ino as u32
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In a fresh namespace: lo up, a 50-port range, no TIME_WAIT reuse.
fn setup_netns() {
    sh("ip link set lo up");
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40049").unwrap();
    std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0").unwrap();
}

/// Sockets in this namespace in `state` (an `ss` state filter).
fn ss_count(state: &str) -> usize {
    sh(&format!("ss -tanH state {state}")).lines().count()
}

/// Polls `cond` every 5 ms until it holds or `limit` passes.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn load_here(kernel_stats: bool) -> ConnectEvents {
    ConnectEvents::load(&LoadOptions {
        netns: Some(own_netns()),
        max_entries: 1024,
        kernel_stats,
    })
    .unwrap_or_else(|e| panic!("load: {e}"))
}

/// Counts by (destination, outcome), summed over local addresses.
fn by_dest(read: &EventsRead, netns: u32) -> BTreeMap<(SocketAddr, Outcome), u64> {
    let mut m = BTreeMap::new();
    for (f, n) in &read.flows {
        if f.netns == netns {
            *m.entry((f.destination, f.outcome)).or_default() += n;
        }
    }
    m
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn nonblocking_connect(to: SocketAddr) -> (Socket, std::io::Result<()>) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_nonblocking(true).unwrap();
    let r = s.connect(&SockAddr::from(to));
    (s, r)
}

#[test]
#[ignore = "needs root: loads eBPF, makes network namespaces"]
fn live_outcomes_match_what_the_client_saw() {
    const TEST: &str = "source::ebpf::tests::live_outcomes_match_what_the_client_saw";
    if role().is_none() {
        require_root();
        rerun(TEST, "netns", &["unshare", "-n", "--"]);
        return;
    }
    setup_netns();
    let netns = own_netns();
    let mut events = load_here(true);

    let mut expect: BTreeMap<(SocketAddr, Outcome), u64> = BTreeMap::new();
    let mut add = |to: SocketAddr, o: Outcome| *expect.entry((to, o)).or_default() += 1;

    // Fixed ports outside the 50-port range (port 0 would take one of it).
    // The upstream: accepts everything.
    let upstream = TcpListener::bind("127.0.0.1:7100").unwrap();
    let up = upstream.local_addr().unwrap();

    // 50 ports: 50 established, held open.
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..50 {
        clients.push(TcpStream::connect(up).expect("one of the 50 ports"));
        add(up, Outcome::Established);
        servers.push(upstream.accept().unwrap().0);
    }
    // Past the range: 10 blocking + 3 non-blocking EADDRNOTAVAIL.
    for _ in 0..10 {
        let e = TcpStream::connect(up).expect_err("the range is used up");
        assert_eq!(errno(&e), 99, "{e}");
        add(up, Outcome::AddrNotAvail { bound: false });
    }
    for _ in 0..3 {
        let (_s, r) = nonblocking_connect(up);
        let e = r.expect_err("the range is used up");
        assert_eq!(errno(&e), 99, "{e}");
        add(up, Outcome::AddrNotAvail { bound: false });
    }

    // An explicit bind() to a port whose 4-tuple toward `up` is taken.
    let bound: SocketAddr = "127.0.0.1:45000".parse().unwrap();
    let first = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    first.set_reuse_address(true).unwrap();
    first.bind(&bound.into()).unwrap();
    first.connect(&up.into()).expect("the first bound connect");
    add(up, Outcome::Established);
    servers.push(upstream.accept().unwrap().0);
    let second = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    second.set_reuse_address(true).unwrap();
    second.bind(&bound.into()).unwrap();
    let e = second.connect(&up.into()).expect_err("4-tuple taken");
    assert_eq!(errno(&e), 99, "{e}");
    add(up, Outcome::AddrNotAvail { bound: true });
    drop(second);

    // A closed port: 3 refused (ports are shared across destinations).
    let closed: SocketAddr = "127.0.0.1:7101".parse().unwrap();
    for _ in 0..3 {
        let e = TcpStream::connect(closed).expect_err("nothing listens");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        add(closed, Outcome::Errno(111));
    }

    // IPv6: 2 established (held open, never accepted), 1 refused.
    let up6 = TcpListener::bind("[::1]:7103").unwrap();
    let up6_addr = up6.local_addr().unwrap();
    let mut held6 = Vec::new();
    for _ in 0..2 {
        held6.push(TcpStream::connect(up6_addr).unwrap());
        add(up6_addr, Outcome::Established);
    }
    let closed6: SocketAddr = "[::1]:7104".parse().unwrap();
    let e = TcpStream::connect(closed6).expect_err("nothing listens");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    add(closed6, Outcome::Errno(111));

    // Aborted: a listener whose accept queue (backlog 0: holds 1) is full
    // drops SYNs, so non-blocking clients stay in SYN_SENT; then close them.
    let stuck = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    stuck
        .bind(&SockAddr::from(
            "127.0.0.1:7102".parse::<SocketAddr>().unwrap(),
        ))
        .unwrap();
    stuck.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect(stuck_addr).unwrap();
    add(stuck_addr, Outcome::Established);
    let port = stuck_addr.port();
    wait_until(
        "the stuck listener's queue to hold the filler",
        Duration::from_secs(5),
        || {
            sh(&format!("ss -tlnH 'sport = :{port}'"))
                .split_whitespace()
                .nth(1)
                == Some("1")
        },
    );
    let mut connecting = Vec::new();
    for _ in 0..3 {
        let (s, r) = nonblocking_connect(stuck_addr);
        let e = r.expect_err("in progress");
        assert_eq!(e.raw_os_error(), Some(115), "EINPROGRESS: {e}");
        connecting.push(s);
    }
    assert_eq!(ss_count("syn-sent"), 3, "the 3 clients wait in SYN_SENT");
    for s in connecting {
        drop(s);
        add(stuck_addr, Outcome::Aborted);
    }

    // TIME_WAIT: the clients close first, the upstream reads EOF and closes.
    for c in clients.drain(..) {
        c.shutdown(Shutdown::Both).ok();
        drop(c);
    }
    drop(first);
    for mut s in servers.drain(..) {
        let mut buf = [0u8; 16];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "EOF");
        drop(s);
    }
    wait_until(
        "every closing socket to settle",
        Duration::from_secs(10),
        || {
            ss_count("fin-wait-1")
                + ss_count("fin-wait-2")
                + ss_count("last-ack")
                + ss_count("closing")
                == 0
        },
    );
    let time_wait = ss_count("time-wait");

    let read = events.read().expect("read");
    for (f, n) in &read.flows {
        println!("{n:5} {f:?}");
    }
    println!("{:?}", read.stats);
    let mut got = by_dest(&read, netns);
    let tw: u64 = got
        .iter()
        .filter(|((_, o), _)| *o == Outcome::TimeWait)
        .map(|(_, n)| n)
        .sum();
    got.retain(|(_, o), _| *o != Outcome::TimeWait);
    assert_eq!(got, expect);
    assert!(time_wait > 0, "some TIME_WAIT");
    assert_eq!(
        tw, time_wait as u64,
        "time_wait counted = ss state time-wait"
    );
    println!("time_wait {tw} (ss {time_wait}) after 51 client-first closes");
    // Every row is this namespace's (the filter), every event in a row.
    assert!(read.flows.iter().all(|(f, _)| f.netns == netns));
    let sum: u64 = read.flows.iter().map(|(_, n)| n).sum();
    assert_eq!(read.stats.events_total, sum);
    assert_eq!(read.stats.lost_total, 0);
    assert_eq!(read.stats.map_entries, read.flows.len() as u64);
    assert_eq!(read.stats.map_max_entries, 1024);
    assert_eq!(read.stats.programs, 1);
    let (t, runs) = (read.stats.run_time_seconds, read.stats.run_count);
    assert!(
        t.is_some() && runs.is_some_and(|r| r >= sum),
        "{t:?} {runs:?}"
    );
    let v6 = read
        .flows
        .iter()
        .filter(|(f, _)| f.local_ip == Ipv6Addr::LOCALHOST);
    assert_eq!(v6.count(), 2, "two IPv6 rows, local address ::1");
    drop((filler, stuck, held6, up6));
}

/// Role "helper": in its own namespace, 4 established + 2 refused; prints
/// `NETNS=<inum>`.
fn helper_traffic() {
    sh("ip link set lo up");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    let mut keep = Vec::new();
    for _ in 0..4 {
        keep.push(TcpStream::connect(to).unwrap());
    }
    drop(l);
    for _ in 0..2 {
        TcpStream::connect(to).expect_err("closed");
    }
    println!("NETNS={}", own_netns());
}

#[test]
#[ignore = "needs root: loads eBPF, makes network namespaces"]
fn live_netns_filter_and_forget() {
    const TEST: &str = "source::ebpf::tests::live_netns_filter_and_forget";
    match role().as_deref() {
        None => {
            require_root();
            rerun(TEST, "netns", &["unshare", "-n", "--"]);
            return;
        }
        Some("helper") => return helper_traffic(),
        Some(_) => {}
    }
    let mut filtered = load_here(false);
    let mut all = ConnectEvents::load(&LoadOptions::default()).expect("load unfiltered");
    let out = rerun(TEST, "helper", &["unshare", "-n", "--"]);
    // libtest prints "test NAME ... " before the output, on the same line.
    let other: u32 = out
        .split("NETNS=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("helper's NETNS=")
        .parse()
        .unwrap();
    assert_ne!(other, own_netns());

    // The helper's events: only in the unfiltered map.
    let read = all.read().unwrap();
    let counts: BTreeMap<Outcome, u64> = read.flows.iter().filter(|(f, _)| f.netns == other).fold(
        BTreeMap::new(),
        |mut m, (f, n)| {
            *m.entry(f.outcome).or_default() += n;
            m
        },
    );
    assert_eq!(
        counts,
        BTreeMap::from([(Outcome::Established, 4), (Outcome::Errno(111), 2)]),
        "{:?}",
        read.flows
    );
    let mine = filtered.read().unwrap();
    assert_eq!(mine.flows, vec![], "nothing happened in this namespace");
    assert_eq!(mine.stats.events_total, 0);

    // forget(): the helper's namespace went away.
    let rows = read.flows.iter().filter(|(f, _)| f.netns == other).count();
    assert_eq!(all.forget(|ns| ns != other).unwrap(), rows);
    let after = all.read().unwrap();
    assert!(after.flows.iter().all(|(f, _)| f.netns != other));
    assert_eq!(all.forget(|ns| ns != other).unwrap(), 0);
}

#[test]
#[ignore = "needs root (to drop its capabilities): setpriv from util-linux"]
fn live_without_capabilities_is_a_permission_error() {
    const TEST: &str = "source::ebpf::tests::live_without_capabilities_is_a_permission_error";
    if role().is_none() {
        require_root();
        rerun(
            TEST,
            "nocaps",
            &["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"],
        );
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let capeff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(capeff.ends_with("0000000000000000"), "{capeff}");
    match ConnectEvents::load(&LoadOptions::default()) {
        Err(e @ EbpfError::Permission(_)) => println!("{e}"),
        Err(e) => panic!("expected Permission, got {e:?}"),
        Ok(_) => panic!("loaded without capabilities"),
    }
}
