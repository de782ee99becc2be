//! The agent's exhaustion forecast against what the kernel then does.
//!
//! Each test runs in a private network namespace with a 500-port range
//! (capacity without TIME_WAIT reuse: 500 ports / 60 s = 8.3 connections a
//! second toward one destination), TCP timestamps on, and a client that
//! closes first (its side of every connection ends in TIME_WAIT) toward a
//! local server, at a paced rate ([`common::churn`]). The agent runs with
//! its default settings; its `sockscope_ephemeral_ports_exhaustion_seconds`
//! of the loaded pool is read over one keep-alive scrape connection:
//! - at 1.5× and 3× capacity from an idle pool with `tcp_tw_reuse` 0, the
//!   forecast read 10 s into the load is within 25 % of the time the load
//!   then takes to hit `EADDRNOTAVAIL`;
//! - under a steady load at half the capacity for 75 s (longer than
//!   TIME_WAIT's 60 s), every scrape says `+Inf` (or more than 10 minutes);
//! - with `tcp_tw_reuse` 2 (the default: loopback only) at 3× capacity the
//!   kernel takes over TIME_WAIT sockets older than 1 s: no `connect()`
//!   fails though more connections are made than the range has ports, and
//!   the forecast says `+Inf` throughout.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::churn::{churn, client_closes_first_server};
use common::metrics::Metrics;
use common::netns::{run_in_netns, setup_port_range_netns};
use common::scrape::Scraper;

const SERVER: &str = "127.0.0.1:7100";
const RANGE: &str = "40000 40499";
const PORTS: f64 = 500.0;
/// Connections a second the pool sustains without reuse.
const CAPACITY: f64 = PORTS / 60.0;

fn forecast(m: &Metrics) -> Option<f64> {
    m.get(
        "sockscope_ephemeral_ports_exhaustion_seconds",
        &[("local_ip", "127.0.0.1"), ("destination", SERVER)],
    )
}

/// Starts the world: sysctls, the server, the agent and its scraper.
fn world(tw_reuse: &str) -> (Agent, Scraper, std::net::SocketAddr) {
    assert_eq!(setup_port_range_netns(RANGE, tw_reuse), PORTS as u64);
    let server = client_closes_first_server(SERVER);
    let mut agent = Agent::spawn(&[]);
    let scraper = Scraper::connect(&mut agent);
    (agent, scraper, server)
}

/// A constant load of `factor` × capacity from an idle pool: the forecast
/// read 10 s in against the time the load then takes to run out.
fn accuracy(factor: f64) {
    let (mut agent, mut scraper, server) = world("0");
    let rate = factor * CAPACITY;
    let stop = AtomicBool::new(false);
    let (load, read) = std::thread::scope(|s| {
        let load = s.spawn(|| churn(server, |_| rate, Duration::from_secs(120), true, &stop));
        // Read the forecast 10 s into the load (the load thread starts
        // its clock as it is spawned; ours starts here, within a
        // millisecond of it).
        let t0 = Instant::now();
        let mut read = None;
        while read.is_none() && !load.is_finished() {
            let m = scraper.scrape();
            if t0.elapsed() >= Duration::from_secs(10) {
                read = Some((t0.elapsed(), forecast(&m)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (load.join().unwrap(), read)
    });
    let (at, f) = read.expect("a read 10 s in, before the pool ran out");
    let f = f.expect("a forecast for the loaded pool");
    let failed = load
        .first_eaddrnotavail
        .expect("the load ran the pool out within 120 s");
    let left = failed.as_secs_f64() - at.as_secs_f64();
    println!(
        "{factor}x capacity ({rate:.1}/s): forecast at {at:.1?} = {f:.1} s; EADDRNOTAVAIL {left:.1} s later, after {} connects (error {:+.0} %)",
        load.connects,
        (f - left) / left * 100.0
    );
    assert!(
        (f - left).abs() <= 0.25 * left,
        "forecast {f:.1} s, the pool ran out {left:.1} s later"
    );
    agent.assert_running();
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_forecast_at_1_5x_capacity() {
    run_in_netns("netns_forecast_at_1_5x_capacity", || accuracy(1.5));
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_forecast_at_3x_capacity() {
    run_in_netns("netns_forecast_at_3x_capacity", || accuracy(3.0));
}

/// Runs `rate` for `secs` and asserts every scrape meanwhile (about 10 a
/// second) forecasts no exhaustion within 10 minutes; returns the load's
/// result and the number of scrapes that saw the pool.
fn never_runs_out(
    scraper: &mut Scraper,
    server: std::net::SocketAddr,
    rate: f64,
    secs: u64,
) -> (common::churn::Churn, u64) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let load = s.spawn(|| churn(server, |_| rate, Duration::from_secs(secs), true, &stop));
        let mut seen = 0;
        while !load.is_finished() {
            let m = scraper.scrape();
            if let Some(f) = forecast(&m) {
                seen += 1;
                assert!(
                    f > 600.0,
                    "forecast {f} s for a load that never runs out\n{}",
                    m.text
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (load.join().unwrap(), seen)
    })
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_forecast_steady_half_capacity() {
    run_in_netns("netns_forecast_steady_half_capacity", || {
        let (mut agent, mut scraper, server) = world("0");
        let (load, seen) = never_runs_out(&mut scraper, server, 0.5 * CAPACITY, 75);
        println!(
            "half capacity for 75 s: {} connects, {seen} scrapes, all +Inf",
            load.connects
        );
        assert_eq!(load.first_eaddrnotavail, None);
        assert!(seen > 300, "the pool was seen by {seen} scrapes");
        agent.assert_running();
    });
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_forecast_with_tw_reuse() {
    run_in_netns("netns_forecast_with_tw_reuse", || {
        let (mut agent, mut scraper, server) = world("2");
        let (load, seen) = never_runs_out(&mut scraper, server, 3.0 * CAPACITY, 30);
        println!(
            "tcp_tw_reuse=2, 3x capacity for 30 s: {} connects through {PORTS} ports, none failed; {seen} scrapes, all +Inf",
            load.connects
        );
        assert_eq!(
            load.first_eaddrnotavail, None,
            "the kernel reused TIME_WAIT"
        );
        assert!(
            load.connects as f64 > 1.2 * PORTS,
            "more connects ({}) than ports: TIME_WAIT taken over",
            load.connects
        );
        assert!(seen > 100);
        agent.assert_running();
    });
}
