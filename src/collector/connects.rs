//! Every TCP `connect()` outcome per (local IP, destination) pool and
//! result, as the eBPF event source counts them in the kernel
//! (`crate::source::ebpf`, tracepoint `sock:inet_sock_set_state`), and the
//! source's own health. No I/O.
//!
//! The per-pool rows are capped like the census's pools
//! (`--ephemeral.top-destinations`): the pools with the most failed
//! connects (then the most connects) are kept, across namespaces with
//! `--netns all`; each namespace's other pools are summed per result into
//! `local_ip="other", destination="other"`, whose counters grow only by
//! what the rows beyond the cap grew by ([`OtherCounters`]), so no
//! exported counter goes backwards.

use std::collections::{BTreeMap, HashMap};

use crate::collector::Part;
use crate::collector::cap::OtherCounters;
use crate::collector::ephemeral_ports::OTHER;
use crate::metrics::Families;
use crate::source::ebpf::EbpfStats;

crate::metric_specs! {
    /// [`Connects`]: the `flows` map of `source::ebpf`.
    CONNECTS = "sockscope_connects_total", Counter, ["local_ip", "destination", "result"],
        "TCP connect() outcomes per local IP and destination, counted in the kernel at tracepoint sock:inet_sock_set_state since the agent started: result=\"established\" (SYN_SENT -> ESTABLISHED), \"eaddrnotavail\" (no free local port: SYN_SENT -> CLOSE with source port 0, or after an explicit bind() whose 4-tuple is taken), \"aborted\" (closed by the application while still connecting), or the errno the connect ended with in lower case (econnrefused, etimedout, ehostunreach, ...). Failures connect() returns before SYN_SENT (routing) are not seen. Kept monotonic across the --ephemeral.top-destinations cap.";
    /// [`EbpfStats::programs`].
    EBPF_PROGRAMS = "sockscope_ebpf_programs", Gauge, [],
        "eBPF programs loaded and attached by the agent (tp_btf/inet_sock_set_state): 1 while the event source runs, absent when it does not (--ebpf).";
    /// [`EbpfStats::map_entries`].
    EBPF_MAP_ENTRIES = "sockscope_ebpf_map_entries", Gauge, ["map"],
        "Rows in the eBPF map (one per namespace, local IP, destination and result), as of the latest read.";
    /// [`EbpfStats::map_max_entries`].
    EBPF_MAP_MAX_ENTRIES = "sockscope_ebpf_map_max_entries", Gauge, ["map"],
        "Capacity of the eBPF map (--ebpf.max-entries); when full, new rows are not made and their events are counted in sockscope_ebpf_events_lost_total.";
    /// [`EbpfStats::events_total`].
    EBPF_EVENTS = "sockscope_ebpf_events_total", Counter, [],
        "Socket state changes the eBPF programs counted into the map (connect outcomes and entries into TIME_WAIT), summed over CPUs.";
    /// [`EbpfStats::lost_total`].
    EBPF_LOST = "sockscope_ebpf_events_lost_total", Counter, [],
        "Events the eBPF programs could not count because the map was full (a new row needed; raise --ebpf.max-entries).";
    /// [`EbpfStats::run_time_seconds`].
    EBPF_RUN_TIME = "sockscope_ebpf_program_run_seconds_total", Counter, [],
        "Kernel time the eBPF programs took (bpf_prog_info run_time_ns), with --ebpf.kernel-stats only (BPF_ENABLE_STATS: needs CAP_SYS_ADMIN and turns run-time statistics on host-wide).";
    /// [`EbpfStats::run_count`].
    EBPF_RUNS = "sockscope_ebpf_program_runs_total", Counter, [],
        "Runs of the eBPF programs (bpf_prog_info run_cnt: every inet_sock_set_state on the host, counted or not), with --ebpf.kernel-stats only.";
}

/// The map's name, as the `map` label shows it.
pub const FLOWS_MAP: &str = "flows";

/// One namespace's connect outcomes: per (local IP, destination), per
/// result label, the count since the agent started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connects {
    pub pools: BTreeMap<(String, String), BTreeMap<String, u64>>,
}

