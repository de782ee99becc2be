//! The agent's poll loop: on one clock (`--poll.interval`), each tick
//! polls the namespace (on the poller's own thread: its reads block) and
//! scrapes every nginx target concurrently, then publishes one [`Report`]
//! for `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::MetricFamily;
use tokio::sync::{oneshot, watch};

use crate::collector::{Sample, nginx};
use crate::metrics::Families;
use crate::poller::Poller;
use crate::source::stub_status::{Scraper, TargetSample, scrape_all};

crate::metric_specs! {
    BUILD_INFO = "sockscope_build_info", Gauge, ["version"],
        "A metric with a constant 1 labelled with the version of sockscope.";
}

/// What one tick learned: the namespace's sample and the nginx scrapes
/// taken on the same tick.
#[derive(Debug, Clone)]
pub struct Report {
    pub sample: Sample,
    pub nginx: Vec<TargetSample>,
}

impl Report {
    /// Every family of the exposition: build info, the sample's, nginx's.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = Families::new();
        out.push(&BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1.0);
        self.sample.encode(&mut out);
        nginx::encode(&self.nginx, &mut out);
        out.finish()
    }
}

/// A [`Poller`] on a thread of its own, asked for one sample at a time.
struct PollerThread {
    requests: Option<std::sync::mpsc::Sender<oneshot::Sender<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PollerThread {
    fn spawn(mut poller: Poller) -> std::io::Result<PollerThread> {
        let (tx, rx) = std::sync::mpsc::channel::<oneshot::Sender<Sample>>();
        let thread = std::thread::Builder::new()
            .name("poller".into())
            .spawn(move || {
                for reply in rx {
                    let _ = reply.send(poller.poll());
                }
            })?;
        Ok(PollerThread {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// One poll.
    ///
    /// # Panics
    /// When the poller thread has died (a panic in a poll).
    async fn poll(&self) -> Sample {
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
    /// A loop ticking every `interval` over `poller` and `scrapers` (each
    /// scrape bounded by `nginx_timeout`).
    ///
    /// # Errors
    /// When the poller's thread cannot be started.
    pub fn new(
        poller: Poller,
        scrapers: Vec<Scraper>,
        interval: Duration,
        nginx_timeout: Duration,
    ) -> std::io::Result<PollLoop> {
        Ok(PollLoop {
            poller: PollerThread::spawn(poller)?,
            scrapers,
            interval,
            nginx_timeout,
        })
    }

    /// One tick: the poll and every scrape, concurrently.
    pub async fn tick(&mut self) -> Report {
        let (sample, nginx) = tokio::join!(
            self.poller.poll(),
            scrape_all(&mut self.scrapers, self.nginx_timeout)
        );
        Report { sample, nginx }
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
