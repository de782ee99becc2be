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
use crate::source::sock_diag::{
    SockDiag, TCP_ALL_STATES, TCP_LISTEN_ONLY, UNIX_ALL_STATES, UNIX_LISTEN_ONLY,
};
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
    /// `--census.*`: how often every socket is read.
    pub census: CensusPolicy,
    /// Dump TCP of both families in one walk when the kernel serves it
    /// ([`SockDiag::dump_tcp_any_family`], source `inet_diag`); else, or
    /// when it fails, one dump per family (`inet_diag_ipv4`/`_ipv6`).
    pub inet_diag_any_family: bool,
}

/// When the census runs (`--census.cpu-budget-ratio`,
/// `--census.max-interval`).
///
/// Every poll samples the listeners (accept queues: a listener-only
/// inet_diag/unix_diag dump, cheap whatever the number of sockets). The
/// census reads every TCP and UNIX socket (states, ephemeral-port pools,
/// accepted connections per listener); its cost is linear in sockets and
/// mostly the kernel's (see BENCHMARKS.md), so it runs every poll only
/// while that is cheap: after a census that took `d`, the next waits
/// `d / cpu_budget_ratio`, at most `max_interval`. A census that is not
/// all netlink (a procfs fallback) is repeated every poll, since procfs
/// cannot list listeners alone.
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
}

/// When the census figures of a [`Sample`] (TCP and UNIX states,
/// ephemeral ports, accepted connections) were taken.
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

/// The latest census, carried between polls.
struct Census {
    started: Instant,
    /// Every socket source was netlink (so a listener-only tick works).
    netlink: bool,
    interval: Duration,
    info: CensusInfo,
    tcp: TcpStates,
    unix: UnixStates,
    tcp_listeners: TcpListeners,
    unix_listeners: UnixListeners,
    ephemeral: Option<EphemeralReport>,
    /// The socket-table sources of the census.
    sources: Vec<SourceStatus>,
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
    /// When `tcp`, `unix`, `ephemeral` and the listeners' `connected`
    /// were counted; the listener queues, sysctls and counters are this
    /// poll's.
    pub census: CensusInfo,
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
    census: Option<Census>,
}

struct Run<'a> {
    poller: &'a mut Poller,
    sources: Vec<SourceStatus>,
}

impl<'a> Run<'a> {
    fn new(poller: &'a mut Poller) -> Self {
        Run {
            poller,
            sources: Vec::new(),
        }
    }

