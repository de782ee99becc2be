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
use crate::events::NsEvents;
use crate::model::{Family, TcpSocket, TcpState, UnixSocket};
use crate::source::chain::{Read, TcpChain, TcpObserver, TcpReader, UnixChain, UnixObserver};
use crate::source::counters::Netstat;
use crate::source::kernel::Kernel;
use crate::source::sysctl::Sysctls;
use crate::source::{ReadStats, SourceError, SourceId};

pub use crate::source::chain::SourceMode;

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

/// The fallback chains of one poller, built once from its [`Config`].
#[derive(Debug)]
struct Chains {
    tcp: TcpChain,
    tcp_listeners: TcpChain,
    unix: UnixChain,
    unix_listeners: UnixChain,
}

impl Chains {
    fn new(cfg: &Config) -> Chains {
        let census = Read::Census { bound: false };
        Chains {
            tcp: TcpChain::new(cfg.source, cfg.inet_diag_any_family, census),
            tcp_listeners: TcpChain::new(cfg.source, cfg.inet_diag_any_family, Read::Listeners),
            unix: UnixChain::new(cfg.source, census),
            unix_listeners: UnixChain::new(cfg.source, Read::Listeners),
        }
    }
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

/// The census's TCP analyses of one read (or of all, once merged). The
/// order they must see records in: the listeners first, so that
/// accepted connections and listening ports are known when the rest
/// arrive (`crate::source::chain`).
#[derive(Debug, Default)]
struct TcpCensus {
    states: TcpStates,
    listeners: TcpListeners,
    ports: EphemeralPorts,
    model: Option<PortModel>,
    /// Bound-only sockets not read this census: the latest read's count
    /// per family, added to `close` of each family netlink delivers.
    carried_bound: Option<[u64; 2]>,
}

impl TcpCensus {
    /// Empty, counting TIME_WAIT sockets younger than `new_within_ms` as
    /// entries since the previous census.
    fn new(new_within_ms: u32, model: Option<PortModel>) -> TcpCensus {
        TcpCensus {
            ports: EphemeralPorts::new(new_within_ms),
            model,
            ..TcpCensus::default()
        }
    }
}

impl TcpObserver for TcpCensus {
    fn observe(&mut self, s: &TcpSocket) {
        self.states.observe(s);
        self.listeners.observe(s);
        if let Some(m) = &self.model {
            self.ports.observe(m, &self.listeners.ports, s);
        }
    }

    fn family_read(&mut self, family: Family, reader: TcpReader) {
        self.states.read(family);
        if let (Some(n), true) = (self.carried_bound, reader.netlink()) {
            self.states
                .add_read(family, TcpState::Close, n[family.index()]);
        }
    }

    fn merge(&mut self, o: TcpCensus) {
        self.states.merge(&o.states);
        self.listeners.merge(o.listeners);
        self.ports.merge(o.ports);
    }
}

impl TcpObserver for TcpListeners {
    fn observe(&mut self, s: &TcpSocket) {
        TcpListeners::observe(self, s);
    }

    fn family_read(&mut self, _: Family, _: TcpReader) {}

    fn merge(&mut self, o: TcpListeners) {
        TcpListeners::merge(self, o);
    }
}

impl UnixObserver for UnixListeners {
    fn observe(&mut self, s: &UnixSocket) {
        UnixListeners::observe(self, s);
    }
}

/// The census's UNIX analyses.
#[derive(Debug, Default)]
struct UnixCensus {
    states: UnixStates,
    listeners: UnixListeners,
}

impl UnixObserver for UnixCensus {
    fn observe(&mut self, s: &UnixSocket) {
        self.states.observe(s);
        self.listeners.observe(s);
    }
}

/// Samples one namespace; keeps the state that spans polls (its sources,
/// their health, the full-queue time, the latest census).
pub struct Poller {
    cfg: Config,
    chains: Chains,
    kernel: Kernel,
    health: Health,
    listener_totals: ListenerTotals,
    pool_entries: PoolEntries,
    bound: BoundOnly,
    last_poll: Option<Instant>,
    census: Option<Census>,
    sysctls: Carried<Sysctls>,
    /// Carried between polls when [`Config::netstat_with_census`].
    netstat: Carried<Netstat>,
}

/// A read kept between polls: when it was taken, what it gave (`None`:
/// it failed), its status.
#[derive(Debug)]
struct Carried<T> {
    latest: Option<(Instant, Option<T>, SourceStatus)>,
}

impl<T> Default for Carried<T> {
    fn default() -> Self {
        Carried { latest: None }
    }
}

impl<T: Clone> Carried<T> {
    /// True when it must be read again at `now`: never read, failed, or
    /// older than `max_age`.
    fn stale(&self, now: Instant, max_age: Duration) -> bool {
        self.latest
            .as_ref()
            .is_none_or(|(at, v, _)| v.is_none() || now.saturating_duration_since(*at) >= max_age)
    }

