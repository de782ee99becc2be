//! One poll: read every source, classify the sockets, produce a [`Sample`].
//!
//! The poller streams each socket through the analyses (state counts,
//! listeners, ephemeral pools) as the source yields it, per family, so a
//! source that fails half-way is discarded whole and replaced by its
//! fallback without double counting.

pub mod ephemeral_ports;
pub mod listen_queue;
pub mod nginx;
pub mod tcp_states;
pub mod unix_states;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{Family, TcpSocket};
use crate::source::sock_diag::{SockDiag, TCP_ALL_STATES, TCP_LISTEN_ONLY};
use crate::source::sysctl::{KernelCounters, Sysctls};
use crate::source::{ProcRoot, ReadStats, SourceError, procfs};
use ephemeral_ports::{EphemeralPorts, EphemeralReport, PortModel};
use listen_queue::{Listener, Proto, TcpListeners, UnixListeners};
use tcp_states::TcpStates;
use unix_states::UnixStates;

/// Where socket tables are read from (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// sock_diag netlink, falling back per family to procfs on failure.
    Auto,
    /// sock_diag netlink only.
    Netlink,
    /// `/proc/net/{tcp,tcp6,unix}` only.
    Procfs,
}

/// Poller settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub procfs: ProcRoot,
    pub source: SourceMode,
    /// `--ephemeral.top-destinations`.
    pub top_destinations: usize,
    /// `--listen.max-listeners`.
    pub max_listeners: usize,
}

/// Health of one source in the last poll.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceStatus {
    /// `inet_diag_ipv4`, `proc_net_tcp`, `sysctl`, ...
    pub source: &'static str,
    pub up: bool,
    pub duration_seconds: f64,
    /// Malformed records skipped since the agent started.
    pub parse_errors_total: u64,
    /// The error of the last poll, when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A listener row plus its accumulated full time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListenerSample {
    #[serde(flatten)]
    pub listener: Listener,
    /// Seconds this listener's queue was sampled at or over its limit.
    pub full_seconds_total: f64,
}

/// Everything one poll learned. Serialized as `snapshot --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch when the poll started.
    pub timestamp: f64,
    pub tcp: TcpStates,
    pub unix: UnixStates,
    pub listeners: Vec<ListenerSample>,
    /// `None` when the sysctls could not be read (no model without them).
    pub ephemeral: Option<EphemeralReport>,
    pub sysctls: Option<Sysctls>,
    pub counters: KernelCounters,
    pub sources: Vec<SourceStatus>,
}

/// TCP analyses of one family (or of all, once merged).
#[derive(Debug, Default)]
struct TcpCensus {
    states: TcpStates,
    listeners: TcpListeners,
    ports: EphemeralPorts,
}

impl TcpCensus {
    fn observe(&mut self, model: Option<&PortModel>, s: &TcpSocket) {
        self.states.observe(s);
        self.listeners.observe(s);
        if let Some(m) = model {
            self.ports.observe(m, &self.listeners.ports, s);
        }
    }

    fn merge(&mut self, o: TcpCensus) {
        self.states.merge(&o.states);
        self.listeners.merge(o.listeners);
        self.ports.merge(o.ports);
    }
}

/// Samples the kernel; keeps the state that spans polls (the netlink
/// socket, counters, the last health of each source).
pub struct Poller {
    cfg: Config,
    netlink: Option<SockDiag>,
    parse_errors: HashMap<&'static str, u64>,
    last_up: HashMap<&'static str, bool>,
    full_seconds: HashMap<(Proto, String), f64>,
    last_poll: Option<Instant>,
}

struct Run<'a> {
    poller: &'a mut Poller,
    sources: Vec<SourceStatus>,
}

