//! One persistent HTTP/1.1 scrape connection to the agent, and the
//! "same moment" comparison of the agent with the ground truth.
//!
//! Every netns test builds a static world of sockets, then compares the
//! agent with the ground truth read "at the same moment": read the ground
//! truth, wait for an agent poll that started after that read, read the
//! ground truth again, and accept the pair only when both reads are equal
//! (see [`measure`]).

use std::fmt::Debug;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::agent::Agent;
use super::http::HttpReader;
use super::metrics::Metrics;
use super::wait::{now_unix, scaled};

/// A minimal HTTP/1.1 client on ONE keep-alive connection to the agent, so
/// the agent's sockets are a constant: its listener plus one ESTABLISHED
/// pair. Any attempt by the server to close it is an error, never a
/// silent reconnect.
pub struct Scraper {
    conn: HttpReader,
    addr: String,
    /// Local address of the scrape connection (an ephemeral port).
    pub local: SocketAddr,
    pub scrapes: u64,
}

impl Scraper {
    /// Connects once the agent listens: refused attempts leave no sockets.
    /// Bounded by 10 s ([`scaled`]).
    pub fn connect(agent: &mut Agent) -> Scraper {
        let addr = agent.addr.clone();
        let start = Instant::now();
        let mut attempts = 0;
        let stream = loop {
            attempts += 1;
            match TcpStream::connect(&addr) {
                Ok(s) => break s,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    agent.assert_running();
                    if start.elapsed() > scaled(Duration::from_secs(10)) {
                        panic!(
                            "the agent did not listen on {addr} after {attempts} attempts\n{}",
                            agent.log()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connecting to the agent: {e}"),
            }
        };
        // A hang detector, scaled under emulation: the agent listens before
        // it loads its eBPF programs and polls once (its "serving" line), and
        // under TCG parsing the kernel's BTF alone takes seconds, so the
        // first answer can come late.
        stream
            .set_read_timeout(Some(scaled(Duration::from_secs(10))))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let local = stream.local_addr().unwrap();
        Scraper {
            conn: HttpReader::new(stream),
            addr,
            local,
            scrapes: 0,
        }
    }

    /// GET `path`; returns the body. Panics on any HTTP error or when the
    /// server announces it will close the connection.
    pub fn get(&mut self, path: &str) -> String {
        write!(
            self.conn.stream(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n",
            self.addr
        )
        .expect("writing the request (did the agent close the connection?)");
        let head = match self.conn.read_head() {
            Ok(h) => h,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                panic!("the agent closed the scrape connection ({e})")
            }
            Err(e) => panic!("reading the response head: {e}"),
        };
        assert!(
            head.status_line.starts_with("HTTP/1.1 200"),
            "unexpected status line {:?}",
            head.status_line
        );
        if head.connection.as_deref() == Some("close") {
            panic!("the agent wants to close the scrape connection")
        }
        assert!(
            head.chunked || head.content_length.is_some(),
            "neither Content-Length nor chunked"
        );
        let mut body = Vec::new();
        self.conn
            .read_body(&head, &mut body)
            .expect("reading the body");
        self.scrapes += 1;
        String::from_utf8(body).expect("utf-8 body")
    }

    /// Scrapes and parses /metrics.
    pub fn scrape(&mut self) -> Metrics {
        let text = self.get("/metrics");
        Metrics::parse(&text).unwrap_or_else(|e| panic!("unparsable exposition: {e}\n{text}"))
    }

    /// Re-scrapes until every figure of the sample was taken after `t`:
    /// the agent's `sockscope_census_timestamp_seconds` (socket counts,
    /// ephemeral ports; listener queues are read on every poll, so they are
    /// at least as new) is newer than `t` — every namespace's, with
    /// `--netns all` — and so is every nginx target's latest scrape
    /// (`sockscope_nginx_scrape_timestamp_seconds`: targets are scraped on
    /// their own clock). Bounded by 5 s (scaled on a slow machine such as an
    /// emulated VM) plus twice the longest census interval the agent
    /// announces (`sockscope_census_interval_seconds`: its census duration
    /// over the CPU budget, which grows under load), at most 60 s more.
    pub fn scrape_after(&mut self, t: f64) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.scrape();
            let min_of = |name| {
                m.all(name)
                    .iter()
                    .map(|s| s.value)
                    .reduce(f64::min)
                    .unwrap_or(0.0)
            };
            // nginx targets are scraped on their own clock: their latest
            // scrape must be newer too (absent without targets).
            let nginx = m.all("sockscope_nginx_scrape_timestamp_seconds");
            let last = min_of("sockscope_census_timestamp_seconds");
            if last > t && nginx.iter().all(|s| s.value > t) {
                return m;
            }
            let interval = m
                .all("sockscope_census_interval_seconds")
                .iter()
                .map(|s| s.value)
                .fold(0.0, f64::max);
            let bound = scaled(Duration::from_secs(5))
                + Duration::from_secs_f64((2.0 * interval).clamp(0.0, 60.0));
            if start.elapsed() > bound {
                panic!(
                    "no agent census newer than {t} within {bound:?} (latest {last}, census interval {interval} s)"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Re-scrapes (bounded by `limit`, [`scaled`]) until `cond` holds on a
    /// scrape.
    pub fn scrape_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&Metrics) -> bool,
    ) -> Metrics {
        let limit = scaled(limit);
        let start = Instant::now();
        loop {
            let m = self.scrape();
            if cond(&m) {
                return m;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for the agent to report {what}\n{}",
                    m.text
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `work` on another thread and, until it has finished, reads
    /// every agent census ([`Scraper::scrape_after`] the previous read) and
    /// hands it to `each_poll`; returns what `work` returned.
    pub fn scrape_while<T: Send>(
        &mut self,
        work: impl FnOnce() -> T + Send,
        mut each_poll: impl FnMut(&Metrics),
    ) -> T {
        std::thread::scope(|s| {
            let work = s.spawn(work);
            while !work.is_finished() {
                let m = self.scrape_after(now_unix());
                each_poll(&m);
            }
            work.join().unwrap()
        })
    }
}

/// Reads the ground truth, waits for an agent census newer than that read,
/// reads the ground truth again; when both reads are equal (the world was
/// static across the census) returns it with the scrape. Retries up to 5
/// times.
pub fn measure<G: PartialEq + Debug>(
    scraper: &mut Scraper,
    mut read: impl FnMut() -> G,
) -> (G, Metrics) {
    let mut last = None;
    for attempt in 1..=5 {
        let before = read();
        let t = now_unix();
        let m = scraper.scrape_after(t);
        let after = read();
        if before == after {
            return (after, m);
        }
        eprintln!("measure: ground truth changed across the poll (attempt {attempt}), retrying");
        last = Some((before, after));
    }
    panic!("the ground truth never held still across an agent poll: {last:#?}");
}
