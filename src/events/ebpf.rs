//! The eBPF event source (`--ebpf`): the connect-outcome and TIME_WAIT
//! counters of `crate::source::ebpf`, read once per poll for every
//! namespace at once (the socket's namespace is in each row, so `--netns
//! all` needs no `setns` for them), split per namespace into its
//! `sockscope_connects_total` rows and its exact TIME_WAIT entries per
//! pool, capped across namespaces (`crate::collector::connects`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::collector::connects::{self, ConnectCaps, Connects, EbpfHealth};
use crate::collector::ephemeral_ports::PoolKey;
use crate::collector::health::{self, Health};
use crate::collector::{Part, health::SourceStatus};
use crate::events::{EventSource, Events, NsEvents};
use crate::metrics::Families;
use crate::source::ebpf::{ConnectEvents, EbpfError, EventsRead, LoadOptions, Outcome};
use crate::source::{ReadStats, SourceError, SourceId};

/// `--ebpf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfMode {
    /// On where the kernel and the privileges allow; otherwise off, with
    /// one log line saying why.
    Auto,
    /// On, or the agent does not start.
    On,
    /// Off: no event series.
    Off,
}

/// What the source needs to start.
#[derive(Debug, Clone)]
pub struct EbpfSettings {
    pub mode: EbpfMode,
    /// `--ebpf.max-entries`: rows of the kernel map.
    pub max_entries: u32,
    /// `--ebpf.kernel-stats`: `BPF_ENABLE_STATS` (host-wide, CAP_SYS_ADMIN).
    pub kernel_stats: bool,
    /// `--ephemeral.top-destinations`.
    pub top_destinations: usize,
    /// `--netns all` (else only the agent's own namespace is counted).
    pub all_namespaces: bool,
    /// The agent's network namespace inode (`--netns self`'s filter).
    pub own_netns: u64,
}

/// The running source.
pub struct EbpfEvents {
    source: ConnectEvents,
    settings: EbpfSettings,
    health: Health,
    caps: HashMap<u64, ConnectCaps>,
    /// The latest good read, kept when a read fails (the counters are
    /// cumulative: shown as of then, and the source is down).
    last: Option<EventsRead>,
}

/// Starts the source as `settings.mode` says: `Ok(None)` when off, or with
/// `auto` when it cannot run (logged once, at info, with the reason);
/// `Err` with `on` when it cannot.
///
/// # Errors
/// `--ebpf on` and the programs cannot be loaded: the one-line reason.
pub fn start(settings: EbpfSettings) -> Result<Option<EbpfEvents>, String> {
    if settings.mode == EbpfMode::Off {
        return Ok(None);
    }
    let netns = if settings.all_namespaces {
        None
    } else {
        Some(u32::try_from(settings.own_netns).map_err(|_| "netns inode over u32".to_owned())?)
    };
    let opts = LoadOptions {
        netns,
        max_entries: settings.max_entries,
        kernel_stats: settings.kernel_stats,
    };
    let loaded = ConnectEvents::load(&opts);
    // The loader parsed the kernel's BTF (megabytes, freed now).
    crate::web::trim::trim();
    match loaded {
        Ok(source) => {
            tracing::info!(
                max_entries = settings.max_entries,
                all_namespaces = settings.all_namespaces,
                "eBPF connect events on (tp_btf/inet_sock_set_state)"
            );
            Ok(Some(EbpfEvents {
                source,
                settings,
                health: Health::default(),
                caps: HashMap::new(),
                last: None,
            }))
        }
        Err(e) if settings.mode == EbpfMode::Auto => {
            tracing::info!(reason = %e, "--ebpf auto: eBPF connect events off; the census runs as without them (no sockscope_connects_total)");
            Ok(None)
        }
        Err(e) => Err(format!("--ebpf on: {e}")),
    }
}

fn source_error(e: EbpfError) -> SourceError {
    let errno = match &e {
        EbpfError::Permission(_) | EbpfError::Memlock(_) => libc::EPERM,
        EbpfError::Unsupported(_) => libc::EOPNOTSUPP,
        EbpfError::Other(_) => libc::EIO,
    };
    SourceError::Bpf {
        op: "map read",
        source: std::io::Error::new(std::io::Error::from_raw_os_error(errno).kind(), e),
    }
}

/// The source's health: its `sockscope_source_*` row and its own families.
#[derive(Debug)]
struct HostPart {
    status: SourceStatus,
    ebpf: Option<EbpfHealth>,
}

impl Part for HostPart {
    fn encode(&self, out: &mut Families) {
        health::encode(std::slice::from_ref(&self.status), out);
        if let Some(h) = &self.ebpf {
            h.encode(out);
        }
    }
}

impl EventSource for EbpfEvents {
    fn collect(&mut self, found: &[u64]) -> Events {
        let source = &mut self.source;
        let (read, status) = self.health.execute(SourceId::EbpfConnects, || {
            let r = source.read().map_err(source_error)?;
            let n = r.flows.len() as u64;
            Ok((
                r,
                ReadStats {
                    records: n,
                    parse_errors: 0,
                },
            ))
        });
        if let Some(r) = &read {
            // Rows of namespaces gone (never any with --netns self, whose
            // program counts the agent's own alone): deleted from the map,
            // which walks its keys, only when this read showed some.
            let live: HashSet<u64> = found.iter().copied().collect();
            let gone = |ns: u32| !live.contains(&u64::from(ns));
            if self.settings.all_namespaces
                && r.flows.iter().any(|(f, _)| gone(f.netns))
                && let Err(e) = self.source.forget(|ns| !gone(ns))
            {
                tracing::debug!(error = %e, "forgetting the rows of namespaces gone");
            }
            self.last = read;
        }
        let mut events = Events::default();
        let Some(read) = &self.last else {
            events.host.push(Arc::new(HostPart { status, ebpf: None }));
            return events;
        };
        events.host.push(Arc::new(HostPart {
            status,
            ebpf: Some(EbpfHealth(read.stats.clone())),
        }));
        let mut tables: HashMap<u64, Connects> = HashMap::new();
        let mut entries: HashMap<u64, HashMap<PoolKey, u64>> = HashMap::new();
        for &ns in found {
            tables.entry(ns).or_default();
            entries.entry(ns).or_default();
        }
        for (flow, n) in &read.flows {
            let ns = u64::from(flow.netns);
            let (Some(t), Some(e)) = (tables.get_mut(&ns), entries.get_mut(&ns)) else {
                continue; // a namespace not found (gone, or not ours)
            };
            match flow.outcome {
                Outcome::TimeWait => {
                    let key = PoolKey {
                        local_ip: flow.local_ip,
                        destination: flow.destination,
                    };
                    *e.entry(key).or_default() += n;
                }
                o => {
                    let result = o.result_label().expect("a connect outcome");
                    t.add(
                        flow.local_ip.to_string(),
                        flow.destination.to_string(),
                        &result,
                        *n,
                    );
                }
            }
        }
        let mut refs: Vec<(u64, &mut Connects)> = tables.iter_mut().map(|(k, v)| (*k, v)).collect();
        refs.sort_by_key(|(k, _)| *k);
        connects::cap_across(&mut refs, self.settings.top_destinations, &mut self.caps);
        for (ns, t) in tables {
            let parts: Vec<Arc<dyn Part>> = vec![Arc::new(t)];
            events.namespaces.insert(
                ns,
                NsEvents {
                    parts,
                    time_wait_entries: entries.remove(&ns),
                },
            );
        }
        events
    }
}