impl Connects {
    /// Adds `n` connects of `result` toward `(local_ip, destination)`.
    pub fn add(&mut self, local_ip: String, destination: String, result: &str, n: u64) {
        *self
            .pools
            .entry((local_ip, destination))
            .or_default()
            .entry(result.to_owned())
            .or_default() += n;
    }
}

impl Part for Connects {
    fn encode(&self, out: &mut Families) {
        for ((ip, dest), results) in &self.pools {
            for (r, n) in results {
                out.push(&CONNECTS, &[ip, dest, r], *n as f64);
            }
        }
    }
}

/// A pool's labels: (local IP, destination).
type Pool = (String, String);

/// The aggregate rows' counters of one namespace, per result.
pub type ConnectCaps = HashMap<String, OtherCounters<(String, String), 1>>;

/// Failed connects (every result but `established`), then all.
fn rank_key(results: &BTreeMap<String, u64>) -> (u64, u64) {
    let all: u64 = results.values().sum();
    let ok = results.get("established").copied().unwrap_or(0);
    (all - ok, all)
}

/// Applies the cap: keeps the `top` pools of all `tables` together (the
/// most failed connects first, then the most connects, then the key) and
/// sums each namespace's others into its `other` row per result, with
/// counters kept in `caps` per namespace key (a namespace no longer in
/// `tables` is forgotten).
pub fn cap_across(
    tables: &mut [(u64, &mut Connects)],
    top: usize,
    caps: &mut HashMap<u64, ConnectCaps>,
) {
    type Ranked = (std::cmp::Reverse<(u64, u64)>, usize, Pool);
    let mut ranked: Vec<Ranked> = Vec::new();
    for (t, (_, c)) in tables.iter().enumerate() {
        for (k, r) in &c.pools {
            ranked.push((std::cmp::Reverse(rank_key(r)), t, k.clone()));
        }
    }
    ranked.sort();
    let keep: std::collections::HashSet<(usize, Pool)> = ranked
        .into_iter()
        .take(top)
        .map(|(_, t, k)| (t, k))
        .collect();
    caps.retain(|k, _| tables.iter().any(|(key, _)| key == k));
    for (t, (key, c)) in tables.iter_mut().enumerate() {
        let caps = caps.entry(*key).or_default();
        let pools = std::mem::take(&mut c.pools);
        type Rows = Vec<(Pool, [f64; 1], bool)>;
        let mut by_result: BTreeMap<String, Rows> = BTreeMap::new();
        for (k, results) in &pools {
            let kept = keep.contains(&(t, k.clone()));
            for (r, n) in results {
                by_result
                    .entry(r.clone())
                    .or_default()
                    .push((k.clone(), [*n as f64], kept));
            }
        }
        for r in caps.keys() {
            by_result.entry(r.clone()).or_default();
        }
        let mut other = BTreeMap::new();
        for (r, rows) in by_result {
            let beyond = rows.iter().any(|(_, _, kept)| !kept);
            let total = caps.entry(r.clone()).or_default().fold(rows)[0];
            if beyond || total > 0.0 {
                other.insert(r, total as u64);
            }
        }
        c.pools = pools
            .into_iter()
            .filter(|(k, _)| keep.contains(&(t, k.clone())))
            .collect();
        if !other.is_empty() {
            c.pools.insert((OTHER.into(), OTHER.into()), other);
        }
    }
}

/// The event source's own health (host-wide): its latest read's
/// [`EbpfStats`], encoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EbpfHealth(pub EbpfStats);

impl Part for EbpfHealth {
    fn encode(&self, out: &mut Families) {
        let s = &self.0;
        out.one(&EBPF_PROGRAMS, Some(f64::from(s.programs)));
        out.push(&EBPF_MAP_ENTRIES, &[FLOWS_MAP], s.map_entries as f64);
        out.push(
            &EBPF_MAP_MAX_ENTRIES,
            &[FLOWS_MAP],
            f64::from(s.map_max_entries),
        );
        out.one(&EBPF_EVENTS, Some(s.events_total as f64));
        out.one(&EBPF_LOST, Some(s.lost_total as f64));
        out.one(&EBPF_RUN_TIME, s.run_time_seconds);
        out.one(&EBPF_RUNS, s.run_count.map(|n| n as f64));
    }
}

#[cfg(test)]
#[path = "connects/tests.rs"]
mod tests;
