//! The agent's poll loop: on its clock (`--poll.interval`), each tick
//! polls the namespace (on the poller's own thread: its reads block) and
//! publishes one [`Report`]. Each nginx target is scraped by a task of its
//! own on the same interval, each scrape bounded by `--nginx.timeout`, so a
//! target that hangs never delays the kernel poll. `/metrics` joins the
//! latest report with the latest scrape of each target ([`Latest`]); each
//! scrape carries its own timestamp.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::MetricFamily;
use tokio::sync::{oneshot, watch};

use crate::collector::Part;
use crate::collector::netns::NetnsStats;
use crate::collector::nginx;
use crate::events::{EventSource, Events};
use crate::metrics::Families;
use crate::namespaces::{NamespaceSample, Namespaces, NamespacesConfig};
use crate::poller::Poller;
use crate::source::stub_status::{Scraper, TargetSample};

crate::metric_specs! {
    BUILD_INFO = "sockscope_build_info", Gauge, ["version"],
        "A metric with a constant 1 labelled with the version of sockscope.";
}

/// What one poll learned: each namespace's sample, the discovery
/// figures (`--netns all`) and the event sources' host-wide parts (their
/// health).
#[derive(Debug, Clone)]
pub struct Report {
    pub namespaces: Vec<NamespaceSample>,
    pub netns: Option<NetnsStats>,
    pub parts: Vec<Arc<dyn Part>>,
}

/// The latest of everything `/metrics` shows: the poll loop's report and
/// each nginx target's latest scrape, each published on its own clock.
#[derive(Clone)]
pub struct Latest {
    report: watch::Receiver<Arc<Report>>,
    nginx: Arc<[watch::Receiver<Arc<TargetSample>>]>,
}

impl Latest {
    /// A view of a fixed report and fixed scrapes (tests, tools).
    pub fn fixed(report: Report, nginx: Vec<TargetSample>) -> Latest {
        let (_, report) = watch::channel(Arc::new(report));
        let nginx = nginx
            .into_iter()
            .map(|t| watch::channel(Arc::new(t)).1)
            .collect();
        Latest { report, nginx }
    }

    /// The latest report and the latest scrape of each target, now.
    pub fn view(&self) -> View {
        View {
            report: self.report.borrow().clone(),
            nginx: self.nginx.iter().map(|r| r.borrow().clone()).collect(),
        }
    }

    /// Waits for the next report of the poll loop.
    ///
    /// # Errors
    /// When the poll loop has stopped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.report.changed().await
    }
}

/// One moment's [`Latest`]: what a scrape of `/metrics` encodes.
#[derive(Debug, Clone)]
pub struct View {
    pub report: Arc<Report>,
    pub nginx: Vec<Arc<TargetSample>>,
}

impl View {
    /// Every family of the exposition: build info, each namespace's (under
    /// its `netns` label with `--netns all`), nginx's.
    pub fn families(&self) -> Vec<MetricFamily> {
        let nginx: Vec<&TargetSample> = self.nginx.iter().map(|t| t.as_ref()).collect();
        self.report.families_with(&nginx)
    }
}

impl Report {
    /// Every family of the report and of the given nginx scrapes.
    fn families_with(&self, nginx_targets: &[&TargetSample]) -> Vec<MetricFamily> {
        let mut out = Families::new();
        out.push(&BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1.0);
        for ns in &self.namespaces {
            match &ns.netns {
                None => ns.sample.encode(&mut out),
                Some(info) => {
                    out.scoped(&[("netns", info.label())], |o| ns.sample.encode(o));
                    info.encode(&mut out);
                }
            }
        }
        if let Some(stats) = &self.netns {
            stats.encode(&mut out);
        }
        for p in &self.parts {
            p.encode(&mut out);
        }
        nginx::encode(nginx_targets, &mut out);
        out.finish()
    }
}

