//! Seed 000: ephemeral-port exhaustion through a reverse proxy, with the
//! lab proxy (`sockscope proxy`) and with a real nginx, each in its own
//! private network namespace with a 1000-port range
//! (`ip_local_port_range` = 40000 40999) and `tcp_tw_reuse` = 0.
//!
//! The upstream is `sockscope upstream --behavior keepalive` on
//! 127.0.0.1:7100: an HTTP/1.1 keep-alive server that never closes first.
//! So TIME_WAIT lands where the seed saw it, on the proxy's side, exactly
//! when the proxy closes its upstream connection after each response:
//! - without a keep-alive pool (`--keepalive 0`; nginx with
//!   `proxy_http_version 1.1` and no `keepalive` in the upstream block)
//!   every request costs one port toward 127.0.0.1:7100 for 60 s, the
//!   1001st `connect()` fails with EADDRNOTAVAIL and the proxy answers 502
//!   (`connect() to 127.0.0.1:7100 failed (99: Cannot assign requested
//!   address)`). The load is driven in batches of 100 and the agent read
//!   after each one, which proves the order deterministically: the agent's
//!   `sockscope_ephemeral_ports_available` reaches 0 while every response
//!   so far was 200, and only the next request gets a 502;
//! - with a pool of 16 and at most 8 concurrent clients (a pool smaller
//!   than the concurrency would churn, FIELD-NOTES), thousands of requests
//!   reuse a handful of connections: no 502, almost no TIME_WAIT.
//!
//! The load client keeps its own connection(s) to the proxy alive: they
//! take ports of the same range, but toward 127.0.0.1:8081, a different
//! pool (ports are shared across destinations), as does the agent's scrape
//! connection toward 127.0.0.1:9977.
//!
//! Needs root (`unshare -n`), `ss` and, for the nginx tests, nginx;
//! marked `#[ignore]`; `./scripts/test` runs it (`common/prereq.rs`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::agent::start_agent;
use common::http::HttpClient;
use common::load::concurrent_load;
use common::metrics::{Metrics, PoolFigures};
use common::netns::{allowed_cpus, pin_to_nth_cpu, run_in_netns, setup_port_range_netns};
use common::nginx::{NGINX_EVENTS, Nginx, nginx_proxy_http, run_in_netns_with_nginx};
use common::process::LabProcess;
use common::scrape::{Scraper, measure};
use common::truth::ss_pool;
use common::wait::wait_for;

