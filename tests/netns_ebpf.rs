//! The eBPF event source (`--ebpf`) against what the clients saw, in
//! private network namespaces.
//!
//! - Every `connect()` outcome: a 50-port range with `tcp_tw_reuse` 0,
//!   connects until and past `EADDRNOTAVAIL` (blocking and non-blocking),
//!   connects to a closed port, connects the application closes while they
//!   are still in SYN_SENT: each `sockscope_connects_total` series equals
//!   the client's own tally, exactly; entries into TIME_WAIT equal `ss`.
//! - `--netns all`, two namespaces loaded differently: each one's counts
//!   under its own `netns` label; a namespace that goes away leaves no
//!   series.
//! - Without `CAP_BPF`, `CAP_PERFMON` and `CAP_SYS_ADMIN` (`capsh
//!   --drop`): `--ebpf auto` serves the census, says why once, exports no
//!   event series; `--ebpf on` refuses to start, saying why.
//!
//! Needs root, iproute2 and capsh (libcap2-bin): `#[ignore]`d, run by
//! `./scripts/test` (also on each kernel of `scripts/kernel-matrix`).

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::agent::{Agent, agent_bin};
use common::metrics::{Metrics, check_promtool, check_python_parser};
use common::netns::{run_in_netns, run_unshared, setup_netns};
use common::prereq;
use common::process::{run_ok, status_field};
use common::scrape::{Scraper, measure};
use common::truth::{ss_pool, ss_tcp_listen_queue};
use common::wait::{now_unix, wait_for};

/// `sockscope` arguments of an agent that must load its programs or exit.
const EBPF_ON: &[&str] = &[
    "agent",
    "--web.listen-address",
    "127.0.0.1:0",
    "--ebpf",
    "on",
];

const UPSTREAM: &str = "127.0.0.1:7100";
const CLOSED: &str = "127.0.0.1:7101";
const STUCK: &str = "127.0.0.1:7102";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn socket() -> socket2::Socket {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap()
}

