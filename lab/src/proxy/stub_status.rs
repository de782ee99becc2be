//! nginx's stub_status counters (`ngx_stat_*`) and page.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// stub_status counters (`ngx_stat_*`): connection and request counts
/// since start, and the gauges of open connections.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections accepted.
    pub accepts: AtomicU64,
    /// Client connections handled (the proxy drops none: = `accepts`).
    pub handled: AtomicU64,
    /// Client requests, the status page's own included.
    pub requests: AtomicU64,
    /// Open client connections (a gauge).
    pub active: AtomicU64,
    /// Requests being processed (nginx's Writing; a gauge).
    pub writing: AtomicU64,
}

impl Stats {
    /// The page in nginx's exact format, spaces and line ends included:
    ///
    /// ```text
    /// Active connections: 3 \nserver accepts handled requests\n 7 7 9 \nReading: 0 Writing: 1 Waiting: 2 \n
    /// ```
    ///
    /// Reading is reported as 0: hyper does not expose which connections
    /// are reading a request header, so Waiting = Active − Writing.
    pub fn page(&self) -> String {
        let active = self.active.load(Relaxed);
        let writing = self.writing.load(Relaxed).min(active);
        format!(
            "Active connections: {active} \nserver accepts handled requests\n {} {} {} \nReading: 0 Writing: {writing} Waiting: {} \n",
            self.accepts.load(Relaxed),
            self.handled.load(Relaxed),
            self.requests.load(Relaxed),
            active - writing,
        )
    }

    /// Adds `other`'s counters to these.
    pub(super) fn add(&self, other: &Stats) {
        for (a, b) in [
            (&self.accepts, &other.accepts),
            (&self.handled, &other.handled),
            (&self.requests, &other.requests),
            (&self.active, &other.active),
            (&self.writing, &other.writing),
        ] {
            a.fetch_add(b.load(Relaxed), Relaxed);
        }
    }
}

/// One worker's share of the counters, on cache lines of its own: the
/// workers do not contend on them (nginx's workers share theirs in
/// shared memory); the status page adds them up.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct WorkerStats(pub(super) Stats);

/// Increments a gauge, and decrements it when dropped.
pub(super) struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    pub(super) fn new(g: &'a AtomicU64) -> Held<'a> {
        g.fetch_add(1, Relaxed);
        Held(g)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
