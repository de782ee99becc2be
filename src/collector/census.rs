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
        "Time from the latest census to the next: its duration / --census.cpu-budget-ratio, at most --census.max-interval (the census runs on the first poll after); with --netns all the longest a namespace waits: every namespace's census time, summed, / the ratio.";
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

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// One namespace as [`SharedBudget::plan`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its key (the namespace's inode).
    pub key: u64,
    /// It must take a census whatever the budget (none yet, or its
    /// sources are procfs, which cannot sample the listeners alone).
    pub required: bool,
    /// Time since its latest census started; `None`: none yet.
    pub age: Option<Duration>,
    /// Its TCP sockets (`/proc/net/sockstat` `inuse` + `tw`) moved by at
    /// least a tenth (and 8 sockets) since its latest census.
    pub moved: bool,
    /// What its latest census took (the estimate of the next).
    pub cost: Duration,
}

impl Candidate {
    /// True when `now` TCP sockets differ from `then` by at least a tenth
    /// of `then` and at least 8 (a small namespace's jitter is not news).
    pub fn moved(then: u64, now: u64) -> bool {
        let d = then.abs_diff(now);
        d >= 8 && d * 10 >= then
    }
}

/// One census budget shared by many namespaces (`--netns all`):
/// `--census.cpu-budget-ratio` of one CPU in all, spent where it tells
/// most. Each poll credits `ratio` × the time since the previous one,
/// less what the previous poll spent outside censuses (at most half; a
/// surplus does not carry beyond one poll; a debt does) and spends it, in
/// order, on: the namespaces that must take a census, then those whose
/// TCP socket count moved since their census, then the rest, oldest
/// census first — until the credit is spent (a ratio of 1: every
/// namespace on every poll). A namespace's first census
/// is free (it has no figures yet); every other census is paid for at
/// its measured cost ([`SharedBudget::settle`]), so in the long run the
/// censuses take the ratio and no more, and every namespace's census is
/// about (sum of all censuses' cost) / ratio old at worst
/// ([`SharedBudget::round`]).
#[derive(Debug, Clone, Default)]
pub struct SharedBudget {
    /// Nanoseconds of CPU that may be spent; negative: owed.
    credit_ns: i64,
    last: Option<std::time::Instant>,
    /// The ratio the censuses got at the latest plan (after the overhead).
    census_ratio: Option<f64>,
}

impl SharedBudget {
    /// The keys to census on the poll at `now`, in the order above; the
    /// estimated cost of each is taken from the credit. `overhead` is
    /// what the previous poll spent besides censuses (discovery, the
    /// listener and counter reads of every namespace): it is paid from the
    /// same budget first, up to half of what the poll credits, so that
    /// the agent's whole sampling stays within the ratio while the
    /// censuses keep at least half of it.
    pub(crate) fn plan(
        &mut self,
        now: std::time::Instant,
        ratio: f64,
        overhead: Duration,
        cands: &[Candidate],
    ) -> Vec<u64> {
        let ratio = ratio.clamp(0.0, 1.0);
        let gap = self
            .last
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last = Some(now);
        let accrued = nanos(gap.mul_f64(ratio));
        let accrued = accrued - nanos(overhead).min(accrued / 2);
        if !gap.is_zero() {
            self.census_ratio = Some(accrued as f64 / gap.as_nanos() as f64);
        }
        self.credit_ns = self.credit_ns.saturating_add(accrued).min(accrued);
        let mut order: Vec<&Candidate> = cands.iter().collect();
        order.sort_by(|a, b| {
            (b.required, b.moved, b.age.is_none(), b.age)
                .cmp(&(a.required, a.moved, a.age.is_none(), a.age))
                .then(a.key.cmp(&b.key))
        });
        let mut chosen = Vec::new();
        for c in order {
            // A ratio of 1 is no budget: every namespace, every poll.
            if !c.required && ratio < 1.0 && self.credit_ns <= 0 {
                break;
            }
            if c.age.is_some() {
                self.credit_ns = self.credit_ns.saturating_sub(nanos(c.cost));
            }
            chosen.push(c.key);
        }
        chosen
    }

    /// Corrects the credit once the censuses ran: `estimated` is what
    /// [`SharedBudget::plan`] took for them, `actual` what they took.
    pub fn settle(&mut self, estimated: Duration, actual: Duration) {
        self.credit_ns = self
            .credit_ns
            .saturating_add(nanos(estimated))
            .saturating_sub(nanos(actual));
    }

    /// The share of a CPU the censuses got at the latest plan: the ratio
    /// less the overhead it paid (`ratio` before the second plan).
    pub(crate) fn census_ratio(&self, ratio: f64) -> f64 {
        self.census_ratio.unwrap_or(ratio)
    }

