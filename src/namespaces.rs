//! `--netns all`: one agent reads every network namespace of the host.
//!
//! Each poll rediscovers the namespaces ([`crate::source::netns::discover`]);
//! a new one gets a [`Poller`] of its own — the same sources, in that
//! namespace — and a namespace that is gone is dropped with its sockets.
//! One thread (the one this runs on) visits them in turn: it `setns(2)`s
//! into each (its UTS namespace too, for the hostname), polls it there —
//! its sock_diag sockets are created inside and stay bound to it, its
//! `/proc/thread-self/net` and `/proc/sys/net` are that namespace's — and
//! comes back to its own namespace at the end. The census budget is shared
//! ([`SharedBudget`]): each poll it is spent on the namespaces whose TCP
//! socket count (`/proc/net/sockstat`, read every poll) moved since their
//! census, then on the oldest censuses, so the censuses of all namespaces
//! together take `--census.cpu-budget-ratio` of a CPU. What a process
//! in the namespace is (hostname, comm, pod UID) is read when the
//! namespace is found and when its lowest pid changes. The per-listener and per-pool caps hold across all namespaces together
//! ([`listen_queue::cap_across`], [`ephemeral_ports::cap_across`]), and at
//! most `max_namespaces` are reported (those with the most sockets).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::collector::census::{Candidate, SharedBudget};
use crate::collector::netns::{NetnsInfo, NetnsStats};
use crate::collector::{Part, Sample, ephemeral_ports, listen_queue};
use crate::events::{Events, NsEvents};
use crate::model::TcpState;
use crate::poller::{CensusChoice, Config, Poller};
use crate::source::kernel::Kernel;
use crate::source::netns::{self, Found, NsFile};
use crate::source::{ErrorReason, ProcRoot, SourceError};

/// One namespace's sample and what the namespace is (`None`: the agent's
/// own namespace with `--netns self`, reported without a `netns` label).
#[derive(Debug, Clone)]
pub struct NamespaceSample {
    pub netns: Option<NetnsInfo>,
    pub sample: Sample,
}

/// Settings of [`Namespaces`].
#[derive(Debug, Clone)]
pub struct NamespacesConfig {
    /// `--path.procfs`: where `[pid]/ns/net` are found.
    pub procfs: PathBuf,
    /// Where `ip netns add` binds namespaces (`/run/netns`).
    pub run_netns: PathBuf,
    /// The poller settings every namespace gets (the census budget is
    /// shared: [`SharedBudget`]; `/proc/net/netstat` is read with the
    /// census: [`Config::netstat_with_census`]).
    pub poller: Config,
    /// `--netns.max-namespaces`.
    pub max_namespaces: usize,
}