const UPSTREAM: &str = "127.0.0.1:7100";
const PROXY: &str = "127.0.0.1:8081";
/// The local address of every proxy → upstream connection.
const SOURCE: &str = "127.0.0.1";
const RANGE: &str = "40000 40999";
/// Ports `connect()` may take toward one destination.
const LIMIT: u64 = 1000;
/// Requests per batch of the exhaustion runs.
const BATCH: u64 = 100;
/// Time limit of a batched run (about 2 s here): the first TIME_WAIT must
/// outlive the last check, and a TIME_WAIT lasts 60 s.
const BATCHED_RUN_LIMIT: Duration = Duration::from_secs(45);
/// The line both proxies log when `connect()` toward the upstream fails.
const EADDRNOTAVAIL_LOG: &str =
    "connect() to 127.0.0.1:7100 failed (99: Cannot assign requested address)";

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn seed000_proxy_keepalive_0_exhausts() {
    run_in_netns("seed000_proxy_keepalive_0_exhausts", || {
        let started = Instant::now();
        setup(0);
        let (mut agent, mut scraper) = start_agent(&[]);
        let mut upstream = start_upstream();
        let mut proxy = start_proxy("0");

        let run = exhaust_in_batches(&mut scraper, &mut || {
            agent.assert_running();
            upstream.assert_running();
            proxy.assert_running();
        });
        run.assert_order();
        after_exhaustion(&mut scraper);
        proxy.assert_running();
        // Last, so that a wrong log line does not hide the figures above.
        assert_connect_failure_logged("the proxy's log", &proxy.log());
        println!("total {:.2?}", started.elapsed());
    });
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn seed000_proxy_keepalive_16_no_exhaustion() {
    run_in_netns("seed000_proxy_keepalive_16_no_exhaustion", || {
        let started = Instant::now();
        setup(1);
        let (mut agent, mut scraper) = start_agent(&[]);
        let mut upstream = start_upstream();
        let mut proxy = start_proxy("16");
        // The proxy opens an upstream connection only for a request that
        // finds none idle, so 8 clients keep about 8 open, and closes one
        // only when its idle cache (16 per upstream) is full, which takes
        // 17 open: no TIME_WAIT is expected (0 seen). Allow 16 (the pool
        // size) and 16 + 8 ports held (a full idle pool plus 8 in flight).
        let worst = keepalive_run(&mut scraper, 16.0, (16 + 8) as f64);
        agent.assert_running();
        upstream.assert_running();
        proxy.assert_running();
        println!("worst pool figures during the load: {worst:?}");
        println!("total {:.2?}", started.elapsed());
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and nginx: ./scripts/test runs it"]
fn seed000_nginx_keepalive_0_exhausts() {
    run_in_netns_with_nginx("seed000_nginx_keepalive_0_exhausts", || {
        let started = Instant::now();
        setup(1);
        let (mut agent, mut scraper) = start_agent(&[]);
        let mut upstream = start_upstream();
        // HTTP/1.1 toward the upstream WITHOUT a keepalive pool: nginx
        // closes the upstream connection after each response. With nginx's
        // default `Connection: close` request header the upstream would
        // close too, racing nginx for who closes first (TIME_WAIT on either
        // side); with the header emptied (nginx_proxy_http) the keep-alive
        // upstream never closes first, so every TIME_WAIT lands on nginx's
        // side.
        let mut nginx = Nginx::start(
            NGINX_EVENTS,
            &nginx_proxy_http(PROXY, "upstream u { server 127.0.0.1:7100; }"),
            PROXY,
        );
        let run = exhaust_in_batches(&mut scraper, &mut || {
            agent.assert_running();
            upstream.assert_running();
            nginx.assert_running();
        });
        run.assert_order();
        after_exhaustion(&mut scraper);
        nginx.assert_running();
        let log = nginx.error_log();
        assert_connect_failure_logged("nginx's error_log", &log);
        let line = log.lines().find(|l| l.contains(EADDRNOTAVAIL_LOG)).unwrap();
        assert!(
            line.contains("[crit]") && line.contains("while connecting to upstream"),
            "{line}"
        );
        println!("total {:.2?}", started.elapsed());
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and nginx: ./scripts/test runs it"]
fn seed000_nginx_keepalive_16_no_exhaustion() {
    run_in_netns_with_nginx("seed000_nginx_keepalive_16_no_exhaustion", || {
        let started = Instant::now();
        setup(0);
        let (mut agent, mut scraper) = start_agent(&[]);
        let mut upstream = start_upstream();
        let mut nginx = Nginx::start(
            NGINX_EVENTS,
            &nginx_proxy_http(PROXY, "upstream u { server 127.0.0.1:7100; keepalive 16; }"),
            PROXY,
        );
        // nginx (one worker) opens an upstream connection only when none
        // is idle (so at most 8 with 8 clients) and closes one when it
        // would be the 17th idle one (never here) or after
        // `keepalive_requests` (1000, the upstream block's default)
        // requests on it: at most LOAD / 1000 = 4 TIME_WAIT (0 seen).
        // Allow 16 (the pool size), and 16 + 8 ports held.
        let worst = keepalive_run(&mut scraper, 16.0, (16 + 8) as f64);
        agent.assert_running();
        upstream.assert_running();
        nginx.assert_running();
        println!("worst pool figures during the load: {worst:?}");
        println!("total {:.2?}", started.elapsed());
    });
}

/// The failed `connect()` is logged with its errno, in nginx's words:
/// `connect() to 127.0.0.1:7100 failed (99: Cannot assign requested
/// address)` (the 502s were answered, so the line was written already).
fn assert_connect_failure_logged(what: &str, log: &str) {
    let errno_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connect() to 127.0.0.1:7100 failed (99: "))
        .collect();
    assert!(
        !errno_lines.is_empty(),
        "{what} has no `connect() to 127.0.0.1:7100 failed (99: ...` line:\n{log}"
    );
    println!("{what}: {}", errno_lines[0]);
    assert!(
        errno_lines.iter().any(|l| l.contains(EADDRNOTAVAIL_LOG)),
        "{what} does not log the failure as nginx does ({EADDRNOTAVAIL_LOG:?}); got {:?}",
        errno_lines[0]
    );
}

/// The namespace of every test: a 1000-port range and no TIME_WAIT reuse
/// ([`setup_port_range_netns`]). `tcp_tw_reuse` 0: connect() never takes
/// over a TIME_WAIT port, so a port used toward 7100 comes back only when
/// its TIME_WAIT expires, 60 s later, after the test. With the namespace
/// default 2 (reuse for loopback) a TIME_WAIT older than
/// tcp_tw_reuse_delay (1 s) would be taken over and an exhausted pool
/// would still pass about one connect per port per second: whether and
/// when a 502 came would depend on the machine's speed. As in
/// netns_port_exhaustion, `tcp_rfc1337` 1: a stale ACK reaching a
/// TIME_WAIT must not get it killed by a RST, or ports come back.
fn setup(cpu_index: usize) {
    let cpus = allowed_cpus();
    assert_eq!(setup_port_range_netns(RANGE, "0"), LIMIT);
    // setup_netns pinned the test to the first CPU; tests of this file
    // running in parallel take turns over the CPUs instead.
    pin_to_nth_cpu(&cpus, cpu_index);
}

fn start_upstream() -> LabProcess {
    LabProcess::listening(
        "upstream",
        &["upstream", "--listen", UPSTREAM, "--behavior", "keepalive"],
        UPSTREAM,
    )
}

fn start_proxy(keepalive: &str) -> LabProcess {
    LabProcess::proxy(PROXY, &[UPSTREAM], &["--keepalive", keepalive])
}

/// The agent's and ss's view of the pool toward the upstream after a
/// batch.
#[derive(Debug)]
struct Batch {
    /// Requests answered 200 so far.
    ok: u64,
    /// `ss`: TIME-WAIT sockets toward the upstream.
    ss_time_wait: u64,
    agent: PoolFigures,
}

/// An exhaustion run: the batches, then the first failed request.
struct Exhaustion {
    /// Before any load the agent had no pool toward the upstream.
    batches: Vec<Batch>,
    /// 1-based number of the first request not answered 200, its status.
    first_failure: (u64, u16),
    /// Connections the load client opened to the proxy until then.
    client_connects: u64,
}

/// Sends batches of [`BATCH`] sequential requests on one keep-alive client
/// connection until a request is not answered 200 (bounded: 45 s and
/// [`LIMIT`] + [`BATCH`] requests). After each batch, once every upstream
/// connection of the batch has reached TIME_WAIT, reads `ss` and an agent
/// poll taken after that read, and checks them against each other and
/// against the request count.
fn exhaust_in_batches(scraper: &mut Scraper, alive: &mut dyn FnMut()) -> Exhaustion {
    let started = Instant::now();
    let (g, m) = measure(scraper, || ss_pool(SOURCE, UPSTREAM));
    assert!(
        g.is_empty(),
        "sockets toward {UPSTREAM} before the load: {g:?}"
    );
    assert_eq!(
        PoolFigures::read(&m, SOURCE, UPSTREAM),
        None,
        "a pool toward {UPSTREAM} before the load"
    );
    assert_eq!(
        m.value("sockscope_ephemeral_ports_limit", &[]),
        LIMIT as f64
    );
    let mut client = HttpClient::new(PROXY);
    let mut batches: Vec<Batch> = Vec::new();
    let (mut sent, mut ok) = (0u64, 0u64);
    let first_failure = 'load: loop {
        assert!(
            sent < LIMIT + BATCH && started.elapsed() < BATCHED_RUN_LIMIT,
            "no failure after {sent} requests / {:.2?}: {batches:#?}",
            started.elapsed()
        );
        for _ in 0..BATCH {
            sent += 1;
            let r = client
                .get("/")
                .unwrap_or_else(|e| panic!("request #{sent}: {e}"));
            if r.status != 200 {
                break 'load (sent, r.status);
            }
            assert_eq!(r.body, b"ok\n", "request #{sent}");
            ok += 1;
        }
        alive();
        // The proxy closes each upstream connection after the response;
        // the last ones may still be closing.
        wait_for(
            &format!("{ok} TIME_WAIT and nothing else toward {UPSTREAM}"),
            Duration::from_secs(5),
            || {
                let g = ss_pool(SOURCE, UPSTREAM);
                let tw = g.get("TIME-WAIT").copied().unwrap_or(0);
                if tw == ok && g.values().sum::<u64>() == ok {
                    Ok(())
                } else {
                    Err(format!("{g:?}"))
                }
            },
        );
        let (g, m) = measure(scraper, || ss_pool(SOURCE, UPSTREAM));
        let ss_time_wait = g.get("TIME-WAIT").copied().unwrap_or(0);
        let f = PoolFigures::read(&m, SOURCE, UPSTREAM)
            .unwrap_or_else(|| panic!("no pool toward {UPSTREAM} after {ok} requests"));
        let prev = batches.last().map_or(LIMIT as f64, |b| b.agent.available);
        assert_eq!(
            (f.time_wait, f.established, f.other),
            (ss_time_wait as f64, 0.0, 0.0),
            "agent vs ss after {ok} requests: {g:?}"
        );
        assert_eq!(ss_time_wait, ok, "one TIME_WAIT per request");
        assert_eq!(f.time_wait_reusable, 0.0, "tcp_tw_reuse=0 never reuses");
        assert_eq!(
            f.available,
            (LIMIT - ok) as f64,
            "available after {ok} requests"
        );
        assert_eq!(
            prev - f.available,
            BATCH as f64,
            "available falls by a batch"
        );
        println!(
            "after {ok:4} requests (all 200): TIME_WAIT agent {} / ss {ss_time_wait}, available {}",
            f.time_wait, f.available
        );
        batches.push(Batch {
            ok,
            ss_time_wait,
            agent: f,
        });
    };
    println!(
        "request #{} answered {} ({:.2?} after the first)",
        first_failure.0,
        first_failure.1,
        started.elapsed()
    );
    Exhaustion {
        batches,
        first_failure,
        client_connects: client.connects,
    }
}

impl Exhaustion {
    /// available reached 0 while every response was 200; only the request
    /// after that failed, with a 502; exactly range-size requests passed.
    fn assert_order(&self) {
        let last = self.batches.last().expect("at least one batch");
        let (n, status) = self.first_failure;
        assert_eq!(
            last.agent.available, 0.0,
            "the agent's available before the first failure: {:#?}",
            self.batches
        );
        assert!(
            self.batches[..self.batches.len() - 1]
                .iter()
                .all(|b| b.agent.available > 0.0),
            "{:#?}",
            self.batches
        );
        assert_eq!(
            n,
            last.ok + 1,
            "the first failure is the request right after available hit 0"
        );
        assert_eq!(status, 502, "the first failed request's status");
        assert_eq!(last.ok, LIMIT, "exactly range-size requests passed");
        assert_eq!(last.ss_time_wait, LIMIT);
        assert_eq!(
            self.batches.len() as u64,
            LIMIT / BATCH,
            "{:#?}",
            self.batches
        );
        assert_eq!(
            self.client_connects, 1,
            "the load client kept one connection to the proxy"
        );
        let avail: Vec<(u64, f64)> = self
            .batches
            .iter()
            .map(|b| (b.ok, b.agent.available))
            .collect();
        println!("(requests, available) per batch: {avail:?}; first 502 at request #{n}");
    }
}

/// After the exhaustion: a bounded concurrent burst (8 clients, 200
/// requests, at most 3 s) gets only 502s, since no port comes back within
/// the test; new client connections to the proxy still succeed (another
/// pool). Then the agent still shows the pool full of TIME_WAIT.
fn after_exhaustion(scraper: &mut Scraper) {
    let t = Instant::now();
    let (counts, connects) = concurrent_load(PROXY, 8, 200, Duration::from_secs(3));
    println!(
        "burst after exhaustion: {counts:?} in {:.2?} over {connects} client connections",
        t.elapsed()
    );
    assert_eq!(counts, BTreeMap::from([(502, 200)]), "burst statuses");
    let (g, m) = measure(scraper, || ss_pool(SOURCE, UPSTREAM));
    let f = PoolFigures::read(&m, SOURCE, UPSTREAM).unwrap();
    assert_eq!(g, BTreeMap::from([("TIME-WAIT".to_owned(), LIMIT)]));
    assert_eq!((f.time_wait, f.available), (LIMIT as f64, 0.0));
    assert_eq!(
        m.value("sockscope_ephemeral_ports_usage_ratio_max", &[]),
        1.0
    );
    // The client pool toward the proxy, on the same ports, has room.
    let clients = PoolFigures::read(&m, SOURCE, PROXY).unwrap();
    assert!(clients.available > 0.0, "{clients:?}");
}

/// Worst figures of the pool toward the upstream over a keep-alive run.
#[derive(Debug, Default)]
struct Worst {
    polls: u64,
    time_wait: f64,
    held: f64,
    min_available: f64,
}

/// Requests in the keep-alive runs.
const LOAD: u64 = 4000;
/// Concurrent clients in the keep-alive runs (≤ the pool of 16).
const CLIENTS: usize = 8;

/// [`LOAD`] requests from [`CLIENTS`] keep-alive clients (bounded: 20 s)
/// while the main thread reads every agent poll; asserts no 502, at most
/// `max_time_wait` TIME_WAIT and `max_held` ports held toward the
/// upstream at any poll, and the final figures against `ss`.
fn keepalive_run(scraper: &mut Scraper, max_time_wait: f64, max_held: f64) -> Worst {
    let started = Instant::now();
    let mut worst = Worst {
        min_available: LIMIT as f64,
        ..Worst::default()
    };
    let watch = |m: &Metrics, worst: &mut Worst| {
        worst.polls += 1;
        if let Some(f) = PoolFigures::read(m, SOURCE, UPSTREAM) {
            let held = f.established + f.time_wait + f.other;
            worst.time_wait = worst.time_wait.max(f.time_wait);
            worst.held = worst.held.max(held);
            worst.min_available = worst.min_available.min(f.available);
            assert_eq!(f.available, LIMIT as f64 - held, "{f:?}");
        }
    };
    let (counts, connects) = scraper.scrape_while(
        || concurrent_load(PROXY, CLIENTS, LOAD, Duration::from_secs(20)),
        |m| watch(m, &mut worst),
    );
    let elapsed = started.elapsed();
    println!(
        "{LOAD} requests, {CLIENTS} clients: {counts:?} in {elapsed:.2?} ({:.0} req/s), \
         {connects} client connections, {} agent polls read",
        LOAD as f64 / elapsed.as_secs_f64(),
        worst.polls
    );
    assert_eq!(counts, BTreeMap::from([(200, LOAD)]), "statuses");
    assert!(worst.polls >= 1, "no agent poll during the load");
    let (g, m) = measure(scraper, || ss_pool(SOURCE, UPSTREAM));
    watch(&m, &mut worst);
    let f = PoolFigures::read(&m, SOURCE, UPSTREAM).expect("a pool toward the upstream");
    println!("after the load: ss {g:?}, agent {f:?}");
    let ss = |st: &str| g.get(st).copied().unwrap_or(0) as f64;
    assert_eq!(
        (f.established, f.time_wait),
        (ss("ESTAB"), ss("TIME-WAIT")),
        "agent vs ss"
    );
    assert!(
        f.established >= 1.0,
        "the pool keeps idle connections: {f:?}"
    );
    assert!(
        worst.time_wait <= max_time_wait,
        "TIME_WAIT toward {UPSTREAM} reached {} (> {max_time_wait}): {worst:?}",
        worst.time_wait
    );
    assert!(
        worst.held <= max_held && worst.min_available >= LIMIT as f64 - max_held,
        "ports held toward {UPSTREAM}: {worst:?}"
    );
    worst
}