impl Run<'_> {
    /// Times `f`, records the source's health and logs one warning when it
    /// goes down (not on every poll).
    fn source<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Poller) -> Result<(T, ReadStats), SourceError>,
    ) -> Option<T> {
        let start = Instant::now();
        let res = f(self.poller);
        let duration_seconds = start.elapsed().as_secs_f64();
        let errors = self.poller.parse_errors.entry(name).or_insert(0);
        let (up, out, error) = match res {
            Ok((v, stats)) => {
                *errors += stats.parse_errors;
                if stats.parse_errors > 0 {
                    tracing::warn!(
                        source = name,
                        skipped = stats.parse_errors,
                        "skipped malformed records"
                    );
                }
                (true, Some(v), None)
            }
            Err(e) => (false, None, Some(e.to_string())),
        };
        let parse_errors_total = *errors;
        let was_up = self.poller.last_up.insert(name, up).unwrap_or(true);
        if let Some(e) = &error
            && was_up
        {
            tracing::warn!(source = name, error = %e, "source failed");
        } else if up && !was_up {
            tracing::info!(source = name, "source recovered");
        }
        self.sources.push(SourceStatus {
            source: name,
            up,
            duration_seconds,
            parse_errors_total,
            error,
        });
        out
    }
}

fn netlink_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "inet_diag_ipv4",
        Family::Ipv6 => "inet_diag_ipv6",
    }
}

fn procfs_tcp(f: Family) -> (&'static str, &'static str) {
    match f {
        Family::Ipv4 => ("proc_net_tcp", "net/tcp"),
        Family::Ipv6 => ("proc_net_tcp6", "net/tcp6"),
    }
}

