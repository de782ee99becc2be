//! Seed 002: the two fixes of "Scaling beyond 65k reverse proxy
//! connections on localhost", each checked in its own private network
//! namespace with the range and sysctls of seed 000's exhaustion run
//! (`ip_local_port_range` = 40000 40999, `tcp_tw_reuse` = 0): there, a
//! proxy that closes each upstream connection (`sockscope proxy
//! --keepalive 0`, or nginx with HTTP/1.1 and no keepalive pool) toward
//! ONE TCP upstream fails its 1001st request with a 502
//! (tests/scenario_seed000.rs).
//!
//! - A UNIX-socket upstream: more than 1000 requests, each on a new
//!   upstream connection, and no 502: there is no ephemeral port and no
//!   TIME_WAIT on a UNIX socket. The agent shows no pool toward the
//!   upstream at all; the UNIX connections show in
//!   `sockscope_unix_sockets` instead, and go away with nothing left.
//! - Several loopback IPs for one upstream (127.0.0.2-4:7100, round
//!   robin): 2400 requests and no 502; the agent shows three pools, one
//!   per destination, each with its own 1000 ports and its own TIME_WAIT,
//!   none at 0.
//!
//! Needs root (`unshare -n`), `ss` and, for the nginx tests, nginx;
//! marked `#[ignore]`; `./scripts/test` runs it (`common/prereq.rs`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::agent::{AGENT_ADDR, start_agent};
use common::http::HttpClient;
use common::load::concurrent_load_until;
use common::metrics::{Metrics, PoolFigures, pool_destinations};
use common::netns::{allowed_cpus, pin_to_nth_cpu, run_in_netns, setup_port_range_netns};
use common::nginx::{NGINX_EVENTS, Nginx, nginx_proxy_http, run_in_netns_with_nginx};
use common::process::LabProcess;
use common::scrape::{Scraper, measure};
use common::truth::{
    SsTcpRow, assert_unix_sockets, count_states, proc_net_unix, ss_tcp, unix_counts,
};
use common::wait::wait_for;

