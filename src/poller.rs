//! One poll of one network namespace: which sources to read, in what
//! order, with which fallback, and the census schedule.
//!
//! Every read goes through [`Kernel`] (the namespace's sources) and the
//! [`Health`] executor; every analysis is a `crate::collector` type fed the
//! records as the source yields them, per family, so a source that fails
//! half-way is discarded whole and replaced by its fallback without double
//! counting. The result is a [`Sample`].

use std::time::{Duration, Instant};

use crate::collector::Sample;
use crate::collector::census::{CensusInfo, CensusPolicy};
use crate::collector::ephemeral_ports::{
    self, EphemeralPorts, EphemeralReport, PoolEntries, PortModel,
};
use crate::collector::health::{Health, SourceStatus};
use crate::collector::listen_queue::{self, ListenerTotals, PortSet, TcpListeners, UnixListeners};
use crate::collector::tcp_states::TcpStates;
use crate::collector::unix_states::UnixStates;
use crate::model::{Family, TcpSocket, TcpState, UnixSocket};
use crate::source::counters::Netstat;
use crate::source::kernel::Kernel;
use crate::source::sock_diag::{
    EXT_SKMEMINFO, TCP_ALL_STATES, TCP_LISTEN_ONLY, TCPF_BOUND_INACTIVE, UNIX_ALL_STATES,
    UNIX_LISTEN_ONLY,
};
use crate::source::sysctl::Sysctls;
use crate::source::{ReadStats, SourceError, SourceId};

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
    pub source: SourceMode,
    /// `--ephemeral.top-destinations`.
    pub top_destinations: usize,
    /// `--listen.max-listeners`.
    pub max_listeners: usize,
    /// `--census.*`: how often every socket is read.
    pub census: CensusPolicy,
    /// Dump TCP of both families in one walk when the kernel serves it
    /// (source `inet_diag`); else, or when it fails, one dump per family
    /// (`inet_diag_ipv4`/`_ipv6`).
    pub inet_diag_any_family: bool,
    /// Read `/proc/net/netstat` with the census and at least every
    /// `--census.max-interval` (as the sysctls), rather than every poll:
    /// `--netns all`, where formatting those ~150 counters in every
    /// namespace every second was a fifth of the agent's CPU. Its
    /// counters are cumulative, so only their freshness changes.
    pub netstat_with_census: bool,
}

/// The latest census, carried between polls.
struct Census {
    started: Instant,
    /// Every socket source was netlink (so a listener-only tick works).
    netlink: bool,
    interval: Duration,
    info: CensusInfo,
    tcp: TcpStates,
    unix: Option<UnixStates>,
    tcp_listeners: TcpListeners,
    unix_listeners: UnixListeners,
    ephemeral: Option<EphemeralReport>,
    /// The socket-table sources of the census.
    sources: Vec<SourceStatus>,
}

/// Bound-only sockets (`TCPF_BOUND_INACTIVE`, kernel ≥ 6.8): their ports,
/// as of the latest census that asked for them.
///
/// Asking for them makes the kernel walk its whole bind hash — a bucket
/// for every port in use, TIME_WAIT included — before the established
/// hash, which made the census 30–60 % dearer at 35k sockets, for sockets
/// that are rare and long-lived. So the census asks for them only when
/// [`BoundOnly::due`]: on the first census; when, by the next census, the
/// figure would be older than `--census.max-interval`; and on every
/// census while a pool is near exhaustion
/// ([`EphemeralReport::near_exhaustion`]). In between, the ports read last
/// are carried into each census. A bound-only socket is therefore out of
/// `available` at most `--census.max-interval` plus one poll after it
/// was bound, and a released one is back as late.
#[derive(Debug, Default)]
struct BoundOnly {
    /// When the latest census that read them started.
    read_at: Option<Instant>,
    ports: PortSet,
    /// How many, per family (IPv4, IPv6): carried into the `close` state
    /// count of the censuses that do not read them.
    sockets: [u64; 2],
}

