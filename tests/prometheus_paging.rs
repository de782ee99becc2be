//! The promise, live: with the shipped rules and intervals, a port alert is
//! firing in a real Prometheus *before* the first `connect()` fails with
//! `EADDRNOTAVAIL`, and none fires for a pool that is not running out.
//!
//! Each test, in a private network namespace with a 500-port range and
//! `tcp_tw_reuse` 0 (capacity: 500 ports / 60 s = 8.3 new connections a
//! second toward one destination), runs the agent with its default settings
//! and Debian's Prometheus loaded with
//! - `deploy/prometheus/scrape.yml`'s global settings and its `sockscope`
//!   job (5s scrape interval) as shipped, the target set to the agent's
//!   address (the `sockscope-pods` job is left out: Debian's Prometheus is
//!   built without Kubernetes discovery);
//! - `deploy/prometheus/alerts.yml` and `recording.yml` byte for byte (read
//!   in place: no `for:` or interval edited).
//!
//! A client that closes first churns connections toward a local server at
//! a paced rate ([`common::churn`]) while a watcher polls Prometheus's
//! `/api/v1/alerts` every 200 ms. Cases: a slow ramp (the pool runs out
//! after about 3 minutes), a fast ramp (about 25 s after the load starts),
//! a step from a calm load to 2.5× capacity (about 23 s after the step):
//! `SockscopeEphemeralPortsExhaustionImminent` or `...Exhausted` is firing
//! for the loaded pool before the first `EADDRNOTAVAIL`, and the lead
//! time is printed (TESTING.md records it). A steady load at 60 % of
//! capacity for two minutes: no port alert is pending or firing, for any
//! pool (the agent's own scrape traffic included).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::agent::{AGENT_ADDR, Agent};
use common::churn::{Churn, churn, client_closes_first_server};
use common::netns::{run_in_netns, setup_port_range_netns};
use common::prereq;
use common::process::{LabProcess, wait_listening};
use common::prometheus::{PROM, api, encode, shipped_config};
use common::truth::tcp_listening;
use common::wait::wait_for;

const SERVER: &str = "127.0.0.1:7100";
const RANGE: &str = "40000 40499";
const PORTS: f64 = 500.0;
const CAPACITY: f64 = PORTS / 60.0;
const PORT_ALERTS: [&str; 3] = [
    "SockscopeEphemeralPortsExhaustionImminent",
    "SockscopeEphemeralPortsExhausted",
    "SockscopeEphemeralPortsNearExhaustion",
];

/// A port alert seen by the watcher: (when, alertname, destination, state).
type Sighting = (Instant, String, String, String);
/// What the watcher saw.
type Seen = Arc<Mutex<Vec<Sighting>>>;

