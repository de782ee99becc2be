//! `--netns all`: one agent reads every network namespace of the host.
//!
//! Each poll rediscovers the namespaces ([`crate::source::netns::discover`]);
//! a new one gets a [`Poller`] of its own — the same sources, in that
//! namespace — and a namespace that is gone is dropped with its sockets.
//! One thread (the one this runs on) visits them in turn: it `setns(2)`s
//! into each (its UTS namespace too, for the hostname), polls it there —
//! its sock_diag sockets are created inside and stay bound to it, its
//! `/proc/thread-self/net` and `/proc/sys/net` are that namespace's — and
//! comes back to its own namespace at the end. The census budget is shared:
//! each namespace gets `--census.cpu-budget-ratio` / (number of namespaces).
//! The per-listener and per-pool caps hold across all namespaces together
//! ([`listen_queue::cap_across`], [`ephemeral_ports::cap_across`]), and at
//! most `max_namespaces` are reported (those with the most sockets).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::collector::census::CensusPolicy;
use crate::collector::netns::{NetnsInfo, NetnsStats};
use crate::collector::{Sample, ephemeral_ports, listen_queue};
use crate::model::TcpState;
use crate::poller::{Config, Poller};
use crate::source::kernel::Kernel;
use crate::source::netns::{self, Found};
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
    /// The poller settings every namespace gets (its census budget is
    /// divided among them).
    pub poller: Config,
    /// `--netns.max-namespaces`.
    pub max_namespaces: usize,
}

/// Every namespace's poller; lives on one thread.
pub struct Namespaces {
    cfg: NamespacesConfig,
    entries: BTreeMap<u64, Poller>,
    errors_total: [u64; ErrorReason::ALL.len()],
    /// The thread's own namespaces, to come back to, and the inode of
    /// its network namespace (polled without `setns`, so that it is served
    /// even without the privileges for the others).
    home_net: File,
    home_uts: File,
    home_inode: u64,
}

impl Namespaces {
    /// Opens the calling thread's own namespaces (to come back to) and
    /// warns once when the privileges for the others are missing.
    ///
    /// # Errors
    /// When `/proc/thread-self/ns/{net,uts}` cannot be opened.
    pub fn new(cfg: NamespacesConfig) -> Result<Namespaces, SourceError> {
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
            errors_total: [0; ErrorReason::ALL.len()],
            home_net,
            home_uts,
            home_inode,
        })
    }

    fn go_home(&self) {
        use rustix::thread::{LinkNameSpaceType as T, move_into_link_name_space as setns};
        // Only fails if the thread never left (no privilege): harmless.
        let _ = setns(self.home_net.as_fd(), Some(T::Network));
        let _ = setns(self.home_uts.as_fd(), Some(T::HostNameAndNISDomainName));
    }

    /// Discovers, polls every namespace in turn, and returns the reported
    /// ones (sorted by inode) with the discovery figures.
    pub fn poll(&mut self) -> (Vec<NamespaceSample>, NetnsStats) {
        let d = netns::discover(&self.cfg.procfs, &self.cfg.run_netns);
        for r in &d.errors {
            self.errors_total[r.index()] += 1;
        }
        let live: std::collections::BTreeSet<u64> = d.found.iter().map(|f| f.inode).collect();
        self.entries.retain(|inode, _| live.contains(inode));
        let n = d.found.len().max(1) as f64;
        let share = CensusPolicy {
            cpu_budget_ratio: self.cfg.poller.census.cpu_budget_ratio / n,
            ..self.cfg.poller.census
        };

        let mut out = Vec::with_capacity(d.found.len());
        for f in d.found {
            match self.poll_one(f, share) {
                Ok(s) => out.push(s),
                Err(e) if e.is_not_found() => {} // exited meanwhile: quietly
                Err(e) => {
                    self.errors_total[e.reason().index()] += 1;
                    tracing::debug!(error = %e, "cannot enter a network namespace");
                }
            }
            self.go_home();
        }
        let over_limit = self.select(&mut out);
        let mut listeners: Vec<&mut Vec<_>> =
            out.iter_mut().map(|s| &mut s.sample.listeners).collect();
        listen_queue::cap_across(&mut listeners, self.cfg.poller.max_listeners);
        let mut pools: Vec<&mut _> = out
            .iter_mut()
            .filter_map(|s| s.sample.ephemeral.as_mut())
            .collect();
        ephemeral_ports::cap_across(&mut pools, self.cfg.poller.top_destinations);
        let stats = NetnsStats {
            discovered: live.len() as u64,
            over_limit,
            errors_total: NetnsStats::errors(&self.errors_total),
        };
        (out, stats)
    }

    /// Enters `f` and polls it there.
    fn poll_one(&mut self, f: Found, share: CensusPolicy) -> Result<NamespaceSample, SourceError> {
        let procfs = self.cfg.procfs.clone();
        if f.inode != self.home_inode {
            let uts = f.pid.map(|p| procfs.join(p.to_string()).join("ns/uts"));
            netns::enter(&f.ns_path(&procfs, &self.cfg.run_netns), uts.as_deref())?;
        }
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
        let poller = self.entries.entry(f.inode).or_insert_with(|| {
            Poller::new(
                self.cfg.poller.clone(),
                Kernel::new(ProcRoot::thread_namespace(&procfs)),
            )
        });
        poller.set_census_policy(share);
        let sample = poller.poll();
        Ok(NamespaceSample {
            netns: Some(NetnsInfo {
                inode: f.inode,
                name: f.name.unwrap_or_default(),
                hostname,
                pod_uid: process.pod_uid,
                pid: f.pid,
                comm: process.comm,
            }),
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
