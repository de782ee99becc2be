//! A paced loopback connect load for bench/ebpf.sh: `RATE` connects a
//! second for `SECONDS`, each accepted by a listener thread and closed with
//! a reset (`SO_LINGER` 0: no TIME_WAIT, so the census stays the same size
//! whatever the rate and only the event source's cost differs), from two
//! threads paced in 0.5 ms slices. Prints the connects done and the rate
//! reached.
//!
//!   cargo run --release --example connect_load -- RATE SECONDS [ADDR]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: connect_load RATE SECONDS [ADDR]";
    let rate: f64 = args.get(1).expect(usage).parse().expect(usage);
    let seconds: f64 = args.get(2).expect(usage).parse().expect(usage);
    let addr: SocketAddr = args
        .get(3)
        .map_or("127.0.0.1:7300", String::as_str)
        .parse()
        .expect(usage);

    // A deep backlog (somaxconn is 4096 in a fresh namespace): an
    // overflowing accept queue drops SYNs, and a client whose SYN was
    // dropped waits 1 s for its retransmit, which caps the rate.
    let l =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    l.set_reuse_address(true).expect("SO_REUSEADDR");
    l.bind(&addr.into()).expect("bind");
    l.listen(4096).expect("listen");
    let listener: TcpListener = l.into();
    std::thread::spawn(move || {
        loop {
            match listener.accept() {
                Ok((s, _)) => drop(s),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
    });

    // Two pacing threads (one could not reach 20k/s here), each with
    // half the rate; a thread that falls behind catches up without bound
    // on the rate, and the rate reached is reported, not assumed.
    let total = (rate * seconds).round() as u64;
    let threads = 2u64;
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let share = total / threads + u64::from(t < total % threads);
            let rate = rate / threads as f64;
            std::thread::spawn(move || {
                let mut done = 0u64;
                while done < share {
                    let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(share);
                    if done >= due {
                        std::thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                    while done < due {
                        let s = socket2::Socket::new(
                            socket2::Domain::IPV4,
                            socket2::Type::STREAM,
                            None,
                        )
                        .expect("socket");
                        s.connect(&addr.into()).expect("connect");
                        s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
                        drop(s);
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let done: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let took = start.elapsed().as_secs_f64();
    println!(
        "{done} connects in {took:.3} s: {:.0}/s",
        done as f64 / took
    );
}
