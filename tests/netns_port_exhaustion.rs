//! Ephemeral-port exhaustion in a private network namespace with a
//! 100-port range (`ip_local_port_range` = 40000 40099): the agent's
//! `sockscope_ephemeral_ports_*` figures against `ss` and against what
//! `connect()` actually does, with `tcp_tw_reuse` = 0 and = 2, with
//! bound-only sockets, an odd-sized range, and per-socket ranges
//! (`IP_LOCAL_PORT_RANGE`, whose handling differs by kernel).
//!
//! Needs root (`unshare -n`) and `ss`; marked `#[ignore]`: a plain `cargo test`
//! reports it ignored, `./scripts/test` runs it (`common/prereq.rs`).

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::agent::{AGENT_ADDR, Agent};
use common::netns::{run_in_netns, setup_port_range_netns};
use common::scrape::{Scraper, measure};
use common::truth::{assert_sysctls, ss_tcp};
use common::wait::{now_unix, scaled, wait_for};

const SERVER: &str = "127.0.0.1:7100";
const RANGE: (u16, u16) = (40000, 40099);
const RANGE_SIZE: u64 = 100;
/// A census on every poll, so that each measurement costs one poll and
/// not a census interval (its duration over a 1 % CPU budget: seconds
/// under an emulated CPU), and the range fills well within TIME_WAIT's
/// 60 s. The census schedule has its own test (netns_census_schedule).
/// And a read-header timeout longer than any test: each test scrapes over
/// one keep-alive connection ([`Scraper`]), which the agent closes once it
/// has been idle for `--web.read-header-timeout` (10 s by default), and
/// under an emulated CPU filling the range between two scrapes takes
/// longer than that (bound_only on 5.10 under TCG: the scrape after 89
/// connects found the connection closed).
const AGENT_FLAGS: &[&str] = &[
    "--census.cpu-budget-ratio",
    "1",
    "--web.read-header-timeout",
    "1h",
];

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_port_exhaustion_tw_reuse_0() {
    run_in_netns("netns_port_exhaustion_tw_reuse_0", tw_reuse_0);
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_port_exhaustion_tw_reuse_2() {
    run_in_netns("netns_port_exhaustion_tw_reuse_2", tw_reuse_2);
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_port_exhaustion_bound_only() {
    run_in_netns("netns_port_exhaustion_bound_only", bound_only);
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_port_exhaustion_odd_range() {
    run_in_netns("netns_port_exhaustion_odd_range", odd_range);
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_port_exhaustion_socket_range() {
    run_in_netns("netns_port_exhaustion_socket_range", socket_range);
}

/// Sysctls of the tests: a 100-port range, `tcp_tw_reuse` = `tw_reuse`
/// and tcp_rfc1337=1 (see [`setup_port_range_netns`]).
fn setup(tw_reuse: &str) {
    assert_eq!(setup_port_range_netns("40000 40099", tw_reuse), RANGE_SIZE);
}

/// A server on 127.0.0.1:7100 that accepts, reads to EOF, closes, and
/// reports each close on the channel (so the client's socket is then in
/// TIME_WAIT: the client closed first).
fn server() -> mpsc::Receiver<()> {
    let listener = TcpListener::bind(SERVER).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            while s.read(&mut buf).unwrap_or(0) > 0 {}
            drop(s);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// The client's sockets toward the server, per `ss`: (state, local port).
#[derive(Debug, PartialEq)]
struct PoolTruth {
    rows: Vec<(String, String)>,
}

impl PoolTruth {
    fn read() -> PoolTruth {
        let mut rows: Vec<(String, String)> = ss_tcp(&["-tan", "-4"])
            .into_iter()
            .filter(|r| r.peer == SERVER)
            .map(|r| (r.state, r.local))
            .collect();
        rows.sort();
        PoolTruth { rows }
    }

    fn count(&self, state: &str) -> u64 {
        self.rows.iter().filter(|(s, _)| s == state).count() as u64
    }

    /// Every client socket toward the server is in TIME_WAIT and there are
    /// `n` of them.
    fn wait_time_wait(n: u64) -> PoolTruth {
        wait_for(
            &format!("{n} TIME_WAIT toward {SERVER}"),
            Duration::from_secs(5),
            || {
                let t = PoolTruth::read();
                if t.count("TIME-WAIT") == n && t.rows.len() as u64 == n {
                    Ok(t)
                } else {
                    Err(format!("{:?}", t.rows))
                }
            },
        )
    }
}

fn pool_labels() -> [(&'static str, &'static str); 2] {
    [("local_ip", "127.0.0.1"), ("destination", SERVER)]
}

/// One connection that the client closes first; returns its local port
/// once the server has closed too.
/// Whole seconds of `CLOCK_MONOTONIC`: the clock of the kernel's
/// `ktime_get_seconds()`.
fn monotonic_seconds() -> i64 {
    rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_sec
}

fn connect_close(closed: &mpsc::Receiver<()>) -> std::io::Result<u16> {
    let s = TcpStream::connect(SERVER)?;
    let port = s.local_addr().unwrap().port();
    drop(s);
    closed
        .recv_timeout(scaled(Duration::from_secs(5)))
        .expect("the server did not close within 5 s");
    Ok(port)
}

fn in_range(p: u16) -> bool {
    (RANGE.0..=RANGE.1).contains(&p)
}

fn tw_reuse_0() {
    let started = Instant::now();
    setup("0");
    let mut agent = Agent::spawn(AGENT_FLAGS);
    // The scrape connection takes a port of the same range (toward
    // :9977) BEFORE the range is filled; ports are shared across
    // destinations, so it does not reduce the pool toward :7100.
    let mut scraper = Scraper::connect(&mut agent);
    assert!(
        in_range(scraper.local.port()),
        "scrape port {}",
        scraper.local
    );
    let closed = server();

    // Not scaled: past 60 s the first TIME_WAIT sockets expire. On a slow
    // machine (an emulated VM) measure every 25 connections, not 10, so
    // that the range fills well before.
    let deadline = Instant::now() + Duration::from_secs(50);
    let measure_every = if scaled(Duration::from_secs(1)) > Duration::from_secs(1) {
        25
    } else {
        10
    };
    let mut ok = 0u64;
    let mut attempts = 0;
    let mut ports = BTreeSet::new();
    let mut seen = Vec::new();
    let err = loop {
        assert!(
            attempts < 1000 && Instant::now() < deadline,
            "no EADDRNOTAVAIL after {attempts} attempts / {:?} ({ok} connects succeeded)",
            started.elapsed()
        );
        attempts += 1;
        match connect_close(&closed) {
            Ok(port) => {
                assert!(in_range(port), "local port {port} outside the range");
                ports.insert(port);
                ok += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => break e,
            Err(e) => panic!("connect #{attempts}: unexpected error {e}"),
        }
        if ok.is_multiple_of(measure_every) {
            PoolTruth::wait_time_wait(ok);
            let (g, m) = measure(&mut scraper, PoolTruth::read);
            let avail = m.value("sockscope_ephemeral_ports_available", &pool_labels());
            let expected = RANGE_SIZE - (g.count("TIME-WAIT") + g.count("ESTAB"));
            assert_eq!(avail, expected as f64, "available after {ok} connections");
            assert_eq!(
                m.value(
                    "sockscope_ephemeral_ports_time_wait_reusable",
                    &pool_labels()
                ),
                0.0,
                "tcp_tw_reuse=0 never reuses"
            );
            if let Some(&(_, prev)) = seen.last() {
                assert!(avail <= prev, "available went up: {prev} -> {avail}");
            }
            seen.push((ok, avail));
        }
    };
    println!(
        "connect #{attempts} failed: {err} after {ok} successes ({:.2?})",
        started.elapsed()
    );
    println!("available along the way (connections, available): {seen:?}");
    assert_eq!(
        ok, RANGE_SIZE,
        "exactly range-size connects succeed with tcp_tw_reuse=0"
    );
    assert_eq!(
        ports.len() as u64,
        RANGE_SIZE,
        "every port of the range used once"
    );
    assert!(
        ports.contains(&scraper.local.port()),
        "the scrape connection's port was shared"
    );

    let (g, m) = measure(&mut scraper, PoolTruth::read);
    assert_eq!(g.count("TIME-WAIT"), RANGE_SIZE);
    assert_eq!(
        m.value("sockscope_ephemeral_ports_available", &pool_labels()),
        0.0
    );
    assert_eq!(
        m.value("sockscope_ephemeral_ports_usage_ratio_max", &[]),
        1.0
    );
    let used = |st| {
        let [s, d] = pool_labels();
        m.value("sockscope_ephemeral_ports_used", &[s, d, ("state", st)])
    };
    assert_eq!(used("time_wait"), RANGE_SIZE as f64);
    assert_eq!(used("established"), 0.0);
    // The scrape connection's own pool still has room.
    let scrape_pool = [("local_ip", "127.0.0.1"), ("destination", AGENT_ADDR)];
    assert_eq!(
        m.value("sockscope_ephemeral_ports_available", &scrape_pool),
        (RANGE_SIZE - 1) as f64
    );
    assert_sysctls(&m);
    assert_eq!(
        m.value("sockscope_ephemeral_ports_limit", &[]),
        RANGE_SIZE as f64
    );
    agent.assert_running();
    println!("total {:.2?}", started.elapsed());
}

fn tw_reuse_2() {
    let started = Instant::now();
    setup("2");
    let mut agent = Agent::spawn(AGENT_FLAGS);
    let mut scraper = Scraper::connect(&mut agent);
    let closed = server();

    // Fill the range with TIME_WAIT toward :7100. If the loop outlived the
    // reuse delay, connect() may take over an old TIME_WAIT port: go on
    // until every port holds one (one TIME_WAIT per port toward one
    // destination).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut created: std::collections::BTreeMap<u16, f64> = Default::default();
    let mut attempts = 0;
    let mono_before = monotonic_seconds();
    while (created.len() as u64) < RANGE_SIZE {
        assert!(
            attempts < 1000 && Instant::now() < deadline,
            "could not fill the range"
        );
        attempts += 1;
        let port = connect_close(&closed).unwrap_or_else(|e| panic!("connect #{attempts}: {e}"));
        assert!(in_range(port));
        created.insert(port, now_unix());
    }
    let first = created.values().copied().fold(f64::INFINITY, f64::min);
    let last = created.values().copied().fold(0.0, f64::max);
    println!(
        "{} TIME_WAIT made with {attempts} connects in {:.0} ms",
        created.len(),
        (last - first) * 1000.0
    );
    PoolTruth::wait_time_wait(RANGE_SIZE);

    // Before the delay: the kernel refuses -- checked only while that holds.
    // Since 6.14 (tcp_tw_reuse_delay) while every TIME_WAIT is younger than
    // its 1000 ms (`tw_entry_stamp`, ms); before, `tcp_twsk_unique()` lets a
    // TIME_WAIT go once `ktime_get_seconds()` has passed the second of its
    // last timestamp (`tw_ts_recent_stamp`): anywhere from 0 to 1 s, so
    // only while the monotonic second is still the one the first was made in.
    let age_first = now_unix() - first;
    let delay_sysctl = std::path::Path::new("/proc/sys/net/ipv4/tcp_tw_reuse_delay").exists();
    let all_young = if delay_sysctl {
        age_first < 0.8
    } else {
        monotonic_seconds() == mono_before
    };
    if all_young {
        let e =
            TcpStream::connect(SERVER).expect_err("connect() with a range full of young TIME_WAIT");
        assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
        println!(
            "connect() at oldest TIME_WAIT age {:.0} ms: {e}",
            age_first * 1000.0
        );
    } else {
        println!(
            "NOTE: oldest TIME_WAIT already {:.0} ms old (or, before 6.14, the second \
             changed); early connect() probe skipped",
            age_first * 1000.0
        );
    }

    // The agent right after: young TIME_WAIT are not reusable, old ones are.
    let (g, m) = measure(&mut scraper, PoolTruth::read);
    assert_eq!(g.count("TIME-WAIT"), RANGE_SIZE);
    let ts = m.value("sockscope_census_timestamp_seconds", &[]);
    let reusable = m.value(
        "sockscope_ephemeral_ports_time_wait_reusable",
        &pool_labels(),
    );
    let avail = m.value("sockscope_ephemeral_ports_available", &pool_labels());
    let young = created.values().filter(|&&t| t > ts - 1.0 + 0.05).count() as f64;
    let old = created.values().filter(|&&t| t < ts - 1.0 - 0.1).count() as f64;
    println!(
        "census {:.0} ms after the last TIME_WAIT: reusable {reusable}, available {avail} (young {young}, old {old})",
        (ts - last) * 1000.0
    );
    assert!(
        old <= reusable && reusable <= RANGE_SIZE as f64 - young,
        "reusable {reusable} outside [{old}, {}]",
        RANGE_SIZE as f64 - young
    );
    assert_eq!(
        avail, reusable,
        "a pool of TIME_WAIT only: available = reusable"
    );
    if ts - last < 0.9 {
        assert!(
            avail < RANGE_SIZE as f64,
            "available {avail} before the delay passed"
        );
    }

    // After the delay every TIME_WAIT is reusable.
    let m = scraper.scrape_until(
        "100 reusable and 100 available",
        Duration::from_secs(5),
        |m| {
            m.get(
                "sockscope_ephemeral_ports_time_wait_reusable",
                &pool_labels(),
            ) == Some(RANGE_SIZE as f64)
                && m.get("sockscope_ephemeral_ports_available", &pool_labels())
                    == Some(RANGE_SIZE as f64)
        },
    );
    let ts = m.value("sockscope_census_timestamp_seconds", &[]);
    println!(
        "all reusable at a census {:.0} ms after the last TIME_WAIT",
        (ts - last) * 1000.0
    );
    // 20 ms for the jiffy granularity of idiag_expires and the dump delay.
    assert!(
        ts - last > 1.0 - 0.02,
        "reusable before tcp_tw_reuse_delay passed"
    );
    assert_eq!(
        PoolTruth::read().count("TIME-WAIT"),
        RANGE_SIZE,
        "the range is still full of TIME_WAIT"
    );

    // The kernel agrees: connect() takes over a TIME_WAIT port.
    let s = TcpStream::connect(SERVER).expect("connect() reusing a TIME_WAIT port");
    let port = s.local_addr().unwrap().port();
    assert!(created.contains_key(&port), "port {port} held a TIME_WAIT");
    let (g, m) = measure(&mut scraper, PoolTruth::read);
    assert_eq!(
        (g.count("TIME-WAIT"), g.count("ESTAB")),
        (RANGE_SIZE - 1, 1),
        "{g:?}"
    );
    assert_eq!(
        m.value(
            "sockscope_ephemeral_ports_time_wait_reusable",
            &pool_labels()
        ),
        99.0
    );
    assert_eq!(
        m.value("sockscope_ephemeral_ports_available", &pool_labels()),
        99.0
    );
    println!("connect() reused port {port}; then available 99");
    drop(s);
    agent.assert_running();
    println!("total {:.2?}", started.elapsed());
}

/// The kernel's (major, minor) ([`kernel_release`]).
fn kernel_version() -> (u32, u32) {
    let (major, minor, _) = kernel_release();
    (major, minor)
}

/// Sockets bound with `bind()` that neither listen nor connect hold their
/// port toward every destination (`__inet_hash_connect()` skips a port
/// whose bind bucket came from `bind()`). inet_diag lists them only for
/// `TCPF_BOUND_INACTIVE` (kernel >= 6.8), as CLOSE; `ss` 6.1 and
/// `/proc/net/tcp` never do. Then: with BOUND ports bound, ESTABLISHED
/// connections toward the server until EADDRNOTAVAIL: exactly
/// RANGE_SIZE - BOUND succeed on every kernel; the agent predicts it
/// exactly where the kernel lists them, and is BOUND too high before 6.8
/// (the README says so).
///
/// The census reads bound-only sockets on its own cadence (README "The
/// ephemeral-port model"): one bound after the first connect (after a
/// census) is out of `available` in a census at most
/// `--census.max-interval` (here 3 s) plus one poll (1 s) after it was
/// bound.
fn bound_only() {
    const BOUND: u64 = 10;
    const MAX_INTERVAL_S: f64 = 3.0;
    let started = Instant::now();
    setup("0");
    let kernel = kernel_version();
    let lists_bound = kernel >= (6, 8);
    let mut bound_now = BOUND;
    let mut late_bound = None;
    let bound: Vec<socket2::Socket> = (0..BOUND as u16)
        .map(|i| {
            // std's TcpListener::bind listens: bind only, through socket2.
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let a: std::net::SocketAddr =
                format!("127.0.0.1:{}", RANGE.0 + 10 + i).parse().unwrap();
            s.bind(&a.into()).unwrap();
            s
        })
        .collect();
    let mut flags = AGENT_FLAGS.to_vec();
    flags.extend(["--census.max-interval", "3s"]);
    let mut agent = Agent::spawn(&flags);
    let mut scraper = Scraper::connect(&mut agent);
    let listener = TcpListener::bind(SERVER).unwrap();
    let (tx, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((s, _)) = listener.accept() {
            if tx.send(s).is_err() {
                return;
            }
        }
    });

    let mut held = Vec::new();
    let mut servers = Vec::new();
    let err = loop {
        assert!(
            (held.len() as u64) <= RANGE_SIZE,
            "more connects than ports"
        );
        match TcpStream::connect(SERVER) {
            Ok(s) => {
                let port = s.local_addr().unwrap().port();
                assert!(in_range(port), "local port {port}");
                assert!(
                    !(RANGE.0 + 10..RANGE.0 + 10 + BOUND as u16).contains(&port),
                    "connect() took bound port {port}"
                );
                held.push(s);
                // Kept open: a dropped server side would put ours in CLOSE_WAIT.
                servers.push(
                    accepted
                        .recv_timeout(scaled(Duration::from_secs(5)))
                        .unwrap(),
                );
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => break e,
            Err(e) => panic!("connect #{}: {e}", held.len() + 1),
        }
        if held.len() == 1 || held.len() as u64 == RANGE_SIZE - bound_now {
            let (g, m) = measure(&mut scraper, PoolTruth::read);
            let avail = m.value("sockscope_ephemeral_ports_available", &pool_labels());
            let kernel_room = RANGE_SIZE - bound_now - g.count("ESTAB");
            let close = m.value(
                "sockscope_tcp_sockets",
                &[("family", "ipv4"), ("state", "close")],
            );
            println!(
                "kernel {kernel:?}: {} held, available {avail}, kernel room {kernel_room}, close {close}",
                held.len()
            );
            if lists_bound {
                assert_eq!(avail, kernel_room as f64, "bound ports counted");
                assert_eq!(close, bound_now as f64, "bound-only sockets are CLOSE");
            } else {
                assert_eq!(
                    avail,
                    (kernel_room + bound_now) as f64,
                    "invisible before 6.8"
                );
                assert_eq!(close, 0.0, "nothing to list before 6.8");
            }
            if late_bound.is_none() {
                // One more, bound to a free port of the range (port 0: the
                // kernel picks it), after the census just read.
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                let a: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
                s.bind(&a.into()).unwrap();
                let port = s.local_addr().unwrap().as_socket().unwrap().port();
                assert!(in_range(port), "bind(0) took {port}");
                let at = now_unix();
                bound_now += 1;
                if lists_bound {
                    let want = avail - 1.0;
                    let m = scraper.scrape_until(
                        "the late bound-only port out of available",
                        Duration::from_secs(10),
                        |m| m.value("sockscope_ephemeral_ports_available", &pool_labels()) == want,
                    );
                    let census = m.value("sockscope_census_timestamp_seconds", &[]);
                    println!(
                        "late bound port {port}: out of available in the census {:.2} s after bind()",
                        census - at
                    );
                    assert!(
                        census - at <= MAX_INTERVAL_S + 1.0 + 0.25,
                        "seen {:.2} s after bind(), documented bound {MAX_INTERVAL_S} s + a poll",
                        census - at
                    );
                }
                late_bound = Some(s);
            }
        }
    };
    println!(
        "connect #{} failed: {err} ({:.2?})",
        held.len() + 1,
        started.elapsed()
    );
    assert_eq!(
        held.len() as u64,
        RANGE_SIZE - bound_now,
        "exactly range - bound connects succeed"
    );
    drop((bound, late_bound, servers));
    agent.assert_running();
}

/// An odd-sized range (101 ports, 40000-40100): `__inet_hash_connect()`
/// walks `remaining` = 100 slots from a random even offset, wrapping by
/// 100: from offset 0 it reaches 40000..40099, from any other 40001..40100.
/// So the connect() that fails may leave 40000 or 40100 free, whichever its
/// offset could not reach. ESTABLISHED connections until EADDRNOTAVAIL: all
/// 101 ports, or 100 with 40000 or 40100 left free; the model's limit is 101
/// and its `available` ends at 101 minus what connect() took.
fn odd_range() {
    const ODD: u64 = 101;
    assert_eq!(setup_port_range_netns("40000 40100", "0"), ODD);
    let mut agent = Agent::spawn(AGENT_FLAGS);
    let mut scraper = Scraper::connect(&mut agent);
    let listener = TcpListener::bind(SERVER).unwrap();
    let (mut held, mut servers, mut ports) = (Vec::new(), Vec::new(), BTreeSet::new());
    let err = loop {
        assert!((held.len() as u64) <= ODD, "more connects than ports");
        match TcpStream::connect(SERVER) {
            Ok(s) => {
                ports.insert(s.local_addr().unwrap().port());
                held.push(s);
                servers.push(listener.accept().unwrap().0);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => break e,
            Err(e) => panic!("connect #{}: {e}", held.len() + 1),
        }
    };
    let free: Vec<u16> = (40000..=40100).filter(|p| !ports.contains(p)).collect();
    println!(
        "kernel {:?}: {} connects, then {err}; free ports {free:?}",
        kernel_version(),
        held.len()
    );
    assert!(
        free.is_empty() || free == [40000] || free == [40100],
        "connect() failed with ports free: {free:?}"
    );
    let (g, m) = measure(&mut scraper, PoolTruth::read);
    assert_eq!(g.count("ESTAB"), held.len() as u64);
    assert_eq!(m.value("sockscope_ephemeral_ports_limit", &[]), ODD as f64);
    assert_eq!(
        m.value("sockscope_ephemeral_ports_available", &pool_labels()),
        free.len() as f64
    );
    drop((held, servers));
    agent.assert_running();
}

/// `IP_LOCAL_PORT_RANGE` (include/uapi/linux/in.h; not in the libc crate):
/// a per-socket ephemeral range, the u32 `lo | hi << 16`.
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

/// The kernel's (major, minor, sublevel). Debian's `uname -r` says
/// `6.1.0-57-amd64` whatever the stable release; its real sublevel is in
/// /proc/sys/kernel/version (`... Debian 6.1.192-3 ...`), used when present.
fn kernel_release() -> (u32, u32, u32) {
    let parse = |s: &str| -> Vec<u32> {
        s.split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse().unwrap_or(0))
            .collect()
    };
    let mut v = parse(
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim(),
    );
    let version = std::fs::read_to_string("/proc/sys/kernel/version").unwrap();
    if let Some(deb) = version.split("Debian ").nth(1) {
        let d = parse(deb);
        if d.len() == 3 && d[..2] == v[..2] {
            v = d;
        }
    }
    v.resize(3, 0);
    (v[0], v[1], v[2])
}

/// What `connect()` does with `IP_LOCAL_PORT_RANGE` on a kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SocketRangeRule {
    /// No such option: `setsockopt` fails with `ENOPROTOOPT`.
    Unsupported,
    /// The option narrows the socket's range, and `__inet_hash_connect()`
    /// walks it as it walks the namespace's: from an even offset, ports of
    /// `lo`'s parity first, `remaining` rounded down to even (mainline
    /// 6.3-6.7, commit 91d0b78c5177; backported to 6.1.32 as 6728486447ee).
    Parity,
    /// Since 6.8 (commit 207184853dbd, "tcp/dccp: change source port
    /// selection at connect() time"): a socket with the option walks its
    /// range one port at a time from any offset, `remaining` not rounded.
    Sequential,
}

fn socket_range_rule(k: (u32, u32, u32)) -> SocketRangeRule {
    if k >= (6, 8, 0) {
        SocketRangeRule::Sequential
    } else if k >= (6, 3, 0) || (k.0, k.1) == (6, 1) && k.2 >= 32 {
        SocketRangeRule::Parity
    } else {
        SocketRangeRule::Unsupported
    }
}

fn set_local_port_range(s: &socket2::Socket, lo: u16, hi: u16) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v: u32 = u32::from(lo) | (u32::from(hi) << 16);
    // SAFETY: setsockopt reads 4 bytes from a u32 that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_LOCAL_PORT_RANGE,
            (&v as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_local_port_range(s: &socket2::Socket) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` (4) bytes into a u32 of this frame.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_LOCAL_PORT_RANGE,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A TCP socket toward [`SERVER`] with the per-socket range `range`
/// (`None`: without the option); the connect()'s error is returned.
fn connect_in(range: Option<(u16, u16)>) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some((lo, hi)) = range {
        set_local_port_range(&s, lo, hi)
            .unwrap_or_else(|e| panic!("IP_LOCAL_PORT_RANGE {lo}-{hi}: {e}"));
    }
    let addr: std::net::SocketAddr = SERVER.parse().unwrap();
    s.connect(&addr.into())?;
    Ok(s.into())
}

/// Connects with the per-socket range `range` until EADDRNOTAVAIL (at most
/// one attempt more than the range has ports), holding every connection
/// ESTABLISHED on both sides; returns the local ports in the order taken.
fn fill_socket_range(
    range: (u16, u16),
    listener: &TcpListener,
    held: &mut Vec<TcpStream>,
) -> Vec<u16> {
    let size = usize::from(range.1 - range.0) + 1;
    let mut ports = Vec::new();
    loop {
        assert!(
            ports.len() <= size,
            "{} connects succeeded in a range of {size}",
            ports.len()
        );
        match connect_in(Some(range)) {
            Ok(s) => {
                let port = s.local_addr().unwrap().port();
                assert!(
                    (range.0..=range.1).contains(&port),
                    "port {port} outside the socket's range {range:?}"
                );
                assert!(!ports.contains(&port), "port {port} taken twice");
                ports.push(port);
                held.push(s);
                held.push(listener.accept().unwrap().0);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return ports,
            Err(e) => panic!("connect #{} in {range:?}: {e}", ports.len() + 1),
        }
    }
}

/// A per-socket range (`IP_LOCAL_PORT_RANGE`, kernel >= 6.3 and 6.1.32+)
/// narrower than the namespace's 100 ports: connect() with it until
/// EADDRNOTAVAIL, in an even range (20 ports) then an odd one (21), each
/// count checked against [`SocketRangeRule`] for the running kernel; then
/// the agent: its pool counts equal `ss`, and its `limit` and `available`
/// are the namespace's (sock_diag does not carry a socket's range), which a
/// connect() without the option confirms. Before the option exists,
/// setsockopt fails with ENOPROTOOPT.
fn socket_range() {
    const EVEN: (u16, u16) = (40010, 40029);
    const ODD: (u16, u16) = (40050, 40070);
    setup("0");
    let kernel = kernel_release();
    let rule = socket_range_rule(kernel);
    let mut agent = Agent::spawn(AGENT_FLAGS);
    let mut scraper = Scraper::connect(&mut agent);
    let listener = TcpListener::bind(SERVER).unwrap();

    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let set = set_local_port_range(&probe, EVEN.0, EVEN.1);
    println!("kernel {kernel:?}: rule {rule:?}; setsockopt(IP_LOCAL_PORT_RANGE): {set:?}");
    if rule == SocketRangeRule::Unsupported {
        let e = set.expect_err("IP_LOCAL_PORT_RANGE accepted by a kernel without it");
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "setsockopt: {e}");
        let e = get_local_port_range(&probe).expect_err("getsockopt without the option");
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "getsockopt: {e}");
        // Such a kernel has only the namespace's range: the model's.
        let m = scraper.scrape();
        assert_eq!(
            m.value("sockscope_ephemeral_ports_limit", &[]),
            RANGE_SIZE as f64
        );
        println!("kernel {kernel:?}: no per-socket range (ENOPROTOOPT), as predicted");
        agent.assert_running();
        return;
    }
    set.unwrap_or_else(|e| panic!("kernel {kernel:?} ({rule:?}) refused the option: {e}"));
    assert_eq!(
        get_local_port_range(&probe).unwrap(),
        u32::from(EVEN.0) | (u32::from(EVEN.1) << 16),
        "getsockopt returns lo | hi << 16"
    );
    drop(probe);

    let mut held = Vec::new();
    // Even range: every rule takes all 20 ports.
    let even = fill_socket_range(EVEN, &listener, &mut held);
    println!(
        "even range {EVEN:?}: {} connects, in order {even:?}",
        even.len()
    );
    assert_eq!(even.len(), 20, "connects in a 20-port socket range");
    if rule == SocketRangeRule::Parity {
        // Ports of lo's parity (even) first: the first 10 are even, the
        // next 10 odd.
        let parity: Vec<u16> = even.iter().map(|p| (p - EVEN.0) % 2).collect();
        assert_eq!(parity, [[0; 10], [1; 10]].concat(), "parity order {even:?}");
    }

    // Odd range: 21 ports. Sequential takes all; Parity walks 20 slots
    // from an even offset: offset 0 misses hi, any other misses lo, so the
    // last free port may be out of reach.
    let odd = fill_socket_range(ODD, &listener, &mut held);
    let free: Vec<u16> = (ODD.0..=ODD.1).filter(|p| !odd.contains(p)).collect();
    println!(
        "odd range {ODD:?}: {} connects, free {free:?}, in order {odd:?}",
        odd.len()
    );
    match rule {
        SocketRangeRule::Sequential => {
            assert_eq!(odd.len(), 21, "6.8+: every port of an odd socket range");
        }
        _ => assert!(
            free.is_empty() || free == [ODD.0] || free == [ODD.1],
            "parity rule: all 21, or 20 with lo or hi free; free {free:?}"
        ),
    }

    // The agent: the pool's sockets equal ss; limit and available are the
    // namespace's, although these sockets' connect() is refused now.
    let in_use = (even.len() + odd.len()) as u64;
    let (g, m) = measure(&mut scraper, PoolTruth::read);
    let [s, d] = pool_labels();
    let used = |m: &common::metrics::Metrics, st| {
        m.value("sockscope_ephemeral_ports_used", &[s, d, ("state", st)])
    };
    assert_eq!(g.count("ESTAB"), in_use, "{g:?}");
    assert_eq!(g.rows.len() as u64, in_use, "{g:?}");
    assert_eq!(used(&m, "established"), in_use as f64);
    assert_eq!(used(&m, "time_wait"), 0.0);
    assert_eq!(used(&m, "other"), 0.0);
    assert_eq!(
        m.value("sockscope_ephemeral_ports_limit", &[]),
        RANGE_SIZE as f64,
        "the limit is the namespace's range"
    );
    let avail = m.value("sockscope_ephemeral_ports_available", &pool_labels());
    assert_eq!(avail, (RANGE_SIZE - in_use) as f64);
    println!(
        "agent: used {in_use} (= ss), limit {RANGE_SIZE}, available {avail} toward {SERVER}; \
         the socket ranges have {} free",
        free.len()
    );

    // Without the option connect() still has the namespace's ports.
    let s = connect_in(None).expect("connect() without a socket range");
    let port = s.local_addr().unwrap().port();
    println!("connect() without the option took port {port}");
    assert!(in_range(port), "port {port}");
    assert!(
        !(EVEN.0..=EVEN.1).contains(&port) && (!(ODD.0..=ODD.1).contains(&port) || free == [port]),
        "port {port} was in use toward {SERVER}"
    );
    held.push(s);
    held.push(listener.accept().unwrap().0);
    let (g, m) = measure(&mut scraper, PoolTruth::read);
    assert_eq!(g.count("ESTAB"), in_use + 1, "{g:?}");
    assert_eq!(used(&m, "established"), (in_use + 1) as f64);
    assert_eq!(
        m.value("sockscope_ephemeral_ports_available", &pool_labels()),
        (RANGE_SIZE - in_use - 1) as f64
    );
    drop(held);
    agent.assert_running();
}