impl Poller {
    pub fn new(cfg: Config) -> Poller {
        Poller {
            cfg,
            netlink: None,
            parse_errors: HashMap::new(),
            last_up: HashMap::new(),
            full_seconds: HashMap::new(),
            last_poll: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn netlink(&mut self) -> Result<&mut SockDiag, SourceError> {
        if self.netlink.is_none() {
            self.netlink = Some(SockDiag::open()?);
        }
        Ok(self.netlink.as_mut().expect("just opened"))
    }

    /// Reads every source once and classifies what it found.
    pub fn poll(&mut self) -> Sample {
        let started = Instant::now();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mode = self.cfg.source;
        let mut run = Run {
            poller: self,
            sources: Vec::new(),
        };

        let sysctls = run.source("sysctl", |p| {
            Sysctls::read(&p.cfg.procfs).map(|s| (s, ReadStats::default()))
        });
        let model = sysctls.as_ref().map(PortModel::new);

        let mut tcp = TcpCensus::default();
        for family in Family::ALL {
            let mut census = None;
            if mode != SourceMode::Procfs {
                census = run.source(netlink_name(family), |p| {
                    let nl = p.netlink()?;
                    let mut c = TcpCensus::default();
                    let mut visit = |s: TcpSocket| c.observe(model.as_ref(), &s);
                    // Listeners first, so accepted connections and
                    // listening ports are known when the rest arrive.
                    let mut stats = nl.dump_tcp(family, TCP_LISTEN_ONLY, &mut visit)?;
                    stats.add(nl.dump_tcp(
                        family,
                        TCP_ALL_STATES & !TCP_LISTEN_ONLY,
                        &mut visit,
                    )?);
                    Ok((c, stats))
                });
                if census.is_none() {
                    // Reopen next time: the socket may be in a bad state.
                    run.poller.netlink = None;
                }
            }
            if census.is_none() && mode != SourceMode::Netlink {
                let (name, rel) = procfs_tcp(family);
                census = run.source(name, |p| {
                    let reader = p.cfg.procfs.open(rel)?;
                    let mut c = TcpCensus::default();
                    let stats =
                        procfs::parse_tcp(family, reader, &mut |s| c.observe(model.as_ref(), &s))
                            .map_err(|source| SourceError::Io {
                            path: p.cfg.procfs.join(rel),
                            source,
                        })?;
                    Ok((c, stats))
                });
            }
            if let Some(c) = census {
                tcp.merge(c);
            }
        }

        let mut unix = None;
        if mode != SourceMode::Procfs {
            unix = run.source("unix_diag", |p| {
                let nl = p.netlink()?;
                let mut states = UnixStates::default();
                let mut listeners = UnixListeners::default();
                let stats = nl.dump_unix(&mut |s| {
                    states.observe(&s);
                    listeners.observe(&s);
                })?;
                Ok(((states, listeners), stats))
            });
        }
        if unix.is_none() && mode != SourceMode::Netlink {
            unix = run.source("proc_net_unix", |p| {
                let reader = p.cfg.procfs.open("net/unix")?;
                let mut states = UnixStates::default();
                let mut listeners = UnixListeners::default();
                let stats = procfs::parse_unix(reader, &mut |s| {
                    states.observe(&s);
                    listeners.observe(&s);
                })
                .map_err(|source| SourceError::Io {
                    path: p.cfg.procfs.join("net/unix"),
                    source,
                })?;
                Ok(((states, listeners), stats))
            });
        }
        let (unix_states, unix_listeners) = unix.unwrap_or_default();

        let netstat = run.source("proc_net_netstat", |p| {
            let s = p.cfg.procfs.read_to_string("net/netstat")?;
            let c = KernelCounters::parse(&s, "");
            let missing = [c.listen_overflows, c.listen_drops]
                .iter()
                .filter(|v| v.is_none())
                .count();
            Ok((
                c,
                ReadStats {
                    records: 2,
                    parse_errors: missing as u64,
                },
            ))
        });
        let sockstat = run.source("proc_net_sockstat", |p| {
            let s = p.cfg.procfs.read_to_string("net/sockstat")?;
            let c = KernelCounters::parse("", &s);
            let missing = [
                c.sockstat_tcp_tw,
                c.sockstat_tcp_inuse,
                c.sockstat_tcp_orphan,
            ]
            .iter()
            .filter(|v| v.is_none())
            .count();
            Ok((
                c,
                ReadStats {
                    records: 3,
                    parse_errors: missing as u64,
                },
            ))
        });
        let counters = KernelCounters {
            listen_overflows: netstat.as_ref().and_then(|c| c.listen_overflows),
            listen_drops: netstat.as_ref().and_then(|c| c.listen_drops),
            sockstat_tcp_tw: sockstat.as_ref().and_then(|c| c.sockstat_tcp_tw),
            sockstat_tcp_inuse: sockstat.as_ref().and_then(|c| c.sockstat_tcp_inuse),
            sockstat_tcp_orphan: sockstat.as_ref().and_then(|c| c.sockstat_tcp_orphan),
        };

        let sources = std::mem::take(&mut run.sources);
        let somaxconn = sysctls.as_ref().map_or(4096, |s| s.somaxconn);
        let table = listen_queue::table(
            &tcp.listeners,
            &unix_listeners,
            somaxconn,
            self.cfg.max_listeners,
        );
        let listeners = self.accumulate_full(table, started);
        let ephemeral = model.as_ref().map(|m| {
            ephemeral_ports::report(
                m,
                &tcp.listeners.ports,
                &tcp.ports,
                self.cfg.top_destinations,
            )
        });
        Sample {
            timestamp,
            tcp: tcp.states,
            unix: unix_states,
            listeners,
            ephemeral,
            sysctls,
            counters,
            sources,
        }
    }

    /// Adds the time since the previous poll to every listener sampled at
    /// or over its limit. Listeners that disappeared are forgotten (their
    /// counter restarts at 0 if they come back, which `rate()` handles).
    fn accumulate_full(&mut self, rows: Vec<Listener>, now: Instant) -> Vec<ListenerSample> {
        let elapsed = self
            .last_poll
            .map_or(Duration::ZERO, |t| now - t)
            .as_secs_f64();
        self.last_poll = Some(now);
        let mut next = HashMap::with_capacity(rows.len());
        let out = rows
            .into_iter()
            .map(|l| {
                let key = (l.proto, l.listener.clone());
                let mut total = self.full_seconds.get(&key).copied().unwrap_or(0.0);
                if l.full() {
                    total += elapsed;
                }
                next.insert(key, total);
                ListenerSample {
                    listener: l,
                    full_seconds_total: total,
                }
            })
            .collect();
        self.full_seconds = next;
        out
    }
}
