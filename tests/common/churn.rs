//! Connection churn toward one pool: a server that lets the client close
//! first (so the client's port sits in TIME_WAIT for 60 s), and a paced
//! client that opens and closes connections at a rate that may change
//! over time, until `connect()` fails with `EADDRNOTAVAIL` or a time limit.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A server on `addr` that accepts, reads to EOF (the client closed) and
/// closes: the client's side of every connection ends in TIME_WAIT.
pub fn client_closes_first_server(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            while s.read(&mut buf).unwrap_or(0) > 0 {}
        }
    });
    local
}

/// What a [`churn`] run saw.
#[derive(Debug, Clone)]
pub struct Churn {
    /// When the load started.
    pub started: Instant,
    /// Connections made (and closed by the client).
    pub connects: u64,
    /// Time from the start to the first `connect()` that failed with
    /// `EADDRNOTAVAIL`, if one did.
    pub first_eaddrnotavail: Option<Duration>,
}

/// Opens and at once closes connections to `server` at `rate(t)` per
/// second (t: seconds since the start), paced every few milliseconds,
/// until `connect()` fails with `EADDRNOTAVAIL` (when `stop_at_failure`),
/// `stop` is set, or `limit` has passed. Any other `connect()` error
/// panics.
pub fn churn(
    server: SocketAddr,
    rate: impl Fn(f64) -> f64,
    limit: Duration,
    stop_at_failure: bool,
    stop: &AtomicBool,
) -> Churn {
    let started = Instant::now();
    let (mut due, mut last_t, mut connects) = (0.0f64, 0.0f64, 0u64);
    let mut first = None;
    loop {
        let t = started.elapsed().as_secs_f64();
        if t >= limit.as_secs_f64() || stop.load(Ordering::Relaxed) {
            break;
        }
        // The connections due by now (the rate integrated by steps).
        due += rate(t).max(0.0) * (t - last_t);
        last_t = t;
        while (connects as f64) < due.floor() {
            match TcpStream::connect(server) {
                Ok(s) => {
                    connects += 1;
                    drop(s); // the client closes first
                }
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    first.get_or_insert(started.elapsed());
                    if stop_at_failure {
                        return Churn {
                            started,
                            connects,
                            first_eaddrnotavail: first,
                        };
                    }
                    // Count it as made: the load goes on at its rate.
                    due -= 1.0;
                }
                Err(e) => panic!("connect #{} to {server}: {e}", connects + 1),
            }
        }
        // Pacing, not synchronisation: the next connects are due later.
        std::thread::sleep(Duration::from_millis(2));
    }
    Churn {
        started,
        connects,
        first_eaddrnotavail: first,
    }
}
