//! Per-listener drops against `ss -tlm`, in a private network namespace.
//!
//! A listener that never calls `accept()` (backlog 2: its queue holds 3)
//! and 40 non-blocking clients: the handshakes beyond the queue are
//! dropped, and the clients' SYN retransmits are dropped again, each
//! counted in the listener's `sk_drops` (`tcp_listendrop()`).
//! `sockscope_listen_queue_drops_total` equals the `d` of its `skmem:(…)`
//! in `ss -tlm`, read before and after the same census; a busy listener
//! beside it, which accepts 40 clients, stays at 0. The namespace's
//! `ListenDrops` is at least the stuck listener's share (the kernel counts
//! a final-ACK drop twice in `sk_drops`, once in `ListenDrops`).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::agent::Agent;
use common::netns::{run_in_netns, setup_netns};
use common::process::run_ok;
use common::scrape::{Scraper, measure};
use common::truth::netstat_tcpext;
use common::wait::wait_for;

const STUCK: &str = "127.0.0.1:7400";
const BUSY: &str = "127.0.0.1:7401";

/// The `d` of `addr`'s listener in `ss -tlmn` (`skmem:(…,d51)`).
fn ss_drops(addr: &str) -> u64 {
    let out = run_ok(
        "ss",
        &[
            "-tlmnH",
            "sport",
            "=",
            &format!(":{}", addr.rsplit_once(':').unwrap().1),
        ],
    );
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if l.split_whitespace().any(|w| w == addr) {
            let skmem = lines
                .next()
                .unwrap_or_else(|| panic!("no skmem line: {out}"));
            let d = skmem
                .trim()
                .trim_start_matches("skmem:(")
                .trim_end_matches(')')
                .split(',')
                .find_map(|f| f.strip_prefix('d'))
                .unwrap_or_else(|| panic!("no d… in {skmem}"));
            return d.parse().unwrap();
        }
    }
    panic!("{addr} not in ss -tlm: {out}");
}

#[test]
#[ignore = "needs root (unshare -n) and iproute2: ./scripts/test runs it"]
fn netns_listen_drops_match_ss() {
    run_in_netns("netns_listen_drops_match_ss", || {
        setup_netns(&[]);
        let mut agent = Agent::spawn(&[]);
        let mut scraper = Scraper::connect(&mut agent);

        // The stuck listener: backlog 2, never accepts.
        let stuck =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        stuck
            .bind(&STUCK.parse::<SocketAddr>().unwrap().into())
            .unwrap();
        stuck.listen(2).unwrap();
        // The busy listener: accepts everything.
        let busy = TcpListener::bind(BUSY).unwrap();
        let accepter = std::thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..40 {
                held.push(busy.accept().unwrap().0);
            }
            (busy, held)
        });
        let busy_clients: Vec<TcpStream> =
            (0..40).map(|_| TcpStream::connect(BUSY).unwrap()).collect();
        let (busy, accepted) = accepter.join().unwrap();
        assert_eq!(accepted.len(), 40);

        let labels = |l: &'static str| [("proto", "tcp"), ("listener", l)];
        let mut previous = (0u64, 0.0f64);
        for round in 1..=2 {
            // 40 non-blocking clients; the queue (3 at most) takes what it
            // has room for, the rest are dropped, and again at each SYN
            // retransmit (1 s later). Then they close: no more drops.
            let before = ss_drops(STUCK);
            let clients: Vec<socket2::Socket> = (0..40)
                .map(|_| {
                    let c =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    c.set_nonblocking(true).unwrap();
                    let _ = c.connect(&STUCK.parse::<SocketAddr>().unwrap().into());
                    c
                })
                .collect();
            wait_for("SYN retransmits dropped", Duration::from_secs(10), || {
                let d = ss_drops(STUCK);
                if d >= before + 2 * 37 {
                    Ok(())
                } else {
                    Err(format!("d{d}"))
                }
            });
            drop(clients);
            let ((stuck_d, busy_d), m) =
                measure(&mut scraper, || (ss_drops(STUCK), ss_drops(BUSY)));
            let got = m.value("sockscope_listen_queue_drops_total", &labels(STUCK));
            let busy_got = m.value("sockscope_listen_queue_drops_total", &labels(BUSY));
            println!(
                "round {round}: stuck: ss d{stuck_d}, agent {got}; busy: ss d{busy_d}, agent {busy_got}; namespace ListenDrops {}",
                netstat_tcpext("ListenDrops")
            );
            assert_eq!(
                got, stuck_d as f64,
                "the stuck listener's drops equal ss -tlm's d"
            );
            assert_eq!(
                (busy_d, busy_got),
                (0, 0.0),
                "the busy listener dropped nothing"
            );
            assert!(stuck_d > previous.0 && got > previous.1, "both grew");
            previous = (stuck_d, got);
        }
        drop((busy_clients, accepted, stuck, busy));
        agent.assert_running();
    });
}