    /// `/proc/net/netstat` and `/proc/net/sockstat`, as two sources.
    fn counters(&mut self) -> KernelCounters {
        let netstat = self.source("proc_net_netstat", |p| {
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
        let sockstat = self.source("proc_net_sockstat", |p| {
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
        KernelCounters {
            listen_overflows: netstat.as_ref().and_then(|c| c.listen_overflows),
            listen_drops: netstat.as_ref().and_then(|c| c.listen_drops),
            sockstat_tcp_tw: sockstat.as_ref().and_then(|c| c.sockstat_tcp_tw),
            sockstat_tcp_inuse: sockstat.as_ref().and_then(|c| c.sockstat_tcp_inuse),
            sockstat_tcp_orphan: sockstat.as_ref().and_then(|c| c.sockstat_tcp_orphan),
        }
    }

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
            census: None,
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

    /// Reads the sources once: listener queues, sysctls and counters
    /// always; every socket (the census) when [`CensusPolicy`] says it is
    /// due, or when the listener-only dump fails. Otherwise the census
    /// figures are those of the latest census, which the sample says in
    /// [`Sample::census`].
    pub fn poll(&mut self) -> Sample {
        let started = Instant::now();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let due = self.census_due(started);

        let mut run = Run::new(self);
        let sysctls = run.source("sysctl", |p| {
            Sysctls::read(&p.cfg.procfs).map(|s| (s, ReadStats::default()))
        });
        let mut sources = run.sources;

        let (tick, tick_sources) = if due {
            (None, Vec::new())
        } else {
            self.listeners_only()
        };
        let fresh = tick.is_none();
        if fresh {
            self.census = Some(self.census(sysctls.as_ref(), started, timestamp));
        }
        let census = self.census.take().expect("a census just ran or is carried");
        // sysctl, the census's sources (as of the census), this tick's.
        sources.extend(census.sources.iter().cloned());
        sources.extend(tick_sources);

        let mut run = Run::new(self);
        let counters = run.counters();
        sources.extend(run.sources);

        let somaxconn = sysctls.as_ref().map_or(4096, |s| s.somaxconn);
        let max = self.cfg.max_listeners;
        let table = match tick {
            Some((mut tcp, mut unix)) => {
                tcp.carry_connections(&census.tcp_listeners);
                unix.carry_connections(&census.unix_listeners);
                listen_queue::table(&tcp, &unix, somaxconn, max)
            }
            None => listen_queue::table(
                &census.tcp_listeners,
                &census.unix_listeners,
                somaxconn,
                max,
            ),
        };
        let listeners = self.accumulate_full(table, started);
        let sample = Sample {
            timestamp,
            census: CensusInfo {
                fresh,
                ..census.info.clone()
            },
            tcp: census.tcp.clone(),
            unix: census.unix.clone(),
            listeners,
            ephemeral: census.ephemeral.clone(),
            sysctls,
            counters,
            sources,
        };
        self.census = Some(census);
        sample
    }

    /// True when the next poll must run the census: none yet, the latest
    /// one did not come whole from netlink (procfs cannot dump listeners
    /// alone), or its [`CensusPolicy::interval`] has passed (a tenth of a
    /// poll early counts, so tick jitter does not push it a whole poll).
    fn census_due(&self, now: Instant) -> bool {
        let Some(c) = &self.census else { return true };
        if !c.netlink {
            return true;
        }
        let gap = self
            .last_poll
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        now.saturating_duration_since(c.started) + gap / 10 >= c.interval
    }

    /// Dumps the TCP (both families) and UNIX listeners only. `None` when
    /// a dump failed: the caller then runs the census, which falls back to
    /// procfs. The sources are reported either way.
    fn listeners_only(&mut self) -> (Option<(TcpListeners, UnixListeners)>, Vec<SourceStatus>) {
        let mut run = Run::new(self);
        let mut tcp = TcpListeners::default();
        for family in Family::ALL {
            let name = match family {
                Family::Ipv4 => "inet_diag_ipv4_listen",
                Family::Ipv6 => "inet_diag_ipv6_listen",
            };
            let l = run.source(name, |p| {
                let mut l = TcpListeners::default();
                let stats = p
                    .netlink()?
                    .dump_tcp(family, TCP_LISTEN_ONLY, &mut |s| l.observe(&s))?;
                Ok((l, stats))
            });
            match l {
                Some(l) => tcp.merge(l),
                None => {
                    run.poller.netlink = None;
                    return (None, run.sources);
                }
            }
        }
        let unix = run.source("unix_diag_listen", |p| {
            let mut l = UnixListeners::default();
            let stats = p
                .netlink()?
                .dump_unix(UNIX_LISTEN_ONLY, &mut |s| l.observe(&s))?;
            Ok((l, stats))
        });
        if unix.is_none() {
            run.poller.netlink = None;
        }
        (unix.map(|u| (tcp, u)), run.sources)
    }

    /// Reads every socket: TCP per family (netlink, else procfs), UNIX
    /// (likewise), and classifies them.
    fn census(&mut self, sysctls: Option<&Sysctls>, started: Instant, timestamp: f64) -> Census {
        let t0 = Instant::now();
        let mode = self.cfg.source;
        let model = sysctls.map(PortModel::new);
        let mut run = Run::new(self);
        let mut netlink = true;

        let mut tcp = TcpCensus::default();
        let mut families = &Family::ALL[..];
        let any_family = mode != SourceMode::Procfs
            && run.poller.cfg.inet_diag_any_family
            && run.poller.netlink().is_ok_and(|nl| nl.any_family());
        if any_family {
            let both = run.source("inet_diag", |p| {
                let nl = p.netlink()?;
                let mut c = TcpCensus::default();
                let mut visit = |s: TcpSocket| c.observe(model.as_ref(), &s);
                // Listeners first, as below.
                let mut stats = nl.dump_tcp_any_family(TCP_LISTEN_ONLY, &mut visit)?;
                stats.add(nl.dump_tcp_any_family(TCP_ALL_STATES & !TCP_LISTEN_ONLY, &mut visit)?);
                Ok((c, stats))
            });
            match both {
                Some(c) => {
                    tcp = c;
                    families = &[];
                }
                // Reopen; the per-family dumps below try again.
                None => run.poller.netlink = None,
            }
        }
        for &family in families {
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
                netlink = false;
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
            match census {
                Some(c) => tcp.merge(c),
                None => netlink = false,
            }
        }

        let mut unix = None;
        if mode != SourceMode::Procfs {
            unix = run.source("unix_diag", |p| {
                let nl = p.netlink()?;
                let mut states = UnixStates::default();
                let mut listeners = UnixListeners::default();
                let stats = nl.dump_unix(UNIX_ALL_STATES, &mut |s| {
                    states.observe(&s);
                    listeners.observe(&s);
                })?;
                Ok(((states, listeners), stats))
            });
        }
        if unix.is_none() {
            netlink = false;
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
        let sources = run.sources;

        let ephemeral = model.as_ref().map(|m| {
            ephemeral_ports::report(
                m,
                &tcp.listeners.ports,
                &tcp.ports,
                self.cfg.top_destinations,
            )
        });
        let took = t0.elapsed();
        let interval = self.cfg.census.interval(took);
        Census {
            started,
            netlink,
            interval,
            info: CensusInfo {
                timestamp,
                duration_seconds: took.as_secs_f64(),
                interval_seconds: interval.as_secs_f64(),
                fresh: true,
            },
            tcp: tcp.states,
            unix: unix_states,
            tcp_listeners: tcp.listeners,
            unix_listeners,
            ephemeral,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TcpState;

    fn poller(census: CensusPolicy) -> Poller {
        Poller::new(Config {
            procfs: ProcRoot::new("/proc"),
            source: SourceMode::Auto,
            top_destinations: 20,
            max_listeners: 100_000,
            census,
            inet_diag_any_family: true,
        })
    }

    #[test]
    fn census_interval_is_cost_over_budget_capped() {
        let p = CensusPolicy {
            cpu_budget_ratio: 0.01,
            max_interval: Duration::from_secs(15),
        };
        assert_eq!(
            p.interval(Duration::from_millis(25)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            p.interval(Duration::from_millis(400)),
            Duration::from_secs(15)
        );
        assert_eq!(
            CensusPolicy::EVERY_POLL.interval(Duration::from_secs(3)),
            Duration::ZERO
        );
        let every = CensusPolicy {
            cpu_budget_ratio: 1.0,
            max_interval: Duration::from_secs(15),
        };
        assert_eq!(
            every.interval(Duration::from_millis(7)),
            Duration::from_millis(7)
        );
    }

    fn listener_row(s: &Sample, port: u16) -> Option<&Listener> {
        let name = format!("127.0.0.1:{port}");
        s.listeners
            .iter()
            .map(|l| &l.listener)
            .find(|l| l.proto == Proto::Tcp && l.listener == name)
    }

    /// Between censuses a poll dumps the listeners only: a listener and a
    /// queued connection made after the census show at once, while the
    /// census figures are carried unchanged.
    #[test]
    fn listener_tick_between_censuses() {
        let mut p = poller(CensusPolicy {
            cpu_budget_ratio: 1e-9,
            max_interval: Duration::from_secs(3600),
        });
        let first = p.poll();
        assert!(first.census.fresh, "the first poll takes a census");
        assert!(
            first
                .sources
                .iter()
                .any(|s| s.source == "inet_diag" && s.up)
        );

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _queued = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

        let second = p.poll();
        assert!(!second.census.fresh, "no census within the interval");
        assert_eq!(second.census.timestamp, first.census.timestamp);
        assert_eq!(second.tcp, first.tcp, "census figures are carried");
        assert_eq!(second.ephemeral, first.ephemeral);
        for s in [
            "inet_diag_ipv4_listen",
            "inet_diag_ipv6_listen",
            "unix_diag_listen",
        ] {
            assert!(
                second.sources.iter().any(|x| x.source == s && x.up),
                "{s} up in {:?}",
                second.sources
            );
        }
        let row = listener_row(&second, port).expect("the new listener is sampled");
        assert_eq!(row.length, 1, "its queued connection");
        assert_eq!(row.connected, 0, "the census never saw it: nothing carried");

        // A census on every poll sees everything fresh.
        let mut every = poller(CensusPolicy::EVERY_POLL);
        every.poll();
        let again = every.poll();
        assert!(again.census.fresh);
        assert!(!again.sources.iter().any(|s| s.source.ends_with("_listen")));
        assert_eq!(listener_row(&again, port).map(|r| r.length), Some(1));
    }

    /// One inet_diag dump for both families (`inet_diag`), or one per
    /// family when that is off; both see a listener of each family.
    #[test]
    fn inet_diag_one_dump_or_per_family() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let (p4, p6) = (
            v4.local_addr().unwrap().port(),
            v6.local_addr().unwrap().port(),
        );
        for any_family in [true, false] {
            let mut p = poller(CensusPolicy::EVERY_POLL);
            p.cfg.inet_diag_any_family = any_family;
            let s = p.poll();
            let up: Vec<&str> = s
                .sources
                .iter()
                .filter(|x| x.up && x.source.starts_with("inet_diag"))
                .map(|x| x.source)
                .collect();
            let want: &[&str] = if any_family {
                &["inet_diag"]
            } else {
                &["inet_diag_ipv4", "inet_diag_ipv6"]
            };
            assert_eq!(up, want, "sources with any_family = {any_family}");
            assert!(listener_row(&s, p4).is_some(), "127.0.0.1:{p4}");
            let name6 = format!("[::1]:{p6}");
            assert!(
                s.listeners.iter().any(|l| l.listener.listener == name6),
                "{name6} with any_family = {any_family}"
            );
            assert!(s.tcp.family(Family::Ipv6)[TcpState::Listen.index()] >= 1);
        }
    }

    /// procfs cannot dump listeners alone: every poll is a census.
    #[test]
    fn procfs_census_every_poll() {
        let mut p = poller(CensusPolicy {
            cpu_budget_ratio: 1e-9,
            max_interval: Duration::from_secs(3600),
        });
        p.cfg.source = SourceMode::Procfs;
        p.poll();
        let second = p.poll();
        assert!(second.census.fresh);
        assert!(
            second
                .sources
                .iter()
                .any(|s| s.source == "proc_net_tcp" && s.up)
        );
    }
}