/// Waits (bounded, scaled under emulation) for the agent's "serving" log
/// line: it serves once its programs are attached, which under an
/// emulated CPU (parsing the kernel's BTF) can outlast a scrape's read
/// timeout, while its listener is bound earlier.
fn wait_serving(agent: &mut Agent) {
    wait_for(
        "the agent's \"serving\" line",
        Duration::from_secs(20),
        || {
            agent.assert_running();
            let log = agent.log();
            if log.contains("serving address=") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
}

/// The client's tally: (destination, result) → count.
type Tally = BTreeMap<(String, String), u64>;

fn count(t: &mut Tally, dest: &str, result: &str) {
    *t.entry((dest.to_owned(), result.to_owned())).or_default() += 1;
}

/// Every `sockscope_connects_total` series but the scraper's own pool
/// (toward the agent), as (destination, result) → value; each must be
/// from 127.0.0.1 and carry no `netns` label (`--netns self`).
fn agent_tally(m: &Metrics, agent: &str) -> Tally {
    let mut t = Tally::new();
    for s in m.all("sockscope_connects_total") {
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        assert_eq!(l("local_ip"), "127.0.0.1", "{s:?}");
        assert!(!s.labels.contains_key("netns"), "{s:?}");
        if l("destination") == agent {
            assert_eq!(l("result"), "established", "the scraper's: {s:?}");
            continue;
        }
        t.insert((l("destination"), l("result")), s.value as u64);
    }
    t
}

#[test]
#[ignore = "needs root (unshare -n, bpf) and iproute2: ./scripts/test runs it"]
fn netns_ebpf_connect_outcomes_equal_the_clients() {
    run_in_netns("netns_ebpf_connect_outcomes_equal_the_clients", || {
        setup_netns(&[
            ("net/ipv4/ip_local_port_range", "40000 40049"),
            ("net/ipv4/tcp_tw_reuse", "0"),
        ]);
        let mut agent = Agent::spawn(&["--ebpf", "on"]);
        wait_serving(&mut agent);
        let mut scraper = Scraper::connect(&mut agent);
        let first = scraper.scrape();
        assert_eq!(first.value("sockscope_ebpf_programs", &[]), 1.0);
        let mut tally = Tally::new();

        // Connects to a closed port: ECONNREFUSED.
        for _ in 0..3 {
            let e = TcpStream::connect(CLOSED).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
            count(&mut tally, CLOSED, "econnrefused");
        }

        // A listener that never accepts, backlog 1 (its queue holds 2):
        // 2 clients complete the handshake, 3 more stay in SYN_SENT (their
        // SYNs are dropped) until the application closes them: aborted.
        let stuck = socket();
        stuck.bind(&addr(STUCK).into()).unwrap();
        stuck.listen(1).unwrap();
        let queued: Vec<TcpStream> = (0..2)
            .map(|_| {
                count(&mut tally, STUCK, "established");
                TcpStream::connect(STUCK).unwrap()
            })
            .collect();
        // Both in the queue before the next SYN: a late ACK (softirqs run
        // late under TCG) would leave the queue room for one more.
        wait_for(
            "the queue to hold 2",
            Duration::from_secs(5),
            || match ss_tcp_listen_queue(STUCK) {
                Some((2, _)) => Ok(()),
                q => Err(format!("{q:?}")),
            },
        );
        let pending: Vec<socket2::Socket> = (0..3)
            .map(|_| {
                let c = socket();
                c.set_nonblocking(true).unwrap();
                let e = c.connect(&addr(STUCK).into()).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "{e}");
                c
            })
            .collect();
        wait_for("3 clients in SYN_SENT", Duration::from_secs(5), || {
            let n = ss_pool("127.0.0.1", STUCK)
                .get("SYN-SENT")
                .copied()
                .unwrap_or(0);
            if n == 3 { Ok(()) } else { Err(format!("{n}")) }
        });
        for c in pending {
            drop(c);
            count(&mut tally, STUCK, "aborted");
        }

        // The upstream accepts and holds every connection, and closes each
        // after its client did (so TIME_WAIT lands on the client).
        let upstream = TcpListener::bind(UPSTREAM).unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            upstream.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            loop {
                match upstream.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if stop_rx.try_recv().is_ok() {
                            return held;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        // Until and past EADDRNOTAVAIL: blocking connects until the first
        // failure (bounded by the range), 10 blocking failures in all, then
        // 3 non-blocking ones (connect() fails at once, no EINPROGRESS).
        let mut open = Vec::new();
        let mut failed = 0;
        while failed < 10 {
            assert!(open.len() <= 50, "more connects than ports");
            match TcpStream::connect(UPSTREAM) {
                Ok(s) => {
                    count(&mut tally, UPSTREAM, "established");
                    open.push(s);
                }
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
                    count(&mut tally, UPSTREAM, "eaddrnotavail");
                    failed += 1;
                }
            }
        }
        for _ in 0..3 {
            let c = socket();
            c.set_nonblocking(true).unwrap();
            let e = c.connect(&addr(UPSTREAM).into()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
            count(&mut tally, UPSTREAM, "eaddrnotavail");
        }
        println!(
            "{} established toward {UPSTREAM} before EADDRNOTAVAIL",
            open.len()
        );
        assert!(open.len() >= 45, "the 50-port range: {}", open.len());
        stop_tx.send(()).unwrap();
        let mut held = server.join().unwrap();
        assert_eq!(held.len(), open.len());

        // Client-first closes: the client sockets enter TIME_WAIT.
        drop(open);
        for s in &mut held {
            let mut buf = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(s.read(&mut buf).unwrap(), 0, "EOF from the client");
        }
        drop(held);
        wait_for("no FIN-WAIT left", Duration::from_secs(5), || {
            let p = ss_pool("127.0.0.1", UPSTREAM);
            let transient = ["FIN-WAIT-1", "FIN-WAIT-2", "ESTAB", "CLOSING"];
            if transient.iter().any(|s| p.contains_key(*s)) {
                Err(format!("{p:?}"))
            } else {
                Ok(())
            }
        });

        // Every series equals the client's tally, once a poll has read the
        // map after the last connect.
        let m = scraper.scrape_after(now_unix());
        assert_eq!(agent_tally(&m, &agent.addr), tally);
        assert_eq!(m.value("sockscope_ebpf_events_lost_total", &[]), 0.0);
        assert_eq!(
            m.value("sockscope_source_up", &[("source", "ebpf_connects")]),
            1.0
        );
        // Entries into TIME_WAIT, counted as they happened, equal ss (the
        // figure is as of the latest census).
        let (tw, m) = measure(&mut scraper, || {
            ss_pool("127.0.0.1", UPSTREAM)
                .get("TIME-WAIT")
                .copied()
                .unwrap_or(0)
        });
        let entries = m.value(
            "sockscope_ephemeral_ports_time_wait_entries_total",
            &[("local_ip", "127.0.0.1"), ("destination", UPSTREAM)],
        );
        println!("TIME_WAIT: ss {tw}, entries counted {entries}");
        assert!(tw >= 40, "most client-first closes leave a TIME_WAIT: {tw}");
        assert_eq!(entries, tw as f64);
        assert!(
            m.value("sockscope_ebpf_events_total", &[])
                >= tally.values().sum::<u64>() as f64 + tw as f64,
            "every outcome and entry is an event"
        );
        check_promtool(&m.text);
        check_python_parser(&m.text);
        drop((queued, stuck));
        agent.assert_running();
    });
}

/// Runs `script` with python3 in the named namespace `ns` (`ip netns
/// exec`); returns its stdout.
fn python_in(ns: &str, script: &str, args: &[&str]) -> String {
    let python = prereq::python_with(&["socket"]);
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(python)
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In a namespace: a listener on 127.0.0.1:7100 that accepts `argv[1]`
/// clients, `argv[2]` connects to the closed 127.0.0.1:7101.
const LOAD: &str = r#"
import socket, sys
est, refused = int(sys.argv[1]), int(sys.argv[2])
l = socket.socket(); l.bind(("127.0.0.1", 7100)); l.listen(128)
held = []
for _ in range(est):
    c = socket.create_connection(("127.0.0.1", 7100)); held.append((c, l.accept()[0]))
n = 0
for _ in range(refused):
    try:
        socket.create_connection(("127.0.0.1", 7101))
    except ConnectionRefusedError:
        n += 1
print(len(held), n)
"#;

fn ns_inode(name: &str) -> String {
    std::fs::metadata(Path::new("/run/netns").join(name))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m).to_string())
        .unwrap()
}

#[test]
#[ignore = "needs root (unshare, ip netns, bpf): ./scripts/test runs it"]
fn netns_ebpf_every_namespace_from_one_program() {
    run_unshared(
        "netns_ebpf_every_namespace_from_one_program",
        &["-n", "-m", "-p", "-f", "--mount-proc"],
        || {
            setup_netns(&[]);
            // /run/netns private to this mount namespace (a tmpfs over it),
            // so that no binding outlives the test.
            std::fs::create_dir_all("/run/netns").unwrap();
            run_ok("mount", &["-t", "tmpfs", "sockscope-test", "/run/netns"]);
            for ns in ["ebpf-a", "ebpf-b"] {
                run_ok("ip", &["netns", "add", ns]);
                run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
            }
            let mut agent = Agent::spawn(&["--ebpf", "on", "--netns", "all"]);
            wait_serving(&mut agent);
            // The agent answers once its programs are attached (its
            // listener is bound before: a connect may be queued earlier).
            let programs = Scraper::connect(&mut agent)
                .scrape()
                .value("sockscope_ebpf_programs", &[]);
            assert_eq!(programs, 1.0);
            let (a, b) = (ns_inode("ebpf-a"), ns_inode("ebpf-b"));
            let mut want = BTreeMap::new();
            for (ns, inode, est, refused) in [("ebpf-a", &a, 4, 2), ("ebpf-b", &b, 9, 5)] {
                let out = python_in(ns, LOAD, &[&est.to_string(), &refused.to_string()]);
                assert_eq!(out.trim(), format!("{est} {refused}"), "{ns}");
                want.insert((inode.clone(), "established"), est as f64);
                want.insert((inode.clone(), "econnrefused"), refused as f64);
            }
            // A new connection: python starts slowly in an emulated VM, and
            // an idle one is closed after --web.read-header-timeout.
            let mut scraper = Scraper::connect(&mut agent);
            let m = scraper.scrape_after(now_unix());
            let mut got = BTreeMap::new();
            for s in m.all("sockscope_connects_total") {
                let ns = s.labels.get("netns").cloned().unwrap_or_default();
                if ns == a || ns == b {
                    let r = s.labels["result"].clone();
                    let dest = &s.labels["destination"];
                    let expect = if r == "established" {
                        "127.0.0.1:7100"
                    } else {
                        "127.0.0.1:7101"
                    };
                    assert_eq!(dest, expect, "{s:?}");
                    let key = (
                        ns,
                        if r == "established" {
                            "established"
                        } else {
                            "econnrefused"
                        },
                    );
                    assert!(r == key.1, "{s:?}");
                    got.insert(key, s.value);
                }
            }
            let want: BTreeMap<(String, &str), f64> = want;
            let shown: Vec<&str> = m
                .text
                .lines()
                .filter(|l| {
                    l.starts_with("sockscope_connects_total")
                        || l.starts_with("sockscope_netns_info")
                        || l.contains("ebpf")
                })
                .collect();
            assert_eq!(
                got,
                want,
                "each namespace's connects under its own netns label:\n{}",
                shown.join("\n")
            );
            // The events come without setns: the agent's own namespace's
            // pool toward itself is there too, under its label.
            assert!(
                m.all("sockscope_connects_total")
                    .iter()
                    .all(|s| s.labels.contains_key("netns")),
                "every series has its netns label"
            );

            run_ok("ip", &["netns", "del", "ebpf-b"]);
            let m = scraper.scrape_until("ebpf-b's series gone", Duration::from_secs(10), |m| {
                m.all("sockscope_connects_total")
                    .iter()
                    .all(|s| s.labels.get("netns") != Some(&b))
            });
            assert_eq!(
                m.value(
                    "sockscope_connects_total",
                    &[
                        ("netns", &a),
                        ("local_ip", "127.0.0.1"),
                        ("destination", "127.0.0.1:7101"),
                        ("result", "econnrefused")
                    ]
                ),
                2.0,
                "ebpf-a's stay"
            );
            run_ok("ip", &["netns", "del", "ebpf-a"]);
            agent.assert_running();
        },
    );
}

#[test]
#[ignore = "needs root (unshare -n) and capsh: ./scripts/test runs it"]
fn netns_ebpf_without_capabilities() {
    run_in_netns("netns_ebpf_without_capabilities", || {
        setup_netns(&[]);
        let capsh = prereq::tool("capsh");
        let drop = "--drop=cap_bpf,cap_perfmon,cap_sys_admin";
        // capsh runs bash with what follows `--`: exec the agent.
        let via: &[&str] = &[drop, "--", "-c", "exec \"$0\" \"$@\""];

        let mut agent = Agent::spawn_via(&capsh, via, &["--ebpf", "auto"]);
        wait_serving(&mut agent);
        let mut scraper = Scraper::connect(&mut agent);
        let m = scraper.scrape_after(now_unix());
        assert!(
            m.get(
                "sockscope_tcp_sockets",
                &[("family", "ipv4"), ("state", "listen")]
            )
            .is_some(),
            "the census is served"
        );
        for s in &m.series {
            assert!(
                !s.name.starts_with("sockscope_connects") && !s.name.starts_with("sockscope_ebpf_"),
                "no event series without the capabilities: {s:?}"
            );
        }
        assert!(
            m.get("sockscope_source_up", &[("source", "ebpf_connects")])
                .is_none()
        );
        let log = agent.stop();
        let why: Vec<&str> = log.lines().filter(|l| l.contains("--ebpf auto")).collect();
        assert_eq!(why.len(), 1, "one line saying why: {log}");
        assert!(
            why[0].contains("CAP_BPF") && why[0].contains("CAP_PERFMON"),
            "{}",
            why[0]
        );

        // --ebpf on: refuses to start, in one line naming the capabilities.
        let out = Command::new(&capsh)
            .args(via)
            .arg(agent_bin())
            .args(EBPF_ON)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--ebpf on without the capabilities: {stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("sockscope: --ebpf on:") && last.contains("CAP_BPF"),
            "{stderr}"
        );
    });
}

/// `KEY=` values of the shipped systemd unit, byte for byte as shipped
/// (the last assignment of each key wins, as systemd reads it).
fn unit_value(key: &str) -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/sockscope.service"
    ))
    .unwrap();
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key}= in the shipped unit"))
        .trim()
        .to_owned()
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let r = rustix::system::uname();
    let release = r.release().to_string_lossy().into_owned();
    let mut it = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The agent as the shipped unit runs it: an unprivileged user holding