/// One namespace's poller and what is kept of it between polls.
struct Entry {
    poller: Poller,
    /// The namespace, opened once (not through `/proc/PID` every poll).
    ns: NsFile,
    /// What it is, as of when it was found or its lowest pid changed.
    info: Option<NetnsInfo>,
    /// TCP sockets (sockstat `inuse` + `tw`) at its latest census and at
    /// its latest poll.
    sockets_at_census: Option<u64>,
    sockets_now: Option<u64>,
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

fn tcp_sockets(s: &crate::collector::Sample) -> Option<u64> {
    let st = s.sockstat.as_ref()?;
    Some(st.tcp_inuse? + st.tcp_tw.unwrap_or(0))
}

/// Names, at debug, the processes whose `/proc/PID/ns/net` this poll
/// could not read: one line per reason, with their pids.
fn log_discovery_errors(errors: &[netns::DiscoveryError]) {
    if errors.is_empty() || !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let mut by_reason: BTreeMap<&'static str, Vec<u32>> = BTreeMap::new();
    for e in errors {
        by_reason.entry(e.reason.label()).or_default().push(e.pid);
    }
    for (reason, pids) in by_reason {
        tracing::debug!(
            reason,
            processes = pids.len(),
            ?pids,
            "cannot read /proc/PID/ns/net of these processes (counted in sockscope_netns_errors_total)"
        );
    }
}

/// Every namespace's poller; lives on one thread.
pub struct Namespaces {
    cfg: NamespacesConfig,
    entries: BTreeMap<u64, Entry>,
    budget: SharedBudget,
    /// CPU time of the latest poll besides its paid censuses.
    overhead: std::time::Duration,
    errors_total: [u64; ErrorReason::ALL.len()],
    /// The thread's own namespaces, to come back to, and the inode of
    /// its network namespace (polled without `setns`, so that it is served
    /// even without the privileges for the others).
    home_net: File,
    home_uts: File,
    home_inode: u64,
    /// The thread is in another network / UTS namespace than its own
    /// (it goes from one namespace straight to the next, and home for its
    /// own and at the end of a poll).
    away_net: bool,
    away_uts: bool,
    /// `--listen.max-listeners` and `--ephemeral.top-destinations`, applied
    /// across namespaces (each namespace's poller has no cap of its own),
    /// and the aggregate rows' counters per namespace.
    max_listeners: usize,
    top_destinations: usize,
    listener_caps: std::collections::HashMap<u64, listen_queue::ListenerCap>,
    pool_caps:
        std::collections::HashMap<u64, crate::collector::cap::OtherCounters<(String, String), 1>>,
}

impl Namespaces {
    /// Opens the calling thread's own namespaces (to come back to) and
    /// warns once when the privileges for the others are missing.
    ///
    /// # Errors
    /// When `/proc/thread-self/ns/{net,uts}` cannot be opened.
    pub fn new(mut cfg: NamespacesConfig) -> Result<Namespaces, SourceError> {
        cfg.poller.netstat_with_census = true;
        let max_listeners = std::mem::replace(&mut cfg.poller.max_listeners, usize::MAX);
        let top_destinations = std::mem::replace(&mut cfg.poller.top_destinations, usize::MAX);
        let open = |rel: &str| {
            let path = cfg.procfs.join(rel);
            File::open(&path).map_err(|source| SourceError::Io { path, source })
        };
        let home_net = open("thread-self/ns/net")?;
        let home_uts = open("thread-self/ns/uts")?;
        let home_inode = rustix::fs::fstat(&home_net)
            .map_err(|e| SourceError::Io {
                path: cfg.procfs.join("thread-self/ns/net"),
                source: e.into(),
            })?
            .st_ino;
        if !netns::privileged() {
            tracing::warn!(
                "--netns all without CAP_SYS_ADMIN and CAP_SYS_PTRACE: only the namespaces this \
                 process may enter are reported (at least its own); the others are counted in \
                 sockscope_netns_errors_total (on Kubernetes: hostPID, and add both capabilities)"
            );
        }
        Ok(Namespaces {
            cfg,
            entries: BTreeMap::new(),
            budget: SharedBudget::default(),
            overhead: std::time::Duration::ZERO,
            errors_total: [0; ErrorReason::ALL.len()],
            home_net,
            home_uts,
            home_inode,
            away_net: false,
            away_uts: false,
            max_listeners,
            top_destinations,
            listener_caps: Default::default(),
            pool_caps: Default::default(),
        })
    }

    fn go_home(&mut self) {
        use rustix::thread::{LinkNameSpaceType as T, move_into_link_name_space as setns};
        // Back to namespaces it left with the same privilege: cannot fail
        // but for a kernel bug, and then the next enter fails loudly.
        if std::mem::take(&mut self.away_net) {
            let _ = setns(self.home_net.as_fd(), Some(T::Network));
        }
        if std::mem::take(&mut self.away_uts) {
            let _ = setns(self.home_uts.as_fd(), Some(T::HostNameAndNISDomainName));
        }
    }

    /// Discovers, polls every namespace in turn (the census where
    /// [`SharedBudget::plan`] chose it), and returns the reported ones
    /// (sorted by inode) with the discovery figures.
    pub fn poll(&mut self) -> (Vec<NamespaceSample>, NetnsStats) {
        let (out, stats, _) = self.poll_with_events(&mut |_| Events::default());
        (out, stats)
    }