    /// The longest a namespace waits for its next census at this budget:
    /// every namespace's census cost, summed, over `ratio`.
    pub fn round(costs: impl Iterator<Item = Duration>, ratio: f64) -> Duration {
        costs
            .sum::<Duration>()
            .div_f64(ratio.clamp(f64::MIN_POSITIVE, 1.0))
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

    fn cand(key: u64, age_s: Option<u64>, moved: bool, cost_ms: u64) -> Candidate {
        Candidate {
            key,
            required: age_s.is_none(),
            age: age_s.map(Duration::from_secs),
            moved,
            cost: Duration::from_millis(cost_ms),
        }
    }

    #[test]
    fn shared_budget_spends_the_ratio_on_moved_then_oldest() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = SharedBudget::default();
        let cands = [
            cand(1, Some(5), false, 15),
            cand(2, Some(9), false, 15),
            cand(3, Some(2), true, 15),
            cand(4, None, false, 0),
        ];
        // First poll: no credit yet; only the new namespace (free).
        assert_eq!(b.plan(at(0), 0.01, Duration::ZERO, &cands), vec![4]);
        let cands = &cands[..3];
        // 1 s at 1 %: 10 ms of credit, one census: the moved one first.
        assert_eq!(b.plan(at(1), 0.01, Duration::ZERO, cands), vec![3]);
        b.settle(Duration::from_millis(15), Duration::from_millis(15));
        // 5 ms owed, 10 ms credited: one more, the oldest.
        let cands = [
            cand(1, Some(6), false, 15),
            cand(2, Some(10), false, 15),
            cand(3, Some(1), false, 15),
        ];
        assert_eq!(b.plan(at(2), 0.01, Duration::ZERO, &cands), vec![2]);
        // 10 ms owed, 10 ms credited: nothing.
        assert_eq!(
            b.plan(at(3), 0.01, Duration::ZERO, &cands),
            Vec::<u64>::new()
        );
        // A surplus does not carry past one poll: 100 idle polls buy 10 ms.
        let mut idle = SharedBudget::default();
        for t in 0..100 {
            idle.plan(at(t), 0.01, Duration::ZERO, &[]);
        }
        let cheap: Vec<Candidate> = (1..=5).map(|k| cand(k, Some(k), false, 4)).collect();
        assert_eq!(
            idle.plan(at(100), 0.01, Duration::ZERO, &cheap),
            vec![5, 4, 3]
        );
    }

    #[test]
    fn shared_budget_in_the_long_run_takes_the_ratio() {
        let t0 = std::time::Instant::now();
        let mut b = SharedBudget::default();
        let mut age = [0u64; 10];
        let mut spent = Duration::ZERO;
        for poll in 0..1000u64 {
            let cands: Vec<Candidate> = (0..10)
                .map(|k| cand(k as u64, Some(age[k]), false, 15))
                .collect();
            let chosen = b.plan(t0 + Duration::from_secs(poll), 0.01, Duration::ZERO, &cands);
            for a in &mut age {
                *a += 1;
            }
            for k in &chosen {
                age[*k as usize] = 0;
            }
            let took = Duration::from_millis(15) * chosen.len() as u32;
            b.settle(took, took);
            spent += took;
        }
        // 1 % of 1000 s is 10 s of census.
        let ratio = spent.as_secs_f64() / 1000.0;
        assert!((0.0095..=0.0105).contains(&ratio), "spent {ratio}");
        // Round robin: no namespace waits longer than a round (150 s) + one poll.
        assert!(age.iter().all(|&a| a <= 151), "{age:?}");
        assert_eq!(
            SharedBudget::round([Duration::from_millis(15); 10].into_iter(), 0.01),
            Duration::from_millis(15_000)
        );
    }

    #[test]
    fn overhead_is_paid_first_up_to_half() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let cands: Vec<Candidate> = (1..=4).map(|k| cand(k, Some(10 + k), false, 3)).collect();
        let mut b = SharedBudget::default();
        b.plan(at(0), 0.01, Duration::ZERO, &[]);
        // 10 ms credited, 4 ms overhead: 6 ms, two 3 ms censuses.
        assert_eq!(
            b.plan(at(1), 0.01, Duration::from_millis(4), &cands),
            vec![4, 3]
        );
        let mut b = SharedBudget::default();
        b.plan(at(0), 0.01, Duration::ZERO, &[]);
        // 9 ms overhead: only half (5 ms) is charged, so two censuses
        // (charged whole it would leave 1 ms: one).
        assert_eq!(
            b.plan(at(1), 0.01, Duration::from_millis(9), &cands),
            vec![4, 3]
        );
        // No overhead: four.
        let mut b = SharedBudget::default();
        b.plan(at(0), 0.01, Duration::ZERO, &[]);
        assert_eq!(
            b.plan(at(1), 0.01, Duration::ZERO, &cands),
            vec![4, 3, 2, 1]
        );
    }

    #[test]
    fn ratio_one_is_every_namespace_every_poll() {
        let mut b = SharedBudget::default();
        let t0 = std::time::Instant::now();
        let cands: Vec<Candidate> = (1..=3).map(|k| cand(k, Some(1), false, 900)).collect();
        b.plan(t0, 1.0, Duration::ZERO, &cands);
        assert_eq!(
            b.plan(t0 + Duration::from_secs(1), 1.0, Duration::ZERO, &cands)
                .len(),
            3
        );
    }

    #[test]
    fn moved_needs_a_tenth_and_eight_sockets() {
        assert!(!Candidate::moved(1000, 1050));
        assert!(Candidate::moved(1000, 1100));
        assert!(Candidate::moved(1000, 900));
        assert!(!Candidate::moved(10, 17));
        assert!(Candidate::moved(10, 18));
        assert!(Candidate::moved(0, 8));
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
