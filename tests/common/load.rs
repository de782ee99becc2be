//! Concurrent keep-alive HTTP load ([`HttpClient`] threads).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::http::HttpClient;

/// `clients` threads, each with its own [`HttpClient`] to `addr`, share
/// `total` GETs of `/` (bounded by `limit` in time: past it the threads
/// stop and the shortfall shows in the count). Returns the statuses
/// counted (0 = an I/O error) and the connections the clients opened.
pub fn concurrent_load(
    addr: &str,
    clients: usize,
    total: u64,
    limit: Duration,
) -> (BTreeMap<u16, u64>, u64) {
    let never = AtomicBool::new(false);
    concurrent_load_until(addr, clients, total..=total, &never, limit)
}

/// `clients` threads, each with its own keep-alive [`HttpClient`] to
/// `addr`, share GETs of `/`: at least `*requests.start()`, then on until
/// `stop` is set, at most `*requests.end()`, and bounded by `limit` in
/// time (past it the threads stop and the shortfall shows in the count).
/// Returns the statuses counted (0 = an I/O error) and the connections
/// the clients opened (they close them, first, when done).
pub fn concurrent_load_until(
    addr: &str,
    clients: usize,
    requests: RangeInclusive<u64>,
    stop: &AtomicBool,
    limit: Duration,
) -> (BTreeMap<u16, u64>, u64) {
    let (min, max) = requests.into_inner();
    let next = AtomicU64::new(0);
    let deadline = Instant::now() + limit;
    let results: Vec<(BTreeMap<u16, u64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut c = HttpClient::new(addr);
                    let mut counts = BTreeMap::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= max
                            || (n >= min && stop.load(Ordering::Relaxed))
                            || Instant::now() >= deadline
                        {
                            break;
                        }
                        let status = c.get("/").map_or(0, |r| r.status);
                        *counts.entry(status).or_insert(0) += 1;
                    }
                    (counts, c.connects)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut counts = BTreeMap::new();
    let mut connects = 0;
    for (c, n) in results {
        connects += n;
        for (k, v) in c {
            *counts.entry(k).or_insert(0) += v;
        }
    }
    (counts, connects)
}
