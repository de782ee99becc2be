//! Bounded polling and the agent's clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (the clock of
/// `sockscope_last_poll_timestamp_seconds`).
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls `cond` every 10 ms until it returns `Ok`, or panics after
/// `limit` with `what` and the last `Err` it gave.
pub fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match cond() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("timed out after {limit:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