    /// [`Namespaces::poll`], with the event sources' state: `collect` is
    /// called once, after discovery, with every namespace found, and each
    /// namespace's share goes to its poller. Returns the host-wide parts
    /// of [`Events`] too.
    pub fn poll_with_events(
        &mut self,
        collect: &mut dyn FnMut(&[u64]) -> Events,
    ) -> (Vec<NamespaceSample>, NetnsStats, Vec<Arc<dyn Part>>) {
        let cpu0 = thread_cpu_time();
        let d = netns::discover(&self.cfg.procfs, &self.cfg.run_netns);
        for r in &d.errors {
            self.errors_total[r.reason.index()] += 1;
        }
        log_discovery_errors(&d.errors);
        let live: std::collections::BTreeSet<u64> = d.found.iter().map(|f| f.inode).collect();
        self.entries.retain(|inode, _| live.contains(inode));
        let mut events = collect(&live.iter().copied().collect::<Vec<_>>());

        let now = std::time::Instant::now();
        let ratio = self.cfg.poller.census.cpu_budget_ratio;
        let candidates: Vec<Candidate> = d
            .found
            .iter()
            .map(|f| match self.entries.get(&f.inode) {
                None => Candidate {
                    key: f.inode,
                    required: true,
                    age: None,
                    moved: false,
                    cost: std::time::Duration::ZERO,
                },
                Some(e) => {
                    let last = e.poller.last_census();
                    Candidate {
                        key: f.inode,
                        required: e.poller.census_required(),
                        age: last.map(|(t, _)| now.saturating_duration_since(t)),
                        moved: matches!((e.sockets_at_census, e.sockets_now),
                            (Some(a), Some(b)) if Candidate::moved(a, b)),
                        cost: last.map_or(std::time::Duration::ZERO, |(_, d)| d),
                    }
                }
            })
            .collect();
        let chosen: std::collections::BTreeSet<u64> = self
            .budget
            .plan(now, ratio, self.overhead, &candidates)
            .into_iter()
            .collect();
        if !chosen.is_empty() {
            tracing::debug!(?chosen, ?candidates, "census plan");
        }
        let estimated: std::time::Duration = candidates
            .iter()
            .filter(|c| chosen.contains(&c.key) && c.age.is_some())
            .map(|c| c.cost)
            .sum();

        let mut out = Vec::with_capacity(d.found.len());
        let mut actual = std::time::Duration::ZERO;
        for f in d.found {
            let choice = if chosen.contains(&f.inode) {
                CensusChoice::Run
            } else {
                CensusChoice::Skip
            };
            let paid = self.entries.contains_key(&f.inode);
            let ns_events = events.namespaces.remove(&f.inode).unwrap_or_default();
            match self.poll_one(f, choice, &ns_events) {
                Ok(s) => {
                    if s.sample.census.fresh && paid {
                        actual +=
                            std::time::Duration::from_secs_f64(s.sample.census.duration_seconds);
                    }
                    out.push(s);
                }
                Err(e) if e.is_not_found() => {} // exited meanwhile: quietly
                Err(e) => {
                    self.errors_total[e.reason().index()] += 1;
                    tracing::debug!(error = %e, "cannot enter a network namespace");
                }
            }
        }
        self.go_home();
        self.budget.settle(estimated, actual);
        // What this poll spent besides censuses, paid first next poll.
        self.overhead = thread_cpu_time()
            .saturating_sub(cpu0)
            .saturating_sub(actual);
        // Every namespace's census is at most about one round old.
        let round = SharedBudget::round(
            self.entries
                .values()
                .filter_map(|e| e.poller.last_census().map(|(_, d)| d)),
            self.budget.census_ratio(ratio),
        );
        for s in &mut out {
            s.sample.census.interval_seconds = round.as_secs_f64();
        }
        let over_limit = self.select(&mut out);
        let key = |s: &NamespaceSample| s.netns.as_ref().map_or(self.home_inode, |n| n.inode);
        let mut listeners: Vec<(u64, &mut Vec<_>)> = out
            .iter_mut()
            .map(|s| (key(s), &mut s.sample.listeners))
            .collect();
        listen_queue::cap_across(&mut listeners, self.max_listeners, &mut self.listener_caps);
        let mut pools: Vec<(u64, &mut _)> = out
            .iter_mut()
            .filter_map(|s| Some((key(s), s.sample.ephemeral.as_mut()?)))
            .collect();
        ephemeral_ports::cap_across(&mut pools, self.top_destinations, &mut self.pool_caps);
        let stats = NetnsStats {
            discovered: live.len() as u64,
            over_limit,
            errors_total: NetnsStats::errors(&self.errors_total),
        };
        (out, stats, events.host)
    }

