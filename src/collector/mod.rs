//! The analyses: each turns what the sources read into the figures of its
//! metric families, owns those families (their specs and encoding, beside
//! the code that computes them) and does no I/O. [`Sample`] is everything
//! one poll of one network namespace learned.

pub mod cap;
pub mod census;
pub mod connects;
pub mod counters;
pub mod ephemeral_ports;
pub mod health;
pub mod listen_queue;
pub mod netns;
pub mod nginx;
pub mod sysctls;
pub mod tcp_states;
pub mod unix_states;

use std::sync::Arc;

use crate::metrics::Families;
use crate::source::counters::{Netstat, Sockstat};
use crate::source::sysctl::Sysctls;
use census::CensusInfo;
use ephemeral_ports::EphemeralReport;
use health::SourceStatus;
use listen_queue::ListenerSample;
use tcp_states::TcpStates;
use unix_states::UnixStates;

/// Figures that encode their own families: an event source's share of a
/// namespace (`crate::events`), or its own health. Shared (`Arc`) between
/// the sample that carries them and the scrapes that encode it.
pub trait Part: std::fmt::Debug + Send + Sync {
    /// Pushes its families into `out`.
    fn encode(&self, out: &mut Families);
}

/// Everything one poll of one namespace learned; `None` (or an unread TCP
/// family) where its source failed, so the figure is absent rather than
/// zero. Serialized as `snapshot --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch when the poll started.
    pub timestamp: f64,
    /// When `tcp`, `unix`, `ephemeral` and the listeners' `connected`
    /// were counted; the listener queues, sysctls and counters are this
    /// poll's.
    pub census: CensusInfo,
    pub tcp: TcpStates,
    pub unix: Option<UnixStates>,
    pub listeners: Vec<ListenerSample>,
    /// `None` without the sysctls (no model) or without any TCP read.
    #[serde(serialize_with = "serialize_ephemeral")]
    pub ephemeral: Option<EphemeralReport>,
    pub sysctls: Option<Sysctls>,
    pub netstat: Option<Netstat>,
    pub sockstat: Option<Sockstat>,
    pub sources: Vec<SourceStatus>,
    /// The event sources' share of this namespace (`crate::events`),
    /// encoded after the poll's own families. Not in `snapshot --json`.
    #[serde(skip)]
    pub parts: Vec<Arc<dyn Part>>,
}

/// Per-reason counts (`[("eacces", 3)]`) as a JSON object
/// (`{"eacces": 3}`).
pub(crate) fn serialize_counts<S: serde::Serializer>(
    counts: &[(&'static str, u64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(counts.iter().copied())
}

/// The port range's two ends, named.
#[derive(serde::Serialize)]
struct PortRange {
    first: u16,
    last: u16,
}

/// [`EphemeralReport`] with its range as `{"first": …, "last": …}`.
#[derive(serde::Serialize)]
struct EphemeralJson<'a> {
    range: PortRange,
    limit: u64,
    listening_in_range: u64,
    pools: &'a [ephemeral_ports::Pool],
    pools_total: u64,
    usage_ratio_max: f64,
}

fn serialize_ephemeral<S: serde::Serializer>(
    e: &Option<EphemeralReport>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    e.as_ref()
        .map(|e| EphemeralJson {
            range: PortRange {
                first: e.range.0,
                last: e.range.1,
            },
            limit: e.limit,
            listening_in_range: e.listening_in_range,
            pools: &e.pools,
            pools_total: e.pools_total,
            usage_ratio_max: e.usage_ratio_max,
        })
        .serialize(s)
}

impl Sample {
    /// Every family of this sample.
    pub fn encode(&self, out: &mut Families) {
        self.tcp.encode(out);
        if let Some(u) = &self.unix {
            u.encode(out);
        }
        listen_queue::encode(&self.listeners, out);
        if let Some(s) = &self.sysctls {
            sysctls::encode(s, out);
        }
        counters::encode(self.netstat.as_ref(), self.sockstat.as_ref(), out);
        if let Some(e) = &self.ephemeral {
            e.encode(out);
        }
        health::encode(&self.sources, out);
        self.census.encode(self.timestamp, out);
        for p in &self.parts {
            p.encode(out);
        }
    }
}