const PROXY: &str = "127.0.0.1:8081";
/// The local address of every outbound loopback connection (the source
/// of `local 127.0.0.0/8 dev lo ... src 127.0.0.1`).
const SOURCE: &str = "127.0.0.1";
const RANGE: &str = "40000 40999";
/// Ports `connect()` may take toward one destination.
const LIMIT: u64 = 1000;
/// The upstream IPs of the spread tests, all on `lo`.
const UPSTREAMS: [&str; 3] = ["127.0.0.2:7100", "127.0.0.3:7100", "127.0.0.4:7100"];

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn seed002_unix_upstream_no_exhaustion() {
    run_in_netns("seed002_unix_upstream_no_exhaustion", || {
        let started = Instant::now();
        setup(1);
        let (mut agent, mut scraper) = start_agent(&[]);
        let (dir, sock) = socket_dir();
        let mut upstream = start_upstream(&format!("unix:{sock}"));
        let mut proxy = start_proxy(&[&format!("unix:{sock}")]);
        unix_run(&mut scraper, &sock);
        agent.assert_running();
        upstream.assert_running();
        proxy.assert_running();
        drop(dir);
        println!("total {:.2?}", started.elapsed());
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and nginx: ./scripts/test runs it"]
fn seed002_nginx_unix_upstream_no_exhaustion() {
    run_in_netns_with_nginx("seed002_nginx_unix_upstream_no_exhaustion", || {
        let started = Instant::now();
        setup(0);
        let (mut agent, mut scraper) = start_agent(&[]);
        let (dir, sock) = socket_dir();
        let mut upstream = start_upstream(&format!("unix:{sock}"));
        // The configuration that exhausts the pool with a TCP upstream
        // (seed 000): HTTP/1.1, no keepalive pool, nginx closes first.
        let mut nginx = Nginx::start(
            NGINX_EVENTS,
            &nginx_proxy_http(PROXY, &format!("upstream u {{ server unix:{sock}; }}")),
            PROXY,
        );
        unix_run(&mut scraper, &sock);
        agent.assert_running();
        upstream.assert_running();
        nginx.assert_running();
        drop(dir);
        println!("total {:.2?}", started.elapsed());
    });
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn seed002_many_loopback_ips_spread() {
    run_in_netns("seed002_many_loopback_ips_spread", || {
        let started = Instant::now();
        setup(0);
        let (mut agent, mut scraper) = start_agent(&[]);
        let mut upstreams = start_tcp_upstreams();
        let targets: Vec<String> = UPSTREAMS.iter().map(|u| format!("http://{u}")).collect();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let mut proxy = start_proxy(&targets);
        spread_in_batches(&mut scraper, &mut || {
            agent.assert_running();
            upstreams.iter_mut().for_each(LabProcess::assert_running);
            proxy.assert_running();
        });
        println!("total {:.2?}", started.elapsed());
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and nginx: ./scripts/test runs it"]
fn seed002_nginx_many_loopback_ips_spread() {
    run_in_netns_with_nginx("seed002_nginx_many_loopback_ips_spread", || {
        let started = Instant::now();
        setup(1);
        let (mut agent, mut scraper) = start_agent(&[]);
        let mut upstreams = start_tcp_upstreams();
        let servers: String = UPSTREAMS.iter().map(|u| format!("server {u}; ")).collect();
        // Round robin over equal weights: sequential requests go to the
        // three servers in turn.
        let mut nginx = Nginx::start(
            NGINX_EVENTS,
            &nginx_proxy_http(PROXY, &format!("upstream u {{ {servers}}}")),
            PROXY,
        );
        spread_in_batches(&mut scraper, &mut || {
            agent.assert_running();
            upstreams.iter_mut().for_each(LabProcess::assert_running);
            nginx.assert_running();
        });
        println!("total {:.2?}", started.elapsed());
    });
}

/// The namespace of every test: seed 000's 1000-port range without
/// TIME_WAIT reuse (a port comes back only after 60 s, past the test; the
/// namespace default 2 would reuse loopback TIME_WAIT older than 1 s and
/// hide an exhaustion), and RFC 1337 (a stale ACK must not kill a
/// TIME_WAIT through a RST: see [`setup_port_range_netns`]).
fn setup(cpu_index: usize) {
    let cpus = allowed_cpus();
    assert_eq!(setup_port_range_netns(RANGE, "0"), LIMIT);
    // setup_netns pinned the test to the first CPU; tests of this file
    // running in parallel take turns over the CPUs instead.
    pin_to_nth_cpu(&cpus, cpu_index);
}

/// A temp dir that nginx's workers may enter (0755) and the upstream's
/// socket path in it.
fn socket_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("up.sock").display().to_string();
    (dir, sock)
}

/// `sockscope upstream --behavior keepalive` (never closes first) on
/// `listen` (`IP:PORT` or `unix:PATH`), listening.
fn start_upstream(listen: &str) -> LabProcess {
    LabProcess::listening(
        "upstream",
        &["upstream", "--listen", listen, "--behavior", "keepalive"],
        listen,
    )
}

/// One keep-alive upstream per IP of [`UPSTREAMS`], listening.
fn start_tcp_upstreams() -> Vec<LabProcess> {
    UPSTREAMS.iter().map(|u| start_upstream(u)).collect()
}

/// `sockscope proxy --keepalive 0` toward `upstreams` (round robin).
fn start_proxy(upstreams: &[&str]) -> LabProcess {
    let mut args = vec!["proxy", "--listen", PROXY, "--keepalive", "0"];
    for u in upstreams {
        args.extend(["--upstream", u]);
    }
    LabProcess::listening("proxy", &args, PROXY)
}

// ---------------------------------------------------------------------------
// UNIX-socket upstream
// ---------------------------------------------------------------------------

/// Requests in the UNIX runs: at least `MIN_LOAD` (more than the 1000
/// that exhaust a TCP pool), then on until an agent poll has caught UNIX
/// connections open, up to `MAX_LOAD`.
const MIN_LOAD: u64 = 1500;
const MAX_LOAD: u64 = 6000;
/// Concurrent keep-alive clients of the UNIX runs.
const UNIX_CLIENTS: usize = 4;

fn stream(m: &Metrics, state: &str) -> f64 {
    m.value(
        "sockscope_unix_sockets",
        &[("sock_type", "stream"), ("state", state)],
    )
}

/// A proxy at [`PROXY`] toward the UNIX socket `sock`, closing each
/// upstream connection: more than 1000 requests pass, the agent never
/// shows a TCP pool other than the clients' (toward the proxy) and its
/// own scrape connection's, and no TIME_WAIT but the clients' own; the
/// UNIX connections show in `sockscope_unix_sockets` while the load runs
/// and are gone after it.
fn unix_run(scraper: &mut Scraper, sock: &str) {
    let expected_pools = BTreeSet::from([PROXY.to_owned(), AGENT_ADDR.to_owned()]);
    let unix_truth = || unix_counts(&proc_net_unix());
    let (before, m) = measure(scraper, unix_truth);
    assert_unix_sockets(&m, &before, &["stream"], false);
    let listener = m.listener("unix", sock);
    assert_eq!(listener.sockets, Some(1.0), "{listener:?}");
    let base_connected = stream(&m, "connected");
    println!("before the load: /proc/net/unix {before:?}");

    let started = Instant::now();
    let seen = AtomicBool::new(false);
    let mut peak = (base_connected, 0.0);
    let mut polls = 0;
    let load = || {
        concurrent_load_until(
            PROXY,
            UNIX_CLIENTS,
            MIN_LOAD..=MAX_LOAD,
            &seen,
            Duration::from_secs(20),
        )
    };
    let (counts, connects) = scraper.scrape_while(load, |m| {
        polls += 1;
        let pools = pool_destinations(m);
        assert!(
            pools.is_subset(&expected_pools),
            "a TCP pool toward the UNIX upstream? {pools:?}"
        );
        let connected = stream(m, "connected");
        let accepted = m
            .listener("unix", sock)
            .connected
            .expect("listen_connections of the UNIX listener");
        if connected > peak.0 {
            peak.0 = connected;
        }
        if accepted > peak.1 {
            peak.1 = accepted;
        }
        if connected > base_connected && accepted > 0.0 {
            seen.store(true, Ordering::Relaxed);
        }
    });
    let sent: u64 = counts.values().sum();
    let elapsed = started.elapsed();
    println!(
        "{sent} requests over {UNIX_CLIENTS} clients: {counts:?} in {elapsed:.2?} \
         ({:.0} req/s), {polls} agent polls; peak UNIX stream connected {} (baseline \
         {base_connected}), peak accepted on the upstream's listener {}",
        sent as f64 / elapsed.as_secs_f64(),
        peak.0,
        peak.1
    );
    assert!(
        seen.load(Ordering::Relaxed),
        "no agent poll saw a UNIX connection open during {sent} requests"
    );
    assert!(sent > LIMIT, "{sent} requests: not more than a TCP pool");
    assert_eq!(counts, BTreeMap::from([(200, sent)]), "statuses");

    // The clients have closed their connections to the proxy first: their
    // TIME_WAITs (toward the proxy) are the only ones, once the proxy has
    // answered each FIN.
    wait_for(
        &format!("the clients' {connects} connections in TIME_WAIT"),
        Duration::from_secs(5),
        || {
            let rows = ss_tcp(&["-tan"]);
            let tw = rows.iter().filter(|r| r.state == "TIME-WAIT").count() as u64;
            let closing = rows
                .iter()
                .filter(|r| r.peer == PROXY && r.state != "TIME-WAIT")
                .count();
            if tw == connects && closing == 0 {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );
    let tcp_truth = || {
        let mut rows: Vec<(String, String)> = ss_tcp(&["-tan"])
            .into_iter()
            .filter(|r| r.state == "TIME-WAIT")
            .map(|r| (r.local, r.peer))
            .collect();
        rows.sort();
        (rows, unix_counts(&proc_net_unix()))
    };
    let ((time_wait, after), m) = measure(scraper, tcp_truth);
    assert_eq!(time_wait.len() as u64, connects, "{time_wait:?}");
    assert!(
        time_wait.iter().all(|(_, peer)| peer == PROXY),
        "{time_wait:?}"
    );
    assert_eq!(
        m.value(
            "sockscope_tcp_sockets",
            &[("family", "ipv4"), ("state", "time_wait")]
        ),
        connects as f64
    );
    let pools = pool_destinations(&m);
    assert!(pools.is_subset(&expected_pools), "{pools:?}");
    assert_unix_sockets(&m, &after, &["stream"], false);
    assert_eq!(after, before, "UNIX sockets left behind by the load");
    assert_eq!(
        m.listener("unix", sock).connected,
        Some(0.0),
        "accepted UNIX connections left open"
    );
    let worst = m.value("sockscope_ephemeral_ports_usage_ratio_max", &[]);
    assert!(
        worst <= (connects + 1) as f64 / LIMIT as f64,
        "usage ratio {worst}"
    );
    println!(
        "after the load: TIME_WAIT only the clients' {connects} toward {PROXY}; /proc/net/unix back to {after:?}"
    );
}

// ---------------------------------------------------------------------------
// Several loopback IPs
// ---------------------------------------------------------------------------

/// Sequential requests per batch: 100 per upstream.
const SPREAD_BATCH: u64 = 300;
/// Batches: 2400 requests, more than one pool's 1000 ports, fewer than
/// three pools' 3000.
const SPREAD_BATCHES: u64 = 8;
/// Time limit of the batched run (3-6 s here): the first TIME_WAIT must
/// outlive the last check, and a TIME_WAIT lasts 60 s.
const SPREAD_LIMIT: Duration = Duration::from_secs(45);

/// `ss` per upstream of [`UPSTREAMS`]: state counts of the sockets from
/// [`SOURCE`] toward it.
fn spread_truth() -> BTreeMap<String, BTreeMap<String, u64>> {
    let rows = ss_tcp(&["-tan"]);
    UPSTREAMS
        .iter()
        .map(|u| {
            let mine: Vec<SsTcpRow> = rows
                .iter()
                .filter(|r| {
                    r.peer == *u && r.local.rsplit_once(':').map(|(ip, _)| ip) == Some(SOURCE)
                })
                .cloned()
                .collect();
            ((*u).to_owned(), count_states(&mine))
        })
        .collect()
}

/// Sends [`SPREAD_BATCHES`] batches of [`SPREAD_BATCH`] sequential
/// requests on one keep-alive client connection; after each, once every
/// upstream connection has reached TIME_WAIT, compares the agent's three
/// pools with `ss`: each holds a third of the requests in TIME_WAIT, its
/// available is 1000 minus that, and none reaches 0.
fn spread_in_batches(scraper: &mut Scraper, alive: &mut dyn FnMut()) {
    let started = Instant::now();
    let (g, m) = measure(scraper, spread_truth);
    assert!(g.values().all(BTreeMap::is_empty), "{g:?}");
    for u in UPSTREAMS {
        assert_eq!(PoolFigures::read(&m, SOURCE, u), None, "a pool toward {u}");
    }
    let mut client = HttpClient::new(PROXY);
    let mut ok = 0u64;
    let mut history = Vec::new();
    for batch in 1..=SPREAD_BATCHES {
        assert!(
            started.elapsed() < SPREAD_LIMIT,
            "{SPREAD_LIMIT:?} passed before batch {batch}"
        );
        for _ in 0..SPREAD_BATCH {
            let r = client
                .get("/")
                .unwrap_or_else(|e| panic!("request #{}: {e}", ok + 1));
            assert_eq!(
                r.status,
                200,
                "request #{} (pools so far: {history:?})",
                ok + 1
            );
            ok += 1;
        }
        alive();
        let per_pool = ok / UPSTREAMS.len() as u64;
        wait_for(
            &format!("{per_pool} TIME_WAIT and nothing else toward each upstream"),
            Duration::from_secs(5),
            || {
                let g = spread_truth();
                let done = g.values().all(|c| {
                    c.get("TIME-WAIT").copied() == Some(per_pool)
                        && c.values().sum::<u64>() == per_pool
                });
                if done { Ok(()) } else { Err(format!("{g:?}")) }
            },
        );
        let (g, m) = measure(scraper, spread_truth);
        let mut row = Vec::new();
        for u in UPSTREAMS {
            let f = PoolFigures::read(&m, SOURCE, u)
                .unwrap_or_else(|| panic!("no pool toward {u} after {ok} requests"));
            let ss_tw = g[u].get("TIME-WAIT").copied().unwrap_or(0);
            assert_eq!(
                (f.time_wait, f.established, f.other),
                (ss_tw as f64, 0.0, 0.0),
                "pool toward {u}, agent vs ss, after {ok} requests"
            );
            assert_eq!(ss_tw, per_pool, "a third of the requests toward {u}");
            assert_eq!(
                f.available,
                (LIMIT - per_pool) as f64,
                "available toward {u} after {ok} requests"
            );
            assert!(f.available > 0.0, "pool toward {u} exhausted");
            row.push((f.time_wait, f.available));
        }
        println!(
            "after {ok:4} requests (all 200): (TIME_WAIT, available) per pool {}: {row:?}",
            UPSTREAMS.join(", ")
        );
        history.push((ok, row));
    }
    assert_eq!(ok, SPREAD_BATCH * SPREAD_BATCHES);
    assert!(ok > LIMIT && ok < UPSTREAMS.len() as u64 * LIMIT);
    assert_eq!(client.connects, 1, "the load client kept one connection");
    let (_, m) = measure(scraper, spread_truth);
    let per_pool = ok / UPSTREAMS.len() as u64;
    let worst = m.value("sockscope_ephemeral_ports_usage_ratio_max", &[]);
    assert_eq!(worst, per_pool as f64 / LIMIT as f64, "usage_ratio_max");
    // Three upstream pools, the client's pool toward the proxy and the
    // scrape connection's toward the agent.
    let mut want: BTreeSet<String> = UPSTREAMS.iter().map(|u| (*u).to_owned()).collect();
    want.extend([PROXY.to_owned(), AGENT_ADDR.to_owned()]);
    assert_eq!(pool_destinations(&m), want);
    assert_eq!(m.value("sockscope_ephemeral_ports_pools", &[]), 5.0);
    println!(
        "{ok} requests, no 502, in {:.2?}: {per_pool} TIME_WAIT per pool, \
         available {} each, usage_ratio_max {worst}",
        started.elapsed(),
        LIMIT - per_pool
    );
}
