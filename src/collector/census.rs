//! When the census of every socket runs, and how old its figures are.
//!
//! Every poll samples the listeners (accept queues: a listener-only
//! inet_diag/unix_diag dump, cheap whatever the number of sockets). The
//! census reads every TCP and UNIX socket (states, ephemeral-port pools,
//! accepted connections per listener); its cost is linear in sockets and
//! mostly the kernel's (see BENCHMARKS.md), so it runs every poll only
//! while that is cheap: after a census that took `d`, the next waits
//! `d / cpu_budget_ratio`, at most `max_interval`.

use std::time::Duration;

use crate::metrics::Families;

crate::metric_specs! {
    LAST_POLL = "sockscope_last_poll_timestamp_seconds", Gauge, [],
        "Unix time at which the latest sample was taken.";
    CENSUS_TIMESTAMP = "sockscope_census_timestamp_seconds", Gauge, [],
        "Unix time of the latest census of every socket (socket states, ephemeral ports, accepted connections); listener queues, sysctls and counters are read on every poll.";
    CENSUS_INTERVAL = "sockscope_census_interval_seconds", Gauge, [],
        "Time from the latest census to the next: its duration / --census.cpu-budget-ratio, at most --census.max-interval (the census runs on the first poll after).";
}

/// When the census runs (`--census.cpu-budget-ratio`,
/// `--census.max-interval`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CensusPolicy {
    /// Share of one CPU the census may take on average, in (0, 1]; 1 runs
    /// it every poll whatever it costs.
    pub cpu_budget_ratio: f64,
    /// The longest time between two censuses.
    pub max_interval: Duration,
}

impl CensusPolicy {
    /// A census on every poll (the one-shot `snapshot`).
    pub const EVERY_POLL: CensusPolicy = CensusPolicy {
        cpu_budget_ratio: 1.0,
        max_interval: Duration::ZERO,
    };

    /// Time from the start of a census that took `took` to the next one:
    /// `took / cpu_budget_ratio`, at most `max_interval`.
    pub fn interval(&self, took: Duration) -> Duration {
        took.div_f64(self.cpu_budget_ratio.clamp(f64::MIN_POSITIVE, 1.0))
            .min(self.max_interval)
    }

    /// True when a census that started `since` ago and set `interval` is
    /// due at a poll `gap` after the previous one: a tenth of a poll early
    /// counts, so tick jitter does not push it a whole poll.
    pub fn due(since: Duration, gap: Duration, interval: Duration) -> bool {
        since + gap / 10 >= interval
    }
}

/// When the census figures of a sample (TCP and UNIX states, ephemeral
/// ports, accepted connections) were taken.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CensusInfo {
    /// Seconds since the Unix epoch when the census's poll started.
    pub timestamp: f64,
    /// Wall time of the census: every socket dump and its classification.
    pub duration_seconds: f64,
    /// Time from this census to the next ([`CensusPolicy::interval`]).
    pub interval_seconds: f64,
    /// True when this poll ran the census; false when it sampled the
    /// listeners only and carried the rest from the latest census.
    pub fresh: bool,
}

impl CensusInfo {
    /// The poll and census timestamps and the census interval; `poll` is
    /// the sample's own timestamp.
    pub fn encode(&self, poll: f64, out: &mut Families) {
        out.one(&LAST_POLL, Some(poll));
        out.one(&CENSUS_TIMESTAMP, Some(self.timestamp));
        out.one(&CENSUS_INTERVAL, Some(self.interval_seconds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn census_interval_is_cost_over_budget_capped() {
        let ms = Duration::from_millis;
        let policy = |ratio, max| CensusPolicy {
            cpu_budget_ratio: ratio,
            max_interval: max,
        };
        for (p, took, want) in [
            (policy(0.01, ms(15_000)), ms(25), ms(2500)),
            (policy(0.01, ms(15_000)), ms(400), ms(15_000)),
            (CensusPolicy::EVERY_POLL, ms(3000), Duration::ZERO),
            (policy(1.0, ms(15_000)), ms(7), ms(7)),
        ] {
            assert_eq!(p.interval(took), want, "{p:?} after {took:?}");
        }
    }

    #[test]
    fn due_allows_a_tenth_of_a_poll_of_jitter() {
        let s = Duration::from_millis;
        assert!(CensusPolicy::due(s(950), s(1000), s(1000)));
        assert!(!CensusPolicy::due(s(850), s(1000), s(1000)));
        assert!(CensusPolicy::due(s(0), s(0), s(0)));
    }

    #[test]
    fn encoded() {
        let c = CensusInfo {
            timestamp: 100.5,
            duration_seconds: 0.02,
            interval_seconds: 2.0,
            fresh: false,
        };
        let text = crate::metrics::encoded(|f| c.encode(101.5, f));
        assert!(
            text.contains("sockscope_last_poll_timestamp_seconds 101.5\n"),
            "{text}"
        );
        assert!(text.contains("sockscope_census_timestamp_seconds 100.5\n"));
        assert!(text.contains("sockscope_census_interval_seconds 2\n"));
    }
}
