//! Event sources: sources that aggregate continuously — in the kernel
//! (eBPF maps), or on a task of their own — rather than answer a request
//! on the poll thread. At every poll the agent asks each for its latest
//! state ([`EventSource::collect`]), once for every namespace at once, and
//! hands each namespace's share to that namespace's poller before it polls
//! ([`NsEvents`]): its families ride on the sample ([`Part`]), and what it
//! knows better than the census (entries into TIME_WAIT, counted as they
//! happen) replaces the census's inference. The source's own health is
//! host-wide ([`Events::host`]).
//!
//! Adding an event source: a type that implements [`EventSource`] and
//! one line where the agent starts its sources (`main.rs`,
//! `event_sources`); README "Architecture".

pub mod ebpf;

use std::collections::HashMap;
use std::sync::Arc;

use crate::collector::Part;
use crate::collector::ephemeral_ports::PoolKey;

/// A source whose state accumulates between polls.
pub trait EventSource: Send {
    /// The latest state, split by network namespace (inode of
    /// `/proc/PID/ns/net`). `found`: every namespace that exists now (the
    /// agent's own alone with `--netns self`); the source may forget what
    /// it kept for the others (they are gone).
    fn collect(&mut self, found: &[u64]) -> Events;
}

/// What the event sources know at one poll.
#[derive(Debug, Default)]
pub struct Events {
    /// Per namespace inode.
    pub namespaces: HashMap<u64, NsEvents>,
    /// The sources' own families (health), encoded once, outside any
    /// namespace scope.
    pub host: Vec<Arc<dyn Part>>,
}

impl Events {
    /// Adds another source's state.
    pub fn merge(&mut self, other: Events) {
        for (ns, e) in other.namespaces {
            let mine = self.namespaces.entry(ns).or_default();
            mine.parts.extend(e.parts);
            if e.time_wait_entries.is_some() {
                mine.time_wait_entries = e.time_wait_entries;
            }
        }
        self.host.extend(other.host);
    }
}

/// One namespace's share of [`Events`].
#[derive(Debug, Default, Clone)]
pub struct NsEvents {
    /// Families encoded with the namespace's sample (under its `netns`
    /// label with `--netns all`).
    pub parts: Vec<Arc<dyn Part>>,
    /// Entries into TIME_WAIT per pool since the source started, counted
    /// as they happened: when `Some`, the census uses these for
    /// `sockscope_ephemeral_ports_time_wait_entries_total` and for the
    /// forecast's rate instead of inferring them from TIME_WAIT ages.
    pub time_wait_entries: Option<HashMap<PoolKey, u64>>,
}
