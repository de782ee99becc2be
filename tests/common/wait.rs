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

/// `d` times `SOCKSCOPE_TEST_TIME_SCALE` (a positive number, default 1):
/// the bounds of waits on a slow machine. `scripts/vm-run` sets it to 10
/// under software emulation (TCG), where the same work takes about ten
/// times as long. Bounds that stand for a kernel time (TIME_WAIT's 60 s,
/// the reuse delay) are not scaled.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("SOCKSCOPE_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(scale)
}

/// Polls `cond` every 10 ms until it returns `Ok`, or panics after
/// `limit` ([`scaled`]) with `what` and the last `Err` it gave.
pub fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Result<T, String>) -> T {
    let limit = scaled(limit);
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