    /// Enters `f` and polls it there; what the namespace is comes from
    /// the entry unless it is new or its lowest pid changed (then the UTS
    /// namespace is entered too, for the hostname).
    fn poll_one(
        &mut self,
        f: Found,
        choice: CensusChoice,
        events: &NsEvents,
    ) -> Result<NamespaceSample, SourceError> {
        use rustix::thread::LinkNameSpaceType as T;
        let procfs = self.cfg.procfs.clone();
        let name = f.name.clone().unwrap_or_default();
        let known = self
            .entries
            .get(&f.inode)
            .and_then(|e| e.info.clone())
            .filter(|i| i.pid == f.pid && i.name == name);
        let existing = self.entries.remove(&f.inode);
        let was_known = existing.is_some();
        let mut entry = match existing {
            Some(e) => e,
            None => Entry {
                // Its own: the handle it already has (another user's
                // /proc/PID/ns/net needs CAP_SYS_PTRACE; its own does not).
                ns: if f.inode == self.home_inode {
                    let path = procfs.join("thread-self/ns/net");
                    let file = self
                        .home_net
                        .try_clone()
                        .map_err(|source| SourceError::Io {
                            path: path.clone(),
                            source,
                        })?;
                    NsFile::from_file(file, path)
                } else {
                    NsFile::open(&f.ns_path(&procfs, &self.cfg.run_netns))?
                },
                poller: Poller::new(
                    self.cfg.poller.clone(),
                    Kernel::new(ProcRoot::thread_namespace(&procfs)).keep_sockstat_open(),
                ),
                info: None,
                sockets_at_census: None,
                sockets_now: None,
            },
        };
        let joined = if f.inode == self.home_inode {
            self.go_home();
            Ok(())
        } else {
            self.away_net = true;
            entry
                .ns
                .join(T::Network)
                .and_then(|()| match (&known, f.pid) {
                    (None, Some(p)) => {
                        self.away_uts = true;
                        NsFile::open(&procfs.join(p.to_string()).join("ns/uts"))?
                            .join(T::HostNameAndNISDomainName)
                    }
                    _ => Ok(()),
                })
        };
        if let Err(e) = joined {
            if was_known {
                self.entries.insert(f.inode, entry);
            }
            return Err(e);
        }
        let info = known.unwrap_or_else(|| {
            let hostname = match f.pid {
                Some(_) => std::fs::read_to_string(procfs.join("sys/kernel/hostname"))
                    .map(|h| h.trim_end().to_owned())
                    .unwrap_or_default(),
                None => String::new(),
            };
            let process = f
                .pid
                .map(|p| netns::process_info(&procfs, p))
                .unwrap_or_default();
            NetnsInfo {
                inode: f.inode,
                name,
                hostname,
                pod_uid: process.pod_uid,
                pid: f.pid,
                comm: process.comm,
                agent: f.inode == self.home_inode,
            }
        });
        let sample = entry.poller.poll_with(choice, events);
        entry.info = Some(info.clone());
        entry.sockets_now = tcp_sockets(&sample);
        if sample.census.fresh {
            entry.sockets_at_census = entry.sockets_now;
        }
        self.entries.insert(f.inode, entry);
        Ok(NamespaceSample {
            netns: Some(info),
            sample,
        })
    }

    /// Keeps the `max_namespaces` namespaces with the most sockets (TCP
    /// and UNIX, as of their latest census); returns how many were left
    /// out.
    fn select(&self, out: &mut Vec<NamespaceSample>) -> u64 {
        let max = self.cfg.max_namespaces;
        if out.len() <= max {
            return 0;
        }
        let sockets = |s: &NamespaceSample| {
            let tcp: u64 = TcpState::ALL.iter().map(|&st| s.sample.tcp.total(st)).sum();
            let unix: u64 = s
                .sample
                .unix
                .as_ref()
                .map_or(0, |u| u.counts.iter().flatten().sum());
            tcp + unix
        };
        out.sort_by(|a, b| {
            sockets(b).cmp(&sockets(a)).then(
                a.netns
                    .as_ref()
                    .map(|n| n.inode)
                    .cmp(&b.netns.as_ref().map(|n| n.inode)),
            )
        });
        let dropped = (out.len() - max) as u64;
        out.truncate(max);
        out.sort_by_key(|s| s.netns.as_ref().map(|n| n.inode));
        dropped
    }
}