/// Polls `/api/v1/alerts` every 200 ms until `stop`, recording every port
/// alert it sees.
fn watch(stop: Arc<AtomicBool>, seen: Seen) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let alerts = api("/api/v1/alerts");
            let now = Instant::now();
            for a in alerts["alerts"].as_array().into_iter().flatten() {
                let l = &a["labels"];
                let name = l["alertname"].as_str().unwrap_or_default();
                if PORT_ALERTS.contains(&name) {
                    seen.lock().unwrap().push((
                        now,
                        name.to_owned(),
                        l["destination"].as_str().unwrap_or_default().to_owned(),
                        a["state"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            // Polling cadence, not synchronisation.
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// The world of one case, up and scraped; runs `rate` until the pool runs
/// out (or `limit`), and returns the load's result, the alerts seen and
/// the most TIME_WAIT sockets Prometheus recorded in the pool.
fn run_case(rate: impl Fn(f64) -> f64, limit: Duration) -> (Churn, Vec<Sighting>, f64) {
    prereq::tool("prometheus");
    assert_eq!(setup_port_range_netns(RANGE, "0"), PORTS as u64);
    let server = client_closes_first_server(SERVER);
    let mut agent = Agent::spawn(&[]);
    wait_listening(
        &format!("the agent on {AGENT_ADDR}"),
        || tcp_listening(AGENT_ADDR),
        || agent.assert_running(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut prometheus = LabProcess::prometheus(dir.path(), &shipped_config(AGENT_ADDR), PROM);
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        ureq::get(&format!("http://{PROM}/-/ready"))
            .call()
            .map(drop)
            .map_err(|e| e.to_string())
    });
    // The agent scraped (its limit recorded), and the rules loaded as shipped.
    wait_for("the agent scraped", Duration::from_secs(60), || {
        let q = api("/api/v1/query?query=sockscope_ephemeral_ports_limit");
        let r = &q["result"];
        if r.as_array().is_some_and(|a| a.len() == 1) && r[0]["value"][1] == "500" {
            Ok(())
        } else {
            Err(format!("{r}"))
        }
    });
    let groups = api("/api/v1/rules");
    let ports = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "sockscope.ephemeral-ports")
        .expect("the port rule group loaded");
    assert_eq!(ports["interval"], 5.0, "{ports}");

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let watcher = watch(stop.clone(), seen.clone());
    let never = AtomicBool::new(false);
    let load = churn(server, rate, limit, true, &never);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    agent.assert_running();
    prometheus.assert_running();
    let q = api(&format!(
        "/api/v1/query?query={}",
        encode(&format!(
            "max_over_time(sockscope_ephemeral_ports_used{{destination=\"{SERVER}\",state=\"time_wait\"}}[10m])"
        ))
    ));
    let peak_tw: f64 = q["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("the pool's TIME_WAIT in Prometheus: {q}"))
        .parse()
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    (load, seen, peak_tw)
}

/// Asserts a port alert on the loaded pool was firing before the first
/// `EADDRNOTAVAIL`, and prints the lead time.
fn paged_before(case: &str, rate: impl Fn(f64) -> f64, limit: Duration) {
    let (load, seen, _) = run_case(rate, limit);
    let failed = load
        .first_eaddrnotavail
        .unwrap_or_else(|| panic!("{case}: the pool did not run out within {limit:?}"));
    let failed_at = load.started + failed;
    let first = seen
        .iter()
        .filter(|(_, name, dest, state)| {
            dest == SERVER && state == "firing" && name != "SockscopeEphemeralPortsNearExhaustion"
        })
        .min_by_key(|(at, ..)| *at);
    let Some((fired_at, name, ..)) = first else {
        panic!("{case}: no port alert fired; seen: {seen:?}")
    };
    let lead = failed_at.saturating_duration_since(*fired_at);
    println!(
        "{case}: first EADDRNOTAVAIL {:.1} s into the load after {} connects; {name} firing {:.1} s into it: lead {:.1} s",
        failed.as_secs_f64(),
        load.connects,
        fired_at
            .saturating_duration_since(load.started)
            .as_secs_f64(),
        lead.as_secs_f64()
    );
    assert!(
        *fired_at < failed_at,
        "{case}: {name} fired {:.1} s after the first EADDRNOTAVAIL",
        fired_at.saturating_duration_since(failed_at).as_secs_f64()
    );
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and prometheus: ./scripts/test runs it"]
fn prometheus_pages_before_a_slow_ramp_runs_out() {
    run_in_netns("prometheus_pages_before_a_slow_ramp_runs_out", || {
        // 2/s rising by 0.045/s each second: the last 60 s reach the
        // capacity (500 ports) after about 3 minutes.
        paged_before("slow ramp", |t| 2.0 + 0.045 * t, Duration::from_secs(300));
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and prometheus: ./scripts/test runs it"]
fn prometheus_pages_before_a_fast_ramp_runs_out() {
    run_in_netns("prometheus_pages_before_a_fast_ramp_runs_out", || {
        // From 0, rising by 1.6/s each second: 500 connects in 25 s.
        paged_before("fast ramp", |t| 1.6 * t, Duration::from_secs(90));
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and prometheus: ./scripts/test runs it"]
fn prometheus_pages_before_a_step_runs_out() {
    run_in_netns("prometheus_pages_before_a_step_runs_out", || {
        // 1/s for 20 s, then 2.5x capacity (20.8/s): out about 23 s later.
        paged_before(
            "step to 2.5x capacity",
            |t| if t < 20.0 { 1.0 } else { 2.5 * CAPACITY },
            Duration::from_secs(120),
        );
    });
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and prometheus: ./scripts/test runs it"]
fn prometheus_quiet_for_a_steady_pool_at_60_percent() {
    run_in_netns("prometheus_quiet_for_a_steady_pool_at_60_percent", || {
        let (load, seen, tw) = run_case(|_| 0.6 * CAPACITY, Duration::from_secs(120));
        println!(
            "steady 60 % of capacity for 120 s: {} connects, port alerts seen: {seen:?}",
            load.connects
        );
        assert_eq!(load.first_eaddrnotavail, None);
        assert!(
            seen.is_empty(),
            "no port alert, pending or firing: {seen:?}"
        );
        println!("TIME_WAIT in the pool at its peak: {tw} of {PORTS} ports");
        assert!(tw > 0.5 * PORTS, "the load filled {tw} ports: a real load");
    });
}