    /// Reads `id` through `health` when `due` or [`Carried::stale`] at
    /// `now` for `max_age`, else keeps the latest; returns the value and
    /// its status either way.
    fn refresh(
        &mut self,
        due: bool,
        (now, max_age): (Instant, Duration),
        health: &mut Health,
        id: SourceId,
        read: impl FnOnce() -> Result<(T, ReadStats), SourceError>,
    ) -> (Option<T>, SourceStatus) {
        if due || self.stale(now, max_age) {
            let (v, st) = health.execute(id, read);
            self.latest = Some((now, v, st));
        }
        let (_, v, st) = self.latest.clone().expect("read above or carried");
        (v, st)
    }
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
            chains: Chains::new(&cfg),
            cfg,
            kernel,
            health: Health::default(),
            listener_totals: ListenerTotals::default(),
            pool_entries: PoolEntries::default(),
            bound: BoundOnly::default(),
            last_poll: None,
            census: None,
            sysctls: Carried::default(),
            netstat: Carried::default(),
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
        self.poll_with(CensusChoice::Policy, &NsEvents::default())
    }

    /// True when the next poll must run the census whatever the schedule:
    /// none yet, or the latest did not come whole from netlink (procfs
    /// cannot dump the listeners alone).
    pub(crate) fn census_required(&self) -> bool {
        self.census.as_ref().is_none_or(|c| !c.netlink)
    }

    /// Start and duration of the latest census, if any.
    pub(crate) fn last_census(&self) -> Option<(Instant, Duration)> {
        self.census
            .as_ref()
            .map(|c| (c.started, Duration::from_secs_f64(c.info.duration_seconds)))
    }

    /// [`Poller::poll`], with the census run or skipped as `choice` says,
    /// and the event sources' share of this namespace merged in.
    pub(crate) fn poll_with(&mut self, choice: CensusChoice, events: &NsEvents) -> Sample {
        let started = Instant::now();
        let timestamp = now_unix();
        let due = match choice {
            CensusChoice::Policy => self.census_due(started),
            CensusChoice::Run => true,
            CensusChoice::Skip => self.census_required(),
        };

        let mut sources = Vec::new();
        let max_age = self.cfg.census.max_interval;
        let (sysctls, st) = self.sysctls.refresh(
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
            self.pool_entries
                .set_exact(events.time_wait_entries.as_ref(), started);
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

        let (netstat, st) = self.netstat.refresh(
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
            parts: events.parts.clone(),
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
        let tcp = self.chains.tcp_listeners.read(
            &mut self.kernel,
            &mut self.health,
            sources,
            &TcpListeners::default,
        );
        if !tcp.whole() {
            return None;
        }
        let (unix, _) = self.chains.unix_listeners.read(
            &mut self.kernel,
            &mut self.health,
            sources,
            &UnixListeners::default,
        )?;
        Some((tcp.observer, unix))
    }

    /// Reads every socket: TCP per family (netlink, else procfs), UNIX
    /// (likewise), and classifies them.
    fn census(&mut self, sysctls: Option<&Sysctls>, started: Instant, timestamp: f64) -> Census {
        let t0 = Instant::now();
        let model = sysctls.map(PortModel::new);
        let model = model.as_ref();
        let mut sources = Vec::new();
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
        // Bound-only sockets: read now, or carried from the latest read.
        let bound = &self.bound;
        let fresh = || {
            let mut c = TcpCensus::new(new_within_ms, model.cloned());
            if !read_bound {
                c.listeners.ports.union(&bound.ports);
                c.carried_bound = Some(bound.sockets);
            }
            c
        };

        let tcp = self.chains.tcp.with_bound(read_bound).read(
            &mut self.kernel,
            &mut self.health,
            &mut sources,
            &fresh,
        );
        let netlink_tcp = tcp.netlink;
        let tcp = tcp.observer;

        // unix_diag, else (or with --source procfs) /proc/net/unix.
        let unix = self.chains.unix.read(
            &mut self.kernel,
            &mut self.health,
            &mut sources,
            &UnixCensus::default,
        );
        let netlink = netlink_tcp && matches!(unix, Some((_, true)));
        let (unix_states, unix_listeners) = match unix {
            Some((u, _)) => (Some(u.states), u.listeners),
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

#[cfg(test)]
#[path = "poller/tests.rs"]
mod tests;