/// exactly the unit's `AmbientCapabilities=` (bounding set = them), with
/// the unit's `LimitMEMLOCK=`; `--ebpf on` starts and counts. On a kernel
/// before 5.11 (BPF maps charged to RLIMIT_MEMLOCK; run on 5.10 by
/// scripts/kernel-matrix, where root would hide it) the limit matters:
/// with 64 KiB instead, `--ebpf on` refuses, naming `LimitMEMLOCK=`.
#[test]
#[ignore = "needs root (unshare -n, setpriv): ./scripts/test runs it"]
fn netns_ebpf_with_the_shipped_unit_capabilities() {
    run_in_netns("netns_ebpf_with_the_shipped_unit_capabilities", || {
        setup_netns(&[]);
        let ambient = unit_value("AmbientCapabilities");
        assert_eq!(ambient, "CAP_BPF CAP_PERFMON");
        assert_eq!(unit_value("CapabilityBoundingSet"), ambient);
        let caps: Vec<String> = ambient
            .split_whitespace()
            .map(|c| c.to_lowercase().trim_start_matches("cap_").to_owned())
            .collect();
        let plus = caps
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let memlock = unit_value("LimitMEMLOCK");
        let bytes = |v: &str| -> String {
            let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("LimitMEMLOCK={v}"));
            let mult = match unit {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                u => panic!("LimitMEMLOCK unit {u}"),
            };
            (n * mult).to_string()
        };
        let as_unit = |limit: &str| -> Vec<String> {
            vec![
                format!("--memlock={limit}"),
                "--".into(),
                prereq::tool("setpriv").display().to_string(),
                "--reuid=65534".into(),
                "--regid=65534".into(),
                "--clear-groups".into(),
                format!("--inh-caps=-all,{plus}"),
                format!("--ambient-caps=-all,{plus}"),
                format!("--bounding-set=-all,{plus}"),
                "--no-new-privs".into(),
                "--".into(),
            ]
        };
        let prlimit = prereq::tool("prlimit");
        let (major, minor) = kernel_version();
        let mut limit: u64 = bytes(&memlock).parse().unwrap();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Memlock).maximum;
        if let Some(hard) = hard
            && hard < limit
            && (major, minor) >= (5, 11)
        {
            // A host that cannot raise its hard limit (no CAP_SYS_RESOURCE
            // in this sandbox): the limit is not charged since 5.11, so
            // the hard limit stands in. Before 5.11 the unit's value is used
            // as is (the kernel matrix's VMs can set it).
            println!(
                "LimitMEMLOCK={memlock} over the hard limit {hard}: {hard} on {major}.{minor}"
            );
            limit = hard;
        }
        let args = as_unit(&limit.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = Agent::spawn_via(&prlimit, &args, &["--ebpf", "on"]);
        wait_serving(&mut agent);
        // Nothing else held: uid nobody, exactly the two capabilities in
        // every set (CAP_PERFMON = 38, CAP_BPF = 39), no_new_privs.
        let pid = agent.pid();
        assert_eq!(
            status_field(pid, "Uid:").split_whitespace().next(),
            Some("65534")
        );
        let two = format!("{:016x}", (1u64 << 38) | (1 << 39));
        for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
            assert_eq!(status_field(pid, set), two, "{set}");
        }
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
        let mut scraper = Scraper::connect(&mut agent);
        assert_eq!(scraper.scrape().value("sockscope_ebpf_programs", &[]), 1.0);
        let e = TcpStream::connect(CLOSED).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        let m = scraper.scrape_after(now_unix());
        assert_eq!(
            m.value(
                "sockscope_connects_total",
                &[
                    ("local_ip", "127.0.0.1"),
                    ("destination", CLOSED),
                    ("result", "econnrefused")
                ]
            ),
            1.0
        );
        drop(scraper);
        agent.stop();

        if (major, minor) >= (5, 11) {
            // Maps are charged to the memory cgroup since 5.11.
            println!(
                "{major}.{minor}: RLIMIT_MEMLOCK is not charged; the 64 KiB case is for < 5.11"
            );
            return;
        }
        // Bounded: were it to start, `timeout` ends it (and the test fails).
        let out = Command::new("timeout")
            .arg("60")
            .arg(&prlimit)
            .args(as_unit("65536"))
            .arg(agent_bin())
            .args(EBPF_ON)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "64 KiB of RLIMIT_MEMLOCK on {major}.{minor}: {stderr}"
        );
        assert!(stderr.contains("LimitMEMLOCK"), "{stderr}");
    });
}
