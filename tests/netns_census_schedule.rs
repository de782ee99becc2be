//! The census schedule of the agent (`--census.*`), in a private network
//! namespace: between censuses every poll still samples the listeners
//! (accept queues follow `ss` at once) while the census figures stay those
//! of the latest census; `--census.max-interval` bounds the gap;
//! `--census.cpu-budget-ratio 1` takes a census on every poll.
//!
//! Needs root (`unshare -n`) and `ss`; marked `#[ignore]`: a plain `cargo test`
//! reports it ignored, `./scripts/test` runs it (`common/prereq.rs`).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::netns::{run_in_netns, setup_netns};
use common::scrape::{Scraper, measure};
use common::truth::{assert_tcp_states, count_states, ss_tcp};
use common::wait::now_unix;
use socket2::{Domain, Socket, Type};

const QUEUE_ADDR: &str = "127.0.0.1:8080";
const BACKLOG: i32 = 8;
const CLIENTS: usize = 5;

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_census_schedule() {
    run_in_netns("netns_census_schedule", census_schedule);
}

/// Recv-Q of the listener on `QUEUE_ADDR` per `ss -ltn`.
fn ss_queue() -> Option<u64> {
    ss_tcp(&["-ltn"])
        .into_iter()
        .find(|r| r.local == QUEUE_ADDR)
        .map(|r| r.recv_q)
}

fn census_schedule() {
    setup_netns(&[]);

    // A census so costly for its budget that only --census.max-interval
    // (1 h) would bring the next: after the first poll, listener ticks only.
    let mut agent = Agent::spawn(&[
        "--census.cpu-budget-ratio",
        "0.000000001",
        "--census.max-interval",
        "1h",
    ]);
    let mut scraper = Scraper::connect(&mut agent);
    let first = scraper.scrape();
    let census = first.value("sockscope_census_timestamp_seconds", &[]);
    let interval = first.value("sockscope_census_interval_seconds", &[]);
    assert_eq!(interval, 3600.0, "capped by --census.max-interval");
    let established = first.value(
        "sockscope_tcp_sockets",
        &[("family", "ipv4"), ("state", "established")],
    );

    // A listener that never accepts, and CLIENTS queued connections.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&QUEUE_ADDR.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(BACKLOG).unwrap();
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(QUEUE_ADDR).unwrap())
        .collect();
    assert_eq!(ss_queue(), Some(CLIENTS as u64), "ss: the queue is full");

    let t = now_unix();
    let m = scraper.scrape_until("the new listener's queue", Duration::from_secs(5), |m| {
        m.get("sockscope_last_poll_timestamp_seconds", &[])
            .is_some_and(|p| p > t)
    });
    let row = m.listener("tcp", QUEUE_ADDR);
    println!("between censuses: {row:?}");
    assert_eq!(row.length, Some(CLIENTS as f64), "queue = ss Recv-Q");
    assert_eq!(row.limit, Some(f64::from(BACKLOG)), "limit = backlog");
    assert_eq!(
        m.value("sockscope_census_timestamp_seconds", &[]),
        census,
        "no census ran"
    );
    assert_eq!(
        m.value(
            "sockscope_tcp_sockets",
            &[("family", "ipv4"), ("state", "established")],
        ),
        established,
        "census figures are those of the census, without the {} new sockets",
        2 * CLIENTS
    );
    // Both families' listeners in one dump (the kernel serves it: the
    // census's `inet_diag` source is up).
    for s in ["inet_diag_listen", "unix_diag_listen"] {
        assert_eq!(
            m.get("sockscope_source_up", &[("source", s)]),
            Some(1.0),
            "{s}"
        );
    }
    assert_eq!(
        m.get("sockscope_source_up", &[("source", "inet_diag")]),
        Some(1.0),
        "the census's sources are carried"
    );
    drop(scraper);
    drop(agent);

    // --census.max-interval bounds the time between censuses.
    let mut agent = Agent::spawn(&[
        "--census.cpu-budget-ratio",
        "0.000000001",
        "--census.max-interval",
        "300ms",
    ]);
    let mut scraper = Scraper::connect(&mut agent);
    let mut censuses = Vec::new();
    let start = Instant::now();
    while censuses.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "fewer than 3 censuses in 10 s: {censuses:?}"
        );
        let c = scraper
            .scrape_until("a new census", Duration::from_secs(5), |m| {
                let c = m.value("sockscope_census_timestamp_seconds", &[]);
                censuses.last().is_none_or(|&l| c > l)
            })
            .value("sockscope_census_timestamp_seconds", &[]);
        censuses.push(c);
    }
    println!("censuses at {censuses:?}");
    for w in censuses.windows(2) {
        // Never early by more than a tenth of a poll (10 ms).
        assert!(w[1] - w[0] >= 0.29, "censuses {:.3} s apart", w[1] - w[0]);
    }
    drop(scraper);
    drop(agent);

    // A census on every poll: the census figures follow ss at once.
    let mut agent = Agent::spawn(&["--census.cpu-budget-ratio", "1"]);
    let mut scraper = Scraper::connect(&mut agent);
    let (truth, m) = measure(&mut scraper, || count_states(&ss_tcp(&["-tan", "-4"])));
    assert_eq!(
        m.value("sockscope_census_timestamp_seconds", &[]),
        m.value("sockscope_last_poll_timestamp_seconds", &[]),
        "every poll is a census"
    );
    assert!(
        m.get("sockscope_source_up", &[("source", "inet_diag_listen")])
            .is_none(),
        "no listener-only dump"
    );
    assert_tcp_states(&m, "ipv4", &truth);
    drop(clients);
}