/// What the sampling thread polls: the agent's own namespace
/// (`--netns self`) or every namespace of the host (`--netns all`).
pub enum Sampler {
    Own(Box<Poller>),
    All(NamespacesConfig),
}

enum Sampling {
    /// The poller and the inode of its (the thread's) network namespace.
    Own(Box<Poller>, u64),
    All(Box<Namespaces>),
}

type Polled = (Vec<NamespaceSample>, Option<NetnsStats>, Vec<Arc<dyn Part>>);

/// Every event source's state, merged.
fn collect(sources: &mut [Box<dyn EventSource>], found: &[u64]) -> Events {
    let mut events = Events::default();
    for s in sources {
        events.merge(s.collect(found));
    }
    events
}

impl Sampling {
    fn poll(&mut self, sources: &mut [Box<dyn EventSource>]) -> Polled {
        match self {
            Sampling::Own(p, inode) => {
                let mut events = collect(sources, &[*inode]);
                let own = events.namespaces.remove(inode).unwrap_or_default();
                let sample = p.poll_with(crate::poller::CensusChoice::Policy, &own);
                (
                    vec![NamespaceSample {
                        netns: None,
                        sample,
                    }],
                    None,
                    events.host,
                )
            }
            Sampling::All(n) => {
                let (samples, stats, host) =
                    n.poll_with_events(&mut |found| collect(sources, found));
                (samples, Some(stats), host)
            }
        }
    }
}

