//! The agent's poll loop: on one clock (`--poll.interval`), each tick
//! polls the namespace (on the poller's own thread: its reads block) and
//! scrapes every nginx target concurrently, then publishes one [`Report`]
//! for `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::MetricFamily;
use tokio::sync::{oneshot, watch};

use crate::collector::netns::NetnsStats;
use crate::collector::nginx;
use crate::metrics::Families;
use crate::namespaces::{NamespaceSample, Namespaces, NamespacesConfig};
use crate::poller::Poller;
use crate::source::stub_status::{Scraper, TargetSample, scrape_all};

crate::metric_specs! {
    BUILD_INFO = "sockscope_build_info", Gauge, ["version"],
        "A metric with a constant 1 labelled with the version of sockscope.";
}

/// What one tick learned: each namespace's sample, the discovery figures
/// (`--netns all`), and the nginx scrapes taken on the same tick.
#[derive(Debug, Clone)]
pub struct Report {
    pub namespaces: Vec<NamespaceSample>,
    pub netns: Option<NetnsStats>,
    pub nginx: Vec<TargetSample>,
}

impl Report {
    /// Every family of the exposition: build info, each namespace's (under
    /// its `netns` label with `--netns all`), nginx's.
    pub fn families(&self) -> Vec<MetricFamily> {
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
        nginx::encode(&self.nginx, &mut out);
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
    Own(Box<Poller>),
    All(Box<Namespaces>),
}

type Polled = (Vec<NamespaceSample>, Option<NetnsStats>);

impl Sampling {
    fn poll(&mut self) -> Polled {
        match self {
            Sampling::Own(p) => (
                vec![NamespaceSample {
                    netns: None,
                    sample: p.poll(),
                }],
                None,
            ),
            Sampling::All(n) => {
                let (samples, stats) = n.poll();
                (samples, Some(stats))
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
    fn spawn(sampler: Sampler) -> std::io::Result<PollerThread> {
        let (tx, rx) = std::sync::mpsc::channel::<oneshot::Sender<Polled>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("poller".into())
            .spawn(move || {
                // Built here: --netns all keeps this thread's own namespaces.
                let mut running = match sampler {
                    Sampler::Own(p) => Sampling::Own(p),
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
                    let _ = reply.send(running.poll());
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
    /// A loop ticking every `interval` over `sampler` and `scrapers` (each
    /// scrape bounded by `nginx_timeout`).
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
        Ok(PollLoop {
            poller: PollerThread::spawn(sampler)?,
            scrapers,
            interval,
            nginx_timeout,
        })
    }

    /// One tick: the poll and every scrape, concurrently.
    pub async fn tick(&mut self) -> Report {
        let ((namespaces, netns), nginx) = tokio::join!(
            self.poller.poll(),
            scrape_all(&mut self.scrapers, self.nginx_timeout)
        );
        Report {
            namespaces,
            netns,
            nginx,
        }
    }

    /// Takes the first report now (so `/metrics` has one before it is
    /// served) and returns the receiver and the loop that publishes every
    /// later tick ([`PollLoop::run`]).
    pub async fn start(mut self) -> (watch::Receiver<Arc<Report>>, Running) {
        let first = self.tick().await;
        let (tx, rx) = watch::channel(Arc::new(first));
        (rx, Running { lp: self, tx })
    }
}

/// A started [`PollLoop`].
pub struct Running {
    lp: PollLoop,
    tx: watch::Sender<Arc<Report>>,
}

impl Running {
    /// Ticks every interval after the first report until `stop` resolves;
    /// a tick that overruns delays the next (missed ticks are skipped, not
    /// bunched). Returns after the current tick when `stop` resolves.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        let mut clock = tokio::time::interval(self.lp.interval);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        clock.tick().await; // the first tick is now: the first report
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = clock.tick() => {}
            }
            let report = self.lp.tick().await;
            self.tx.send_replace(Arc::new(report));
        }
    }
}

#[cfg(test)]
#[path = "agent/tests.rs"]
mod tests;