impl BoundOnly {
    /// True when the census starting at `now` must read bound-only
    /// sockets: never read yet; or the next census (`interval` after this
    /// one, the latest census's interval) would find the figure older than
    /// `max_age`; or a pool was near exhaustion at the latest census.
    fn due(&self, now: Instant, interval: Duration, max_age: Duration, near: bool) -> bool {
        near || self
            .read_at
            .is_none_or(|at| now.saturating_duration_since(at) + interval >= max_age)
    }
}

/// TCP analyses of one family (or of all, once merged).
#[derive(Debug, Default)]
struct TcpCensus {
    states: TcpStates,
    listeners: TcpListeners,
    ports: EphemeralPorts,
}

impl TcpCensus {
    /// Empty, counting TIME_WAIT sockets younger than `new_within_ms` as
    /// entries since the previous census.
    fn new(new_within_ms: u32) -> TcpCensus {
        TcpCensus {
            ports: EphemeralPorts::new(new_within_ms),
            ..TcpCensus::default()
        }
    }

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

fn inet_diag_id(f: Family) -> SourceId {
    match f {
        Family::Ipv4 => SourceId::InetDiagIpv4,
        Family::Ipv6 => SourceId::InetDiagIpv6,
    }
}

fn inet_diag_listen_id(f: Family) -> SourceId {
    match f {
        Family::Ipv4 => SourceId::InetDiagIpv4Listen,
        Family::Ipv6 => SourceId::InetDiagIpv6Listen,
    }
}

fn proc_net_tcp_id(f: Family) -> SourceId {
    match f {
        Family::Ipv4 => SourceId::ProcNetTcp,
        Family::Ipv6 => SourceId::ProcNetTcp6,
    }
}

/// Samples one namespace; keeps the state that spans polls (its sources,
/// their health, the full-queue time, the latest census).
pub struct Poller {
    cfg: Config,
    kernel: Kernel,
    health: Health,
    listener_totals: ListenerTotals,
    pool_entries: PoolEntries,
    bound: BoundOnly,
    last_poll: Option<Instant>,
    census: Option<Census>,
    /// The latest sysctl read: when, what, its status.
    sysctls: Option<Carried<Sysctls>>,
    /// The latest `/proc/net/netstat` read, when carried between polls
    /// ([`Config::netstat_with_census`]).
    netstat: Option<Carried<Netstat>>,
}

/// A read kept between polls: when, what, its status.
type Carried<T> = (Instant, Option<T>, SourceStatus);

/// True when `c` must be read again at `now`: never read, failed, or
/// older than `max_age`.
fn stale<T>(c: &Option<Carried<T>>, now: Instant, max_age: Duration) -> bool {
    c.as_ref()
        .is_none_or(|(at, v, _)| v.is_none() || now.saturating_duration_since(*at) >= max_age)
}

/// Reads `id` into `slot` through `health` when `due` or when what `slot`
/// holds is [`stale`] at `now` for `max_age`, else keeps it; returns the
/// value and its status either way.
fn refresh<T: Clone>(
    slot: &mut Option<Carried<T>>,
    due: bool,
    (now, max_age): (Instant, Duration),
    health: &mut Health,
    id: SourceId,
    read: impl FnOnce() -> Result<(T, ReadStats), SourceError>,
) -> (Option<T>, SourceStatus) {
    if due || stale(slot, now, max_age) {
        let (v, st) = health.execute(id, read);
        *slot = Some((now, v, st));
    }
    let (_, v, st) = slot.clone().expect("read above or carried");
    (v, st)
}

/// Who decides whether a poll runs the census ([`Poller::poll_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CensusChoice {
    /// The poller's own [`CensusPolicy`] (`--netns self`).
    Policy,
    /// Run it now (a scheduler above chose this namespace).
    Run,
    /// Do not, unless it must ([`Poller::census_required`]).
    Skip,
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Poller {
    pub fn new(cfg: Config, kernel: Kernel) -> Poller {
        Poller {
            cfg,
            kernel,
            health: Health::default(),
            listener_totals: ListenerTotals::default(),
            pool_entries: PoolEntries::default(),
            bound: BoundOnly::default(),
            last_poll: None,
            census: None,
            sysctls: None,
            netstat: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Reads the sources once: listener queues and counters always;
    /// every socket (the census) when [`CensusPolicy`] says it is due, or
    /// when the listener-only dump fails; the sysctls with the census, and
    /// at least every `--census.max-interval`. Otherwise the census figures
    /// are those of the latest census, which the sample says in
    /// [`Sample::census`].
    pub fn poll(&mut self) -> Sample {
        self.poll_with(CensusChoice::Policy)
    }

    /// True when the next poll must run the census whatever the schedule:
    /// none yet, or the latest did not come whole from netlink (procfs
    /// cannot dump the listeners alone).
    pub fn census_required(&self) -> bool {
        self.census.as_ref().is_none_or(|c| !c.netlink)
    }

    /// Start and duration of the latest census, if any.
    pub fn last_census(&self) -> Option<(Instant, Duration)> {
        self.census
            .as_ref()
            .map(|c| (c.started, Duration::from_secs_f64(c.info.duration_seconds)))
    }

    /// [`Poller::poll`], with the census run or skipped as `choice` says.
    pub fn poll_with(&mut self, choice: CensusChoice) -> Sample {
        let started = Instant::now();
        let timestamp = now_unix();
        let due = match choice {
            CensusChoice::Policy => self.census_due(started),
            CensusChoice::Run => true,
            CensusChoice::Skip => self.census_required(),
        };

        let mut sources = Vec::new();
        let max_age = self.cfg.census.max_interval;
        let (sysctls, st) = refresh(
            &mut self.sysctls,
            due,
            (started, max_age),
            &mut self.health,
            SourceId::Sysctl,
            || self.kernel.sysctls(),
        );
        sources.push(st);

        let mut tick_sources = Vec::new();
        let tick = if due {
            None
        } else {
            self.listeners_only(&mut tick_sources)
        };
        let fresh = tick.is_none();
        if fresh {
            let c = self.census(sysctls.as_ref(), started, timestamp);
            self.census = Some(c);
        }
        let census = self
            .census
            .as_ref()
            .expect("a census just ran or is carried");
        // sysctl, the census's sources (as of the census), this tick's.
        sources.extend(census.sources.iter().cloned());
        sources.extend(tick_sources);

        let (netstat, st) = refresh(
            &mut self.netstat,
            !self.cfg.netstat_with_census || fresh,
            (started, max_age),
            &mut self.health,
            SourceId::ProcNetNetstat,
            || self.kernel.netstat(),
        );
        sources.push(st);
        let (sockstat, st) = self
            .health
            .execute(SourceId::ProcNetSockstat, || self.kernel.sockstat());
        sources.push(st);

        let somaxconn = sysctls.as_ref().map_or(4096, |s| s.somaxconn);
        let table = match tick {
            Some((mut tcp, mut unix)) => {
                tcp.carry_connections(&census.tcp_listeners);
                unix.carry_connections(&census.unix_listeners);
                listen_queue::table(&tcp, &unix)
            }
            None => listen_queue::table(&census.tcp_listeners, &census.unix_listeners),
        };
        let listeners = self.listener_totals.accumulate(table, started);
        let listeners = self
            .listener_totals
            .cap(listeners, somaxconn, self.cfg.max_listeners);
        self.last_poll = Some(started);
        let mut ephemeral = census.ephemeral.clone();
        if let Some(e) = &mut ephemeral {
            e.age_forecasts(started.saturating_duration_since(census.started));
        }
        Sample {
            timestamp,
            census: CensusInfo {
                fresh,
                ..census.info.clone()
            },
            tcp: census.tcp.clone(),
            unix: census.unix.clone(),
            listeners,
            ephemeral,
            sysctls,
            netstat,
            sockstat,
            sources,
        }
    }

    /// True when the next poll must run the census
    /// ([`Poller::census_required`]) or its [`CensusPolicy::interval`] has
    /// passed.
    fn census_due(&self, now: Instant) -> bool {
        let Some(c) = &self.census else { return true };
        if !c.netlink {
            return true;
        }
        let gap = self
            .last_poll
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        CensusPolicy::due(now.saturating_duration_since(c.started), gap, c.interval)
    }

    /// Dumps the TCP (both families in one dump where the kernel serves
    /// it, else one per family) and UNIX listeners only. `None` when
    /// a dump failed: the caller then runs the census, which falls back to
    /// procfs. The sources are reported either way.
    fn listeners_only(
        &mut self,
        sources: &mut Vec<SourceStatus>,
    ) -> Option<(TcpListeners, UnixListeners)> {
        let mut tcp = TcpListeners::default();
        let mut families = &Family::ALL[..];
        if self.cfg.source != SourceMode::Procfs
            && self.cfg.inet_diag_any_family
            && self.kernel.any_family()
        {
            let (l, st) = self.health.execute(SourceId::InetDiagListen, || {
                let mut l = TcpListeners::default();
                let stats =
                    self.kernel
                        .inet_diag(None, TCP_LISTEN_ONLY, EXT_SKMEMINFO, &mut |s| l.observe(&s))?;
                Ok((l, stats))
            });
            sources.push(st);
            if let Some(l) = l {
                tcp = l;
                families = &[];
            }
        }
        for &family in families {
            let (l, st) = self.health.execute(inet_diag_listen_id(family), || {
                let mut l = TcpListeners::default();
                let stats = self.kernel.inet_diag(
                    Some(family),
                    TCP_LISTEN_ONLY,
                    EXT_SKMEMINFO,
                    &mut |s| l.observe(&s),
                )?;
                Ok((l, stats))
            });
            sources.push(st);
            tcp.merge(l?);
        }
        let (unix, st) = self.health.execute(SourceId::UnixDiagListen, || {
            let mut l = UnixListeners::default();
            let stats = self
                .kernel
                .unix_diag(UNIX_LISTEN_ONLY, &mut |s| l.observe(&s))?;
            Ok((l, stats))
        });
        sources.push(st);
        Some((tcp, unix?))
    }

    /// Reads every socket: TCP per family (netlink, else procfs), UNIX
    /// (likewise), and classifies them.
    fn census(&mut self, sysctls: Option<&Sysctls>, started: Instant, timestamp: f64) -> Census {
        let t0 = Instant::now();
        let mode = self.cfg.source;
        let model = sysctls.map(PortModel::new);
        let model = model.as_ref();
        let mut sources = Vec::new();
        let mut netlink = true;
        let previous = self.census.as_ref();
        let read_bound = self.bound.due(
            started,
            previous.map_or(Duration::ZERO, |c| c.interval),
            self.cfg.census.max_interval,
            previous
                .and_then(|c| c.ephemeral.as_ref())
                .is_some_and(EphemeralReport::near_exhaustion),
        );
        // TIME_WAIT sockets younger than the time since the previous
        // census entered TIME_WAIT since.
        let new_within_ms = previous.map_or(u32::MAX, |c| {
            u32::try_from(started.saturating_duration_since(c.started).as_millis())
                .unwrap_or(u32::MAX)
        });
        let fresh = || {
            let mut c = TcpCensus::new(new_within_ms);
            if !read_bound {
                c.listeners.ports.union(&self.bound.ports);
            }
            c
        };
        // Bound-only sockets: read now, or carried from the latest read.
        let bound = if read_bound {
            Bound::Read
        } else {
            Bound::Carried(self.bound.sockets)
        };

        let mut tcp = fresh();
        let mut families = &Family::ALL[..];
        if mode != SourceMode::Procfs && self.cfg.inet_diag_any_family && self.kernel.any_family() {
            let (both, st) = self.health.execute(SourceId::InetDiag, || {
                tcp_dump(&mut self.kernel, None, model, bound, fresh())
            });
            sources.push(st);
            if let Some(mut c) = both {
                for f in Family::ALL {
                    c.states.read(f);
                }
                tcp = c;
                families = &[];
            }
        }
        for &family in families {
            let mut got = None;
            if mode != SourceMode::Procfs {
                let (c, st) = self.health.execute(inet_diag_id(family), || {
                    tcp_dump(&mut self.kernel, Some(family), model, bound, fresh())
                });
                sources.push(st);
                got = c;
            }
            if got.is_none() && mode != SourceMode::Netlink {
                netlink = false;
                let (c, st) = self.health.execute(proc_net_tcp_id(family), || {
                    let mut c = fresh();
                    let stats = self
                        .kernel
                        .proc_net_tcp(family, &mut |s| c.observe(model, &s))?;
                    Ok((c, stats))
                });
                sources.push(st);
                got = c;
            }
            match got {
                Some(mut c) => {
                    c.states.read(family);
                    tcp.merge(c);
                }
                None => netlink = false,
            }
        }

        // unix_diag, else (or with --source procfs) /proc/net/unix.
        let mut unix = None;
        for id in [SourceId::UnixDiag, SourceId::ProcNetUnix] {
            let netlink_source = id == SourceId::UnixDiag;
            let allowed = match mode {
                SourceMode::Auto => true,
                SourceMode::Netlink => netlink_source,
                SourceMode::Procfs => !netlink_source,
            };
            if unix.is_some() || !allowed {
                continue;
            }
            let (u, st) = self.health.execute(id, || {
                let mut c = (UnixStates::default(), UnixListeners::default());
                let mut visit = |s: UnixSocket| {
                    c.0.observe(&s);
                    c.1.observe(&s);
                };
                let stats = if netlink_source {
                    self.kernel.unix_diag(UNIX_ALL_STATES, &mut visit)?
                } else {
                    self.kernel.proc_net_unix(&mut visit)?
                };
                Ok((c, stats))
            });
            sources.push(st);
            unix = u.map(|c| (netlink_source, c));
        }
        if !matches!(unix, Some((true, _))) {
            netlink = false;
        }
        let (unix_states, unix_listeners) = match unix {
            Some((_, (s, l))) => (Some(s), l),
            None => (None, UnixListeners::default()),
        };

        if read_bound && tcp.states.any() {
            self.bound = BoundOnly {
                read_at: Some(started),
                ports: tcp.listeners.bound.clone(),
                sockets: tcp.listeners.bound_sockets,
            };
        }
        let ephemeral = model.filter(|_| tcp.states.any()).map(|m| {
            ephemeral_ports::report(
                m,
                &tcp.listeners.ports,
                &tcp.ports,
                self.cfg.top_destinations,
                &mut self.pool_entries,
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
}

/// The census's inet_diag read of `family` (`None`: both in one walk)
/// into `c`: listeners first (with their `sk_drops`), so that accepted
/// connections and listening ports are known when the rest arrive; then
/// every other state, and bound-only sockets when `bound` is
/// `TCPF_BOUND_INACTIVE` (the kernel walks them before the established
/// hash).
fn tcp_dump(
    kernel: &mut Kernel,
    family: Option<Family>,
    model: Option<&PortModel>,
    bound: Bound,
    mut c: TcpCensus,
) -> Result<(TcpCensus, ReadStats), SourceError> {
    let mut visit = |s: TcpSocket| c.observe(model, &s);
    let mut stats = kernel.inet_diag(family, TCP_LISTEN_ONLY, EXT_SKMEMINFO, &mut visit)?;
    let mut rest = TCP_ALL_STATES & !TCP_LISTEN_ONLY;
    if bound == Bound::Read {
        rest |= TCPF_BOUND_INACTIVE;
    }
    stats.add(kernel.inet_diag(family, rest, 0, &mut visit)?);
    if let Bound::Carried(n) = bound {
        for (i, f) in Family::ALL.into_iter().enumerate() {
            if family.is_none_or(|only| only == f) {
                c.states.read(f);
                c.states.add_read(f, TcpState::Close, n[i]);
            }
        }
    }
    Ok((c, stats))
}

/// Whether a census reads bound-only sockets ([`BoundOnly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Ask inet_diag for them (`TCPF_BOUND_INACTIVE`).
    Read,
    /// Do not; count the latest read's, per family, in the `close` state.
    Carried([u64; 2]),
}

#[cfg(test)]
#[path = "poller/tests.rs"]
mod tests;