/// The sampler on a thread of its own (its reads block, and with
/// `--netns all` it moves between namespaces), asked for one poll at a
/// time.
struct PollerThread {
    requests: Option<std::sync::mpsc::Sender<oneshot::Sender<Polled>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PollerThread {
    fn spawn(
        sampler: Sampler,
        mut sources: Vec<Box<dyn EventSource>>,
    ) -> std::io::Result<PollerThread> {
        let (tx, rx) = std::sync::mpsc::channel::<oneshot::Sender<Polled>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("poller".into())
            .spawn(move || {
                // Built here: --netns all keeps this thread's own namespaces.
                let mut running = match sampler {
                    Sampler::Own(p) => {
                        match crate::source::netns::own_inode(std::path::Path::new("/proc")) {
                            Ok(inode) => Sampling::Own(p, inode),
                            Err(e) => {
                                let _ = ready_tx.send(Err(std::io::Error::other(e.to_string())));
                                return;
                            }
                        }
                    }
                    Sampler::All(cfg) => match Namespaces::new(cfg) {
                        Ok(n) => Sampling::All(Box::new(n)),
                        Err(e) => {
                            let _ = ready_tx.send(Err(std::io::Error::other(e.to_string())));
                            return;
                        }
                    },
                };
                let _ = ready_tx.send(Ok(()));
                for reply in rx {
                    let _ = reply.send(running.poll(&mut sources));
                }
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the poller thread died")))?;
        Ok(PollerThread {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// One poll.
    ///
    /// # Panics
    /// When the poller thread has died (a panic in a poll).
    async fn poll(&self) -> Polled {
        let (tx, rx) = oneshot::channel();
        let requests = self.requests.as_ref().expect("open until drop");
        requests.send(tx).expect("the poller thread is running");
        rx.await.expect("the poller thread answered")
    }

    /// One poll, as a report.
    async fn report(&self) -> Report {
        let (namespaces, netns, parts) = self.poll().await;
        Report {
            namespaces,
            netns,
            parts,
        }
    }
}

impl Drop for PollerThread {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The poll loop's parts.
pub struct PollLoop {
    poller: PollerThread,
    scrapers: Vec<Scraper>,
    interval: Duration,
    nginx_timeout: Duration,
}

impl PollLoop {
    /// A loop polling every `interval` with `sampler`, and scraping each
    /// of `scrapers` every `interval` on a task of its own (each scrape
    /// bounded by `nginx_timeout`).
    ///
    /// # Errors
    /// When the poller's thread cannot be started (or, with `--netns
    /// all`, cannot open its own namespaces).
    pub fn new(
        sampler: Sampler,
        scrapers: Vec<Scraper>,
        interval: Duration,
        nginx_timeout: Duration,
    ) -> std::io::Result<PollLoop> {
        PollLoop::with_events(sampler, Vec::new(), scrapers, interval, nginx_timeout)
    }

    /// [`PollLoop::new`], with event sources merged into every poll
    /// (`crate::events`).
    ///
    /// # Errors
    /// As [`PollLoop::new`].
    pub fn with_events(
        sampler: Sampler,
        sources: Vec<Box<dyn EventSource>>,
        scrapers: Vec<Scraper>,
        interval: Duration,
        nginx_timeout: Duration,
    ) -> std::io::Result<PollLoop> {
        Ok(PollLoop {
            poller: PollerThread::spawn(sampler, sources)?,
            scrapers,
            interval,
            nginx_timeout,
        })
    }

    /// Takes the first poll and the first scrape of every target now,
    /// concurrently (so `/metrics` has them before it is served: at most
    /// `nginx_timeout` for the scrapes), starts each target's scrape task,
    /// and returns the latest-value handle and the loop that publishes
    /// every later poll ([`Running::run`]). The scrape tasks run until the
    /// [`Running`] is dropped or its `run` returns.
    pub async fn start(self) -> (Latest, Running) {
        let PollLoop {
            poller,
            scrapers,
            interval,
            nginx_timeout,
        } = self;
        let first_scrapes =
            futures_util::future::join_all(scrapers.into_iter().map(|mut s| async move {
                let first = s.scrape(nginx_timeout).await;
                (s, first)
            }));
        let (first, scraped) = tokio::join!(poller.report(), first_scrapes);
        let mut tasks = tokio::task::JoinSet::new();
        let mut nginx = Vec::with_capacity(scraped.len());
        for (scraper, sample) in scraped {
            let (tx, rx) = watch::channel(Arc::new(sample));
            nginx.push(rx);
            tasks.spawn(scrape_forever(scraper, tx, interval, nginx_timeout));
        }
        let (tx, rx) = watch::channel(Arc::new(first));
        let latest = Latest {
            report: rx,
            nginx: nginx.into(),
        };
        (
            latest,
            Running {
                poller,
                interval,
                tx,
                _scrapes: tasks,
            },
        )
    }
}

/// One target's scrape task: a scrape every `interval` after the first
/// (taken by [`PollLoop::start`]), each bounded by `timeout`; one that
/// overruns delays the next (missed ticks are skipped, not bunched).
async fn scrape_forever(
    mut scraper: Scraper,
    tx: watch::Sender<Arc<TargetSample>>,
    interval: Duration,
    timeout: Duration,
) {
    let mut clock = tokio::time::interval(interval);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    clock.tick().await; // now: the first scrape was taken at start
    loop {
        clock.tick().await;
        let sample = scraper.scrape(timeout).await;
        tx.send_replace(Arc::new(sample));
    }
}

/// A started [`PollLoop`].
pub struct Running {
    poller: PollerThread,
    interval: Duration,
    tx: watch::Sender<Arc<Report>>,
    /// The scrape tasks, aborted when this is dropped.
    _scrapes: tokio::task::JoinSet<()>,
}

impl Running {
    /// Polls every interval after the first report until `stop` resolves;
    /// a poll that overruns delays the next (missed ticks are skipped, not
    /// bunched). Returns after the current poll when `stop` resolves, and
    /// stops the scrape tasks.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut clock = tokio::time::interval(self.interval);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        clock.tick().await; // the first tick is now: the first report
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = clock.tick() => {}
            }
            let report = self.poller.report().await;
            self.tx.send_replace(Arc::new(report));
        }
    }
}

#[cfg(test)]
#[path = "agent/tests.rs"]
mod tests;
