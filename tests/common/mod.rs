//! Shared helpers of the `netns_*` integration tests: re-executing a test
//! inside a private network namespace, the agent child process, one
//! persistent HTTP/1.1 scrape connection, a parser of the Prometheus text
//! format, and readers of the ground truth (`ss`, `/proc/net/unix`,
//! `/proc/net/sockstat`).
//!
//! Every test builds a static world of sockets, then compares the agent
//! with the ground truth read "at the same moment": read the ground truth,
//! wait for an agent poll that started after that read, read the ground
//! truth again, and accept the pair only when both reads are equal (see
//! [`measure`]).

#![allow(dead_code)]

pub mod prereq;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal};

/// Env var set in the re-executed child that runs inside the namespace.
pub const IN_NETNS: &str = "SOCKSCOPE_IN_NETNS";
/// Where the agent listens inside the namespace.
pub const AGENT_ADDR: &str = "127.0.0.1:9977";

// ---------------------------------------------------------------------------
// Re-exec in a private network namespace
// ---------------------------------------------------------------------------

/// Runs `body` inside a fresh private network namespace.
///
/// Outside (env [`IN_NETNS`] unset) this re-executes the current test
/// binary under `unshare -n` with only `test_name` (ignored or not: the
/// tests that call this are `#[ignore]`d for needing root), asserts the child ran
/// that one test and passed, and echoes its output. Inside, it runs `body`.
pub fn run_in_netns(test_name: &str, body: impl FnOnce()) {
    if std::env::var_os(IN_NETNS).is_some() {
        body();
        return;
    }
    prereq::require_netns();
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let out = Command::new("unshare")
        .args(["-n", "--"])
        .arg(&exe)
        .args([
            test_name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning unshare: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran = stdout.contains("test result: ok. 1 passed");
    if !out.status.success() || !ran {
        panic!(
            "{test_name} failed inside the network namespace ({}, ran={ran})\n\
             ----- child stdout -----\n{stdout}\n----- child stderr -----\n{stderr}",
            out.status
        );
    }
    println!(
        "----- {test_name} (in netns, {:.2?}) stdout -----\n{stdout}",
        started.elapsed()
    );
    if !stderr.trim().is_empty() {
        println!("----- {test_name} stderr -----\n{stderr}");
    }
}

/// Pins the calling thread (and every thread and process it starts later)
/// to one CPU, the first it may run on; returns that CPU.
///
/// Why: on loopback each packet is processed on the CPU that sent it.
/// With client and server threads on two CPUs, segments of one connection
/// can be reordered or processed concurrently with the client's switch
/// from FIN_WAIT2 to a timewait socket. Seen on 2 vCPUs: a stale ACK from
/// the server reaches the client's TIME_WAIT after the server closed, the
/// server's stack answers with a RST that kills the TIME_WAIT (RFC 1337
/// assassination, 0-4 per 2000 connections); and, rarely, a client left
/// in FIN-WAIT-2 for 60 s although the server closed. On one CPU neither
/// happens and the socket world is deterministic.
pub fn pin_to_one_cpu() -> usize {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("no CPU in the affinity mask");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size, &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
        cpu
    }
}

/// Pins the test to one CPU ([`pin_to_one_cpu`]), brings `lo` up and
/// writes namespace-private sysctls, e.g. `("net/ipv4/tcp_tw_reuse", "0")`
/// (relative to /proc/sys).
pub fn setup_netns(sysctls: &[(&str, &str)]) {
    assert!(
        std::env::var_os(IN_NETNS).is_some(),
        "setup_netns outside the namespace"
    );
    pin_to_one_cpu();
    run_ok("ip", &["link", "set", "lo", "up"]);
    for (key, value) in sysctls {
        let path = Path::new("/proc/sys").join(key);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value:?} to {}: {e}", path.display()));
        let back = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            back.split_whitespace().collect::<Vec<_>>(),
            value.split_whitespace().collect::<Vec<_>>(),
            "{}",
            path.display()
        );
    }
}

/// The namespace of the port-exhaustion tests ([`setup_netns`]): `range`
/// as `ip_local_port_range`, no reserved ports, `tcp_tw_reuse` =
/// `tw_reuse`, TCP timestamps on, and `tcp_rfc1337` = 1: on loopback with
/// 2+ CPUs a stale ACK from the server can reach the client's TIME_WAIT
/// after the server closed; the TIME_WAIT answers, the server's stack
/// answers that with a RST, and with tcp_rfc1337=0 the RST kills the
/// TIME_WAIT and frees its port (seen 0-3 times per 2000 connections).
/// Returns the [`ephemeral_limit`] then in force.
pub fn setup_port_range_netns(range: &str, tw_reuse: &str) -> u64 {
    setup_netns(&[
        ("net/ipv4/ip_local_port_range", range),
        ("net/ipv4/ip_local_reserved_ports", ""),
        ("net/ipv4/tcp_tw_reuse", tw_reuse),
        ("net/ipv4/tcp_timestamps", "1"),
        ("net/ipv4/tcp_rfc1337", "1"),
    ]);
    ephemeral_limit()
}

/// Reads a sysctl under /proc/sys (e.g. `net/ipv4/ip_local_port_range`).
pub fn sysctl(key: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(key))
        .unwrap()
        .trim()
        .to_owned()
}

/// Runs a command, asserts success, returns stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Seconds since the Unix epoch (the clock of
/// `sockscope_last_poll_timestamp_seconds`).
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls `cond` every 10 ms until it returns `Some`, or panics after
/// `limit` with `what` and the last value `describe` gives.
pub fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match cond() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("timed out after {limit:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

// ---------------------------------------------------------------------------
// The agent child process
// ---------------------------------------------------------------------------

/// The `sockscope agent` child; killed (and its log printed when the test
/// is panicking) on drop.
pub struct Agent {
    proc: LoggedChild,
}

impl Agent {
    /// Starts `sockscope agent --web.listen-address 127.0.0.1:9977
    /// --poll.interval 100ms` plus `extra` flags. It inherits the
    /// namespace; it gets SIGKILL if the spawning thread dies.
    pub fn spawn(extra: &[&str]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockscope"));
        cmd.args([
            "agent",
            "--web.listen-address",
            AGENT_ADDR,
            "--poll.interval",
            "100ms",
        ])
        .args(extra);
        let proc = LoggedChild::spawn(&mut cmd, "agent", Signal::KILL)
            .unwrap_or_else(|e| panic!("spawning the agent: {e}"));
        Agent { proc }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Panics (with the log) if the agent has exited.
    pub fn assert_running(&mut self) {
        self.proc.assert_running("the agent");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        if std::thread::panicking() {
            eprintln!("----- agent log -----\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// One persistent HTTP/1.1 scrape connection
// ---------------------------------------------------------------------------

/// A minimal HTTP/1.1 client on ONE keep-alive connection to the agent, so
/// the agent's sockets are a constant: its listener plus one ESTABLISHED
/// pair. Any attempt by the server to close it is an error, never a
/// silent reconnect.
pub struct Scraper {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Local address of the scrape connection (an ephemeral port).
    pub local: SocketAddr,
    pub scrapes: u64,
}

impl Scraper {
    /// Connects once the agent listens: refused attempts leave no sockets.
    /// Bounded by 500 attempts and 10 s.
    pub fn connect(agent: &mut Agent) -> Scraper {
        let start = Instant::now();
        let mut attempts = 0;
        let stream = loop {
            attempts += 1;
            match TcpStream::connect(AGENT_ADDR) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    agent.assert_running();
                    if attempts >= 500 || start.elapsed() > Duration::from_secs(10) {
                        panic!(
                            "the agent did not listen on {AGENT_ADDR} after {attempts} attempts\n{}",
                            agent.log()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connecting to the agent: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let local = stream.local_addr().unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Scraper {
            stream,
            reader,
            local,
            scrapes: 0,
        }
    }

    /// GET `path`; returns the body. Panics on any HTTP error or when the
    /// server announces it will close the connection.
    pub fn get(&mut self, path: &str) -> String {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: {AGENT_ADDR}\r\nAccept: */*\r\n\r\n"
        )
        .expect("writing the request (did the agent close the connection?)");
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("reading the status line");
        assert!(n > 0, "the agent closed the scrape connection");
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "unexpected status line {line:?}"
        );
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("reading a header");
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header {h:?}"));
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = Some(value.parse::<usize>().expect("content-length")),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" if value.eq_ignore_ascii_case("close") => {
                    panic!("the agent wants to close the scrape connection")
                }
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).expect("chunk size");
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                    .expect("chunk size");
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                chunk.truncate(size);
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        } else {
            let len = length.expect("neither Content-Length nor chunked");
            body.resize(len, 0);
            self.reader.read_exact(&mut body).expect("reading the body");
        }
        self.scrapes += 1;
        String::from_utf8(body).expect("utf-8 body")
    }

    /// Scrapes and parses /metrics.
    pub fn scrape(&mut self) -> Metrics {
        let text = self.get("/metrics");
        Metrics::parse(&text).unwrap_or_else(|e| panic!("unparsable exposition: {e}\n{text}"))
    }

    /// Re-scrapes (bounded: 5 s) until every figure of the sample was
    /// taken after `t`: the agent's `sockscope_census_timestamp_seconds`
    /// (socket counts, ephemeral ports; listener queues are read on every
    /// poll, so they are at least as new) is newer than `t`.
    pub fn scrape_after(&mut self, t: f64) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.scrape();
            let last = m.value("sockscope_census_timestamp_seconds", &[]);
            if last > t {
                return m;
            }
            if start.elapsed() > Duration::from_secs(5) {
                panic!("no agent census newer than {t} within 5 s (latest {last})");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Re-scrapes (bounded by `limit`) until `cond` holds on a scrape.
    pub fn scrape_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&Metrics) -> bool,
    ) -> Metrics {
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

/// Spawns the agent ([`Agent::spawn`] with `extra` flags) and connects
/// its one scrape connection ([`Scraper::connect`]).
pub fn start_agent(extra: &[&str]) -> (Agent, Scraper) {
    let mut agent = Agent::spawn(extra);
    let scraper = Scraper::connect(&mut agent);
    (agent, scraper)
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

// ---------------------------------------------------------------------------
// The Prometheus text format
// ---------------------------------------------------------------------------

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition (text format 0.0.4).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub series: Vec<Series>,
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// Parses one sample line: `name{l="v",...} value [timestamp]`.
pub fn parse_series_line(line: &str) -> Result<Series, String> {
    let err = |m: &str| format!("{m} in {line:?}");
    let mut chars = line.char_indices().peekable();
    let mut name = String::new();
    while let Some(&(_, c)) = chars.peek() {
        if !is_name_char(c, name.is_empty()) {
            break;
        }
        name.push(c);
        chars.next();
    }
    if name.is_empty() {
        return Err(err("no metric name"));
    }
    let mut labels = BTreeMap::new();
    if chars.peek().map(|&(_, c)| c) == Some('{') {
        chars.next();
        loop {
            while chars.peek().is_some_and(|&(_, c)| c == ' ') {
                chars.next();
            }
            match chars.peek().map(|&(_, c)| c) {
                Some('}') => {
                    chars.next();
                    break;
                }
                None => return Err(err("unterminated label set")),
                _ => {}
            }
            let mut lname = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if !is_name_char(c, lname.is_empty()) || c == ':' {
                    break;
                }
                lname.push(c);
                chars.next();
            }
            if lname.is_empty()
                || chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(err("bad label"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err(err("bad escape")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(err("unterminated label value")),
                }
            }
            if labels.insert(lname, value).is_some() {
                return Err(err("duplicate label"));
            }
            match chars.next().map(|(_, c)| c) {
                Some(',') => {}
                Some('}') => break,
                _ => return Err(err("expected , or }")),
            }
        }
    }
    let rest = match chars.peek() {
        Some(&(i, ' ')) => &line[i..],
        _ => return Err(err("no value")),
    };
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or_else(|| err("no value"))? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| err("bad value"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
    }
    if fields.next().is_some() {
        return Err(err("trailing fields"));
    }
    Ok(Series {
        name,
        labels,
        value,
    })
}

impl Metrics {
    /// Parses an exposition; `#` lines and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let series = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(parse_series_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Metrics {
            text: text.to_owned(),
            series,
        })
    }

    /// The series of `name` whose label set is exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut hits = self
            .series
            .iter()
            .filter(|s| s.name == name && s.labels == want);
        let hit = hits.next()?;
        assert!(hits.next().is_none(), "duplicate series {name}{labels:?}");
        Some(hit.value)
    }

    /// Like [`Metrics::get`] but panics, showing the family, when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "series {name}{labels:?} is absent; the family has:\n{:#?}",
                self.all(name)
            )
        })
    }

    /// Every series of `name`.
    pub fn all(&self, name: &str) -> Vec<&Series> {
        self.series.iter().filter(|s| s.name == name).collect()
    }

    /// Series of `name` whose labels include all of `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Series> {
        self.all(name)
            .into_iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The `sockscope_listen_*` series of one listener (`None` = absent).
    pub fn listener(&self, proto: &str, listener: &str) -> ListenerSeries {
        let l = [("proto", proto), ("listener", listener)];
        let conns = |state| {
            self.get(
                "sockscope_listen_connections",
                &[l[0], l[1], ("state", state)],
            )
        };
        ListenerSeries {
            length: self.get("sockscope_listen_queue_length", &l),
            limit: self.get("sockscope_listen_queue_limit", &l),
            full_seconds: self.get("sockscope_listen_queue_full_seconds_total", &l),
            connecting: conns("connecting"),
            connected: conns("connected"),
            sockets: self.get("sockscope_listen_sockets", &l),
        }
    }
}

/// The `sockscope_listen_*` figures of one listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListenerSeries {
    pub length: Option<f64>,
    pub limit: Option<f64>,
    pub full_seconds: Option<f64>,
    pub connecting: Option<f64>,
    pub connected: Option<f64>,
    pub sockets: Option<f64>,
}

/// Runs `promtool check metrics` on the exposition: no output, exit 0.
/// Panics when promtool is missing ([`prereq::tool`]).
pub fn check_promtool(text: &str) {
    let mut child = prereq::command("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning promtool: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}",
        out.status
    );
}

/// Parses the exposition with Python's `prometheus_client` parser and
/// returns the number of samples it found. Panics when python3 or the
/// module is missing ([`prereq::python_with`]).
pub fn check_python_parser(text: &str) -> usize {
    let python = prereq::python_with(&["prometheus_client.parser"]);
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        fams = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(sum(len(f.samples) for f in fams))\n";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client parser rejected the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("sample count")
}

// ---------------------------------------------------------------------------
// Ground truth: ss, /proc/net/unix, /proc/net/sockstat
// ---------------------------------------------------------------------------

/// One row of `ss -t...` output (the State column must be present).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SsTcpRow {
    pub state: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub local: String,
    pub peer: String,
}

/// Runs `ss` with `args`, asserts its header starts with `first_column`,
/// and parses each non-empty line after it with `row`.
fn ss_rows<T>(args: &[&str], first_column: &str, row: impl Fn(&str) -> T) -> Vec<T> {
    let out = run_ok("ss", args);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with(first_column),
        "ss {args:?}: no {first_column} column first: {header:?}"
    );
    lines.filter(|l| !l.trim().is_empty()).map(row).collect()
}

/// Runs `ss` with `args` and parses its TCP rows (header skipped).
pub fn ss_tcp(args: &[&str]) -> Vec<SsTcpRow> {
    ss_rows(args, "State", |l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() >= 5, "ss {args:?}: short line {l:?}");
        SsTcpRow {
            state: f[0].to_owned(),
            recv_q: f[1].parse().unwrap(),
            send_q: f[2].parse().unwrap(),
            local: f[3].to_owned(),
            peer: f[4].to_owned(),
        }
    })
}

/// The agent's `state` label(s) for an `ss` TCP state name. SYN-RECV maps
/// to both syn_recv and new_syn_recv (ss shows request sockets as
/// SYN-RECV).
pub fn ss_state_labels(ss: &str) -> &'static [&'static str] {
    match ss {
        "ESTAB" => &["established"],
        "SYN-SENT" => &["syn_sent"],
        "SYN-RECV" => &["syn_recv", "new_syn_recv"],
        "FIN-WAIT-1" => &["fin_wait1"],
        "FIN-WAIT-2" => &["fin_wait2"],
        "TIME-WAIT" => &["time_wait"],
        "CLOSE-WAIT" => &["close_wait"],
        "LAST-ACK" => &["last_ack"],
        "LISTEN" => &["listen"],
        "CLOSING" => &["closing"],
        "UNCONN" | "CLOSE" => &["close"],
        other => panic!("unknown ss TCP state {other:?}"),
    }
}

/// Every `state` label of `sockscope_tcp_sockets`.
pub const TCP_STATE_LABELS: [&str; 12] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "new_syn_recv",
];

/// Counts rows per ss state name.
pub fn count_states(rows: &[SsTcpRow]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.state.clone()).or_insert(0) += 1;
    }
    m
}

/// Asserts `sockscope_tcp_sockets{family}` equals the ss counts for every
/// state (SYN-RECV against syn_recv + new_syn_recv).
pub fn assert_tcp_states(m: &Metrics, family: &str, ss_counts: &BTreeMap<String, u64>) {
    let mut expected: BTreeMap<&str, u64> = TCP_STATE_LABELS.iter().map(|s| (*s, 0)).collect();
    for (name, n) in ss_counts {
        // Compare SYN-RECV on the sum, booked on syn_recv.
        *expected.get_mut(ss_state_labels(name)[0]).unwrap() += n;
    }
    for st in TCP_STATE_LABELS {
        let mut got = m.value(
            "sockscope_tcp_sockets",
            &[("family", family), ("state", st)],
        ) as u64;
        if st == "syn_recv" {
            got += m.value(
                "sockscope_tcp_sockets",
                &[("family", family), ("state", "new_syn_recv")],
            ) as u64;
        }
        if st == "new_syn_recv" {
            continue;
        }
        assert_eq!(
            got, expected[st],
            "sockscope_tcp_sockets{{family={family},state={st}}} vs ss {ss_counts:?}"
        );
    }
}

/// One row of `ss -x...`: the four leading columns plus the rest of the
/// line (addresses; paths may contain spaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SsUnixRow {
    pub netid: String,
    pub state: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub rest: String,
}

pub fn ss_unix(args: &[&str]) -> Vec<SsUnixRow> {
    ss_rows(args, "Netid", |l| {
        let mut it = l.split_whitespace();
        let mut col = || {
            it.next()
                .unwrap_or_else(|| panic!("ss {args:?}: short line {l:?}"))
        };
        let (netid, state, rq, sq) = (col(), col(), col(), col());
        SsUnixRow {
            netid: netid.to_owned(),
            state: state.to_owned(),
            recv_q: rq.parse().unwrap(),
            send_q: sq.parse().unwrap(),
            rest: it.collect::<Vec<_>>().join(" "),
        }
    })
}

/// The `ss -xl` row of the listener bound to `path`: (Recv-Q, Send-Q).
pub fn ss_unix_listener(rows: &[SsUnixRow], path: &str) -> (u64, u64) {
    let prefix = format!("{path} ");
    let hits: Vec<_> = rows
        .iter()
        .filter(|r| r.state == "LISTEN" && r.rest.starts_with(&prefix))
        .collect();
    assert_eq!(hits.len(), 1, "ss -xl rows for {path:?}: {rows:#?}");
    (hits[0].recv_q, hits[0].send_q)
}

/// One line of `/proc/net/unix` (without the pointer and refcount, which
/// change without any state change).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcUnixLine {
    pub flags: u32,
    pub sock_type: u32,
    pub st: u8,
    pub inode: u64,
    pub path: Option<String>,
}

impl ProcUnixLine {
    /// The agent's `sock_type` label.
    pub fn type_label(&self) -> &'static str {
        match self.sock_type {
            1 => "stream",
            2 => "dgram",
            5 => "seqpacket",
            t => panic!("unexpected unix type {t}"),
        }
    }

    /// The agent's `state` label: listen for `__SO_ACCEPTCON`, else St.
    pub fn state_label(&self) -> &'static str {
        if self.flags & 0x10000 != 0 {
            return "listen";
        }
        match self.st {
            1 => "unconnected",
            2 => "connecting",
            3 => "connected",
            4 => "disconnecting",
            s => panic!("unexpected unix St {s}"),
        }
    }
}

/// Reads `/proc/net/unix`. Paths run from one space after the inode to the
/// end of the line (they may contain spaces).
pub fn proc_net_unix() -> Vec<ProcUnixLine> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut pos = 0;
        let mut fields = Vec::new();
        for _ in 0..7 {
            let rest = &line[pos..];
            let start = rest
                .find(|c| c != ' ')
                .unwrap_or_else(|| panic!("short line {line:?}"));
            let len = rest[start..].find(' ').unwrap_or(rest.len() - start);
            fields.push(&rest[start..start + len]);
            pos += start + len;
        }
        let path = line
            .get(pos + 1..)
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        out.push(ProcUnixLine {
            flags: u32::from_str_radix(fields[3], 16).unwrap(),
            sock_type: u32::from_str_radix(fields[4], 16).unwrap(),
            st: u8::from_str_radix(fields[5], 16).unwrap(),
            inode: fields[6].parse().unwrap(),
            path,
        });
    }
    out.sort();
    out
}

/// `/proc/net/unix` counted by (type label, state label).
pub fn unix_counts(lines: &[ProcUnixLine]) -> BTreeMap<(&'static str, &'static str), u64> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry((l.type_label(), l.state_label())).or_insert(0) += 1;
    }
    m
}

/// The `state` labels of `sockscope_unix_sockets`.
pub const UNIX_STATE_LABELS: [&str; 5] = [
    "unconnected",
    "connecting",
    "connected",
    "disconnecting",
    "listen",
];

/// Asserts `sockscope_unix_sockets{sock_type, state}` against `truth`
/// (/proc/net/unix by [`unix_counts`]) for every type of `types` and every
/// state of [`UNIX_STATE_LABELS`] (the agent reports each, zero or not).
/// With `disconnecting_invisible` the agent's `disconnecting` must be 0
/// whatever /proc/net/unix shows: unix_diag (the netlink source, the
/// agent's default) skips sockets without an inode (sk_diag_dump()), so
/// SS_DISCONNECTING orphans are invisible to it.
pub fn assert_unix_sockets(
    m: &Metrics,
    truth: &BTreeMap<(&'static str, &'static str), u64>,
    types: &[&str],
    disconnecting_invisible: bool,
) {
    for &t in types {
        for st in UNIX_STATE_LABELS {
            let got = m.value("sockscope_unix_sockets", &[("sock_type", t), ("state", st)]);
            let mut want = truth.get(&(t, st)).copied().unwrap_or(0);
            if disconnecting_invisible && st == "disconnecting" {
                want = 0;
            }
            assert_eq!(
                got, want as f64,
                "sockscope_unix_sockets{{sock_type={t},state={st}}}; /proc/net/unix: {truth:?}"
            );
        }
    }
}

/// The `tw` figure of the `TCP:` line of /proc/net/sockstat.
pub fn sockstat_tw() -> u64 {
    sockstat_tcp("tw")
}

/// A field of the `TCP:` line of /proc/net/sockstat (`inuse`, `orphan`,
/// `tw`, `alloc`, `mem`).
pub fn sockstat_tcp(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .expect("TCP: line");
    let f: Vec<&str> = line.split_whitespace().collect();
    let i = f
        .iter()
        .position(|w| *w == field)
        .unwrap_or_else(|| panic!("no {field} in {line:?}"));
    f[i + 1].parse().unwrap()
}

/// A `TcpExt:` counter of /proc/net/netstat (e.g. `ListenOverflows`).
pub fn netstat_tcpext(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no TcpExt {name}"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Asserts the `sockscope_sysctl_*`-style gauges equal /proc/sys.
pub fn assert_sysctls(m: &Metrics) {
    let num = |key: &str| -> f64 { sysctl(key).parse().unwrap() };
    let range: Vec<f64> = sysctl("net/ipv4/ip_local_port_range")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let want = [
        ("sockscope_somaxconn", num("net/core/somaxconn")),
        ("sockscope_sysctl_ip_local_port_range_first", range[0]),
        ("sockscope_sysctl_ip_local_port_range_last", range[1]),
        (
            "sockscope_sysctl_tcp_tw_reuse",
            num("net/ipv4/tcp_tw_reuse"),
        ),
        (
            "sockscope_sysctl_tcp_tw_reuse_delay_seconds",
            num("net/ipv4/tcp_tw_reuse_delay") / 1000.0,
        ),
        (
            "sockscope_sysctl_tcp_timestamps",
            num("net/ipv4/tcp_timestamps"),
        ),
        (
            "sockscope_tcp_max_tw_buckets",
            num("net/ipv4/tcp_max_tw_buckets"),
        ),
    ];
    for (name, v) in want {
        assert_eq!(m.value(name, &[]), v, "{name}");
    }
}

/// The usable ephemeral range size as `__inet_hash_connect()` walks it
/// (even), minus reserved ports inside it.
pub fn ephemeral_limit() -> u64 {
    let range = sysctl("net/ipv4/ip_local_port_range");
    let v: Vec<u64> = range
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut n = v[1] - v[0] + 1;
    if n > 1 {
        n &= !1;
    }
    let last = v[0] + n - 1;
    let reserved = sysctl("net/ipv4/ip_local_reserved_ports");
    let mut r = 0;
    for part in reserved.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        r += (a.max(v[0])..=b.min(last)).count() as u64;
    }
    n - r
}

// --- scenario helpers (seeds 000, 001, 002 and the memory scenario) ---
//
// Lab processes (`sockscope proxy` / `sockscope upstream`), a real nginx
// with its own config in a temp dir, a keep-alive HTTP/1.1 load client,
// and the ground truth of one ephemeral-port pool. Used by
// tests/scenario_seed000.rs, tests/scenario_seed001.rs,
// tests/scenario_seed002.rs and tests/scenario_memory.rs.

/// Spawns `cmd` with stdin from /dev/null and stdout and stderr into
/// `log` (created); the child gets `death_signal` when the spawning thread
/// dies (`PR_SET_PDEATHSIG`).
fn spawn_logged(cmd: &mut Command, log: &Path, death_signal: Signal) -> std::io::Result<Child> {
    let file = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(death_signal))
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// A child whose stdout and stderr go to `NAME.log` in a temporary
/// directory of its own ([`spawn_logged`]).
struct LoggedChild {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedChild {
    fn spawn(cmd: &mut Command, name: &str, death_signal: Signal) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join(format!("{name}.log"));
        let child = spawn_logged(cmd, &log, death_signal)?;
        Ok(LoggedChild {
            child,
            log,
            _dir: dir,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the child has exited; `what` names it.
    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{what} exited: {status}\n----- its log -----\n{}",
                self.log()
            );
        }
    }
}

/// Sends `signal` to `child` (kill(2)); panics when the kernel refuses.
pub fn signal_child(child: &Child, signal: Signal) {
    rustix::process::kill_process(Pid::from_child(child), signal)
        .unwrap_or_else(|e| panic!("kill({}, {signal:?}): {e}", child.id()));
}

/// Sends `signal` to `child` ([`signal_child`]), waits (bounded: 5 s) for
/// it to exit, then SIGKILLs it.
pub fn stop_child(child: &mut Child, signal: Signal) {
    if let Ok(None) = child.try_wait() {
        // Our own child, not yet reaped: its PID is still its own.
        signal_child(child, signal);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `sockscope` lab child (`proxy`, `upstream`) whose PID is exposed;
/// stdout and stderr go to a log file. SIGKILL when the spawning thread
/// dies; on drop SIGTERM, a bounded wait (5 s), then SIGKILL, by PID; its
/// log (last 40 lines) printed when the test is panicking.
pub struct LabProcess {
    pub name: String,
    proc: LoggedChild,
}

impl LabProcess {
    /// Starts `sockscope ARGS...`; `name` labels its log.
    pub fn sockscope(name: &str, args: &[&str]) -> LabProcess {
        let proc = LoggedChild::spawn(
            Command::new(env!("CARGO_BIN_EXE_sockscope")).args(args),
            name,
            Signal::KILL,
        )
        .unwrap_or_else(|e| panic!("spawning sockscope {name}: {e}"));
        LabProcess {
            name: name.to_owned(),
            proc,
        }
    }

    /// Starts `sockscope ARGS...` and waits ([`wait_listening`], bounded:
    /// 10 s, never connecting) until it listens on `listen`: `IP:PORT` (a
    /// TCP listener in `ss -ltn`) or `unix:PATH` (a UNIX stream listener
    /// in /proc/net/unix).
    pub fn listening(name: &str, args: &[&str], listen: &str) -> LabProcess {
        let mut p = LabProcess::sockscope(name, args);
        let what = format!("sockscope {name} listening on {listen}");
        match listen.strip_prefix("unix:") {
            Some(path) => wait_listening(&what, || unix_listening(path), || p.assert_running()),
            None => wait_listening(&what, || tcp_listening(listen), || p.assert_running()),
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        self.proc
            .assert_running(&format!("sockscope {}", self.name));
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        stop_child(&mut self.proc.child, Signal::TERM);
        if std::thread::panicking() {
            eprintln!(
                "----- sockscope {} log (last 40 lines) -----\n{}",
                self.name,
                last_lines(&self.log(), 40)
            );
        }
    }
}

/// Whether a TCP listener on exactly `addr` (e.g. `127.0.0.1:7100`) shows
/// in `ss -ltn`.
pub fn tcp_listening(addr: &str) -> bool {
    ss_tcp(&["-ltn"])
        .iter()
        .any(|r| r.state == "LISTEN" && r.local == addr)
}

/// Whether a UNIX stream listener bound to `path` shows in /proc/net/unix.
pub fn unix_listening(path: &str) -> bool {
    proc_net_unix()
        .iter()
        .any(|l| l.flags & 0x10000 != 0 && l.path.as_deref() == Some(path))
}

/// Waits (bounded: 10 s) until `listening()` holds, calling `alive()`
/// (which panics when the process died) between checks. Never connects,
/// so no probe connection takes a port or leaves a TIME_WAIT behind.
pub fn wait_listening(what: &str, mut listening: impl FnMut() -> bool, mut alive: impl FnMut()) {
    wait_for(what, Duration::from_secs(10), || {
        alive();
        if listening() {
            Ok(())
        } else {
            Err("not listening yet".into())
        }
    });
}

/// Runs `body` in a private network namespace ([`run_in_netns`]); panics
/// first when nginx is missing ([`prereq::tool`]).
pub fn run_in_netns_with_nginx(test_name: &str, body: impl FnOnce()) {
    prereq::tool("nginx");
    run_in_netns(test_name, body);
}

/// The `events { }` block of nginx when the test does not care.
pub const NGINX_EVENTS: &str = "worker_connections 1024;";

/// A real nginx started with its own config in a temp dir (mode 0755,
/// `user root;` as root so the worker reaches sockets in it): `daemon off;`,
/// `master_process on`, one worker, pid, error log (level `info`) and every
/// temp path in the dir, `access_log off`. The master runs in its own
/// process group. Stopped on drop: SIGTERM to the master, a bounded wait
/// (5 s), then SIGKILL to the master and to its process group (a worker
/// that outlived it).
pub struct Nginx {
    child: Child,
    workers: Vec<u32>,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `events` and `http` as the contents of those
    /// blocks and waits (bounded: 10 s) until it listens on `listen`
    /// (`IP:PORT`, checked with `ss -ltn`, never by connecting) and its
    /// worker runs.
    pub fn start(events: &str, http: &str, listen: &str) -> Nginx {
        let bin = prereq::tool("nginx");
        let dir = tempfile::Builder::new()
            .prefix("sockscope-nginx-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        // Temp paths only for the modules compiled in (nginx-light lacks
        // some); `nginx -V` names the removed ones `--without-http_X_module`.
        let v = Command::new(&bin).arg("-V").output().unwrap();
        let configure = String::from_utf8_lossy(&v.stderr).into_owned();
        let mut temp_paths = format!("client_body_temp_path {d}/client_body;\n");
        for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
            if !configure.contains(&format!("--without-http_{m}_module")) {
                temp_paths.push_str(&format!("{m}_temp_path {d}/{m};\n"));
            }
        }
        let conf = format!(
            "{user}\n\
             daemon off;\n\
             master_process on;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{\n{events}\n}}\n\
             http {{\n\
             access_log off;\n\
             {temp_paths}\
             {http}\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, &conf).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"));
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        // SIGTERM (not SIGKILL) when the spawning thread dies, so the
        // master stops its worker too.
        let child = spawn_logged(&mut cmd, &dir.path().join("stderr.log"), Signal::TERM)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut nginx = Nginx {
            child,
            workers: Vec::new(),
            dir,
        };
        let listen = listen.to_owned();
        nginx.workers = wait_for(
            &format!("nginx listening on {listen} with its worker"),
            Duration::from_secs(10),
            || {
                nginx.assert_running();
                let workers = child_pids(nginx.child.id());
                if tcp_listening(&listen) && workers.len() == 1 {
                    Ok(workers)
                } else {
                    Err(format!("workers {workers:?}"))
                }
            },
        );
        nginx
    }

    /// The worker's PID (`worker_processes 1`).
    pub fn worker_pid(&self) -> u32 {
        self.workers[0]
    }

    /// Panics (with the config and error log) if the master has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "nginx exited: {status}\n----- config -----\n{}\n----- error log -----\n{}{}",
                std::fs::read_to_string(self.dir.path().join("nginx.conf")).unwrap_or_default(),
                self.error_log(),
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
            );
        }
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pgid = Pid::from_child(&self.child);
        stop_child(&mut self.child, Signal::TERM);
        // A worker that outlived its master is still in the group; ESRCH
        // once everything has exited.
        let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        if std::thread::panicking() {
            eprintln!(
                "----- nginx error log (last 60 lines) -----\n{}",
                last_lines(&self.error_log(), 60)
            );
        }
    }
}

/// The `http { }` body of a reverse proxy on `listen` toward the
/// `upstream` block `u` (`upstream u { ... }`, its `keepalive` pool or
/// none): HTTP/1.1 toward it with the `Connection` header emptied, so a
/// keep-alive upstream never closes first (with nginx's default
/// `Connection: close` request header it would race nginx for who closes
/// first, TIME_WAIT on either side) and, without a pool, nginx closes each
/// upstream connection after its response, like `sockscope proxy
/// --keepalive 0`. Client connections may carry any number of requests
/// (the default 1000 would make a keep-alive load client reconnect).
pub fn nginx_proxy_http(listen: &str, upstream: &str) -> String {
    format!(
        "{upstream}\n\
         server {{\n\
         listen {listen};\n\
         keepalive_requests 100000;\n\
         location / {{\n\
         proxy_pass http://u;\n\
         proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n\
         }}\n\
         }}"
    )
}

/// One HTTP response as [`HttpClient`] read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A minimal blocking HTTP/1.1 client that keeps ONE connection alive
/// across requests (so a load through a proxy takes one client port, not
/// one per request). It reconnects only when the server closed the
/// connection (`Connection: close`, or EOF on an idle connection);
/// `connects` counts the connections it opened.
pub struct HttpClient {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
    pub connects: u64,
}

impl HttpClient {
    pub fn new(addr: &str) -> HttpClient {
        HttpClient {
            addr: addr.to_owned(),
            conn: None,
            connects: 0,
        }
    }

    /// GET `path`. A request on a reused connection that finds it closed
    /// before any byte of the answer is retried once on a new connection.
    pub fn get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Err(e) if reused && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.conn = None;
                self.try_get(path)
            }
            r => r,
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<HttpResponse> {
        use std::io::{Error, ErrorKind};
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(BufReader::new(s));
            self.connects += 1;
        }
        let r = self.conn.as_mut().unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        if let Err(e) = r.get_mut().write_all(req.as_bytes()) {
            self.conn = None;
            return Err(Error::new(ErrorKind::UnexpectedEof, e));
        }
        let res = read_http_response(r);
        match res {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Reads one response; returns it and whether the connection stays open.
/// EOF before the status line is `UnexpectedEof`.
fn read_http_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(HttpResponse, bool)> {
    use std::io::{Error, ErrorKind};
    let bad = |m: String| Error::new(ErrorKind::InvalidData, m);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(Error::new(
            ErrorKind::UnexpectedEof,
            "closed before the status line",
        ));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut keep = version == "HTTP/1.1";
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in the headers".into()));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header {h:?}")))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" if value.eq_ignore_ascii_case("close") => keep = false,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => keep = true,
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = length {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
        keep = false;
    }
    Ok((HttpResponse { status, body }, keep))
}

/// What `ss -tan` shows of one ephemeral-port pool: sockets whose local
/// address is `source` and whose peer is `destination`, counted per ss
/// state name (`TIME-WAIT`, `ESTAB`, ...).
pub fn ss_pool(source: &str, destination: &str) -> BTreeMap<String, u64> {
    let rows: Vec<SsTcpRow> = ss_tcp(&["-tan"])
        .into_iter()
        .filter(|r| {
            r.peer == destination && r.local.rsplit_once(':').map(|(ip, _)| ip) == Some(source)
        })
        .collect();
    count_states(&rows)
}

/// The agent's figures of one (source, destination) pool; `None` when the
/// agent has no such pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolFigures {
    pub established: f64,
    pub time_wait: f64,
    pub other: f64,
    pub time_wait_reusable: f64,
    pub available: f64,
}

impl PoolFigures {
    pub fn read(m: &Metrics, source: &str, destination: &str) -> Option<PoolFigures> {
        let p = [("source", source), ("destination", destination)];
        let available = m.get("sockscope_ephemeral_ports_available", &p)?;
        let used = |st| {
            m.value(
                "sockscope_ephemeral_ports_used",
                &[p[0], p[1], ("state", st)],
            )
        };
        Some(PoolFigures {
            established: used("established"),
            time_wait: used("time_wait"),
            other: used("other"),
            time_wait_reusable: m.value("sockscope_ephemeral_ports_time_wait_reusable", &p),
            available,
        })
    }
}

/// Every destination label of `sockscope_ephemeral_ports_used`.
pub fn pool_destinations(m: &Metrics) -> std::collections::BTreeSet<String> {
    m.all("sockscope_ephemeral_ports_used")
        .into_iter()
        .filter_map(|s| s.labels.get("destination").cloned())
        .collect()
}

/// `clients` threads, each with its own [`HttpClient`] to `addr`, share
/// `total` GETs of `/` (bounded by `limit` in time: past it the threads
/// stop and the shortfall shows in the count). Returns the statuses
/// counted (0 = an I/O error) and the connections the clients opened.
pub fn concurrent_load(
    addr: &str,
    clients: usize,
    total: u64,
    limit: Duration,
) -> (BTreeMap<u16, u64>, u64) {
    let never = std::sync::atomic::AtomicBool::new(false);
    concurrent_load_until(addr, clients, total..=total, &never, limit)
}

/// `clients` threads, each with its own keep-alive [`HttpClient`] to
/// `addr`, share GETs of `/`: at least `*requests.start()`, then on until
/// `stop` is set, at most `*requests.end()`, and bounded by `limit` in
/// time (past it the threads stop and the shortfall shows in the count).
/// Returns the statuses counted (0 = an I/O error) and the connections
/// the clients opened (they close them, first, when done).
pub fn concurrent_load_until(
    addr: &str,
    clients: usize,
    requests: std::ops::RangeInclusive<u64>,
    stop: &std::sync::atomic::AtomicBool,
    limit: Duration,
) -> (BTreeMap<u16, u64>, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (min, max) = requests.into_inner();
    let next = AtomicU64::new(0);
    let deadline = Instant::now() + limit;
    let results: Vec<(BTreeMap<u16, u64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut c = HttpClient::new(addr);
                    let mut counts = BTreeMap::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= max
                            || (n >= min && stop.load(Ordering::Relaxed))
                            || Instant::now() >= deadline
                        {
                            break;
                        }
                        let status = c.get("/").map_or(0, |r| r.status);
                        *counts.entry(status).or_insert(0) += 1;
                    }
                    (counts, c.connects)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut counts = BTreeMap::new();
    let mut connects = 0;
    for (c, n) in results {
        connects += n;
        for (k, v) in c {
            *counts.entry(k).or_insert(0) += v;
        }
    }
    (counts, connects)
}

/// The CPUs the calling thread may run on (call it before
/// [`setup_netns`], which pins the test to the first of them).
pub fn allowed_cpus() -> Vec<usize> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (and every process it starts later) to the
/// `n`-th of `cpus` (modulo their count) and returns that CPU: still one
/// CPU per test, for [`pin_to_one_cpu`]'s reasons, but tests that run in
/// parallel need not all share the first CPU.
pub fn pin_to_nth_cpu(cpus: &[usize], n: usize) -> usize {
    let cpu = cpus[n % cpus.len()];
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size, &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    cpu
}

// --- one-shot HTTP exchanges and small ground-truth readers ---
//
// Used by tests/scenario_seed001.rs and tests/scenario_memory.rs: a
// one-shot HTTP/1.1 client that records how each exchange ended (status,
// time to the head, complete framing, EOF, RST or the client's own time
// limit), and readers of PIDs, descriptors, limits and queues.

/// PIDs whose parent is `pid` (from /proc/*/stat).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// How a one-shot exchange ([`http_exchange`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpEnd {
    /// The framing said the response was whole: Content-Length reached,
    /// the last chunk read, or EOF of a close-delimited body.
    Complete,
    /// EOF before a whole response (or before any byte of one).
    Eof,
    /// ECONNRESET.
    Reset,
    /// The client's own time limit passed first.
    TimedOut,
    /// connect() failed, or another I/O error.
    Error,
}

/// One request and what came back.
#[derive(Clone)]
pub struct HttpExchange {
    /// Status of the response head, if one arrived.
    pub status: Option<u16>,
    /// Time from the start (before connect) to the complete head.
    pub head_after: Option<Duration>,
    /// Time from the start to the end of the exchange.
    pub elapsed: Duration,
    /// Body bytes received (de-chunked).
    pub body: Vec<u8>,
    /// Whether the body was `Transfer-Encoding: chunked`.
    pub chunked: bool,
    pub end: HttpEnd,
    /// The I/O error, for `Error` (and connect failures).
    pub error: Option<String>,
}

impl Debug for HttpExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        f.debug_struct("HttpExchange")
            .field("status", &self.status)
            .field("head_after", &self.head_after)
            .field("elapsed", &self.elapsed)
            .field("end", &self.end)
            .field("chunked", &self.chunked)
            .field("body", &body.chars().take(80).collect::<String>())
            .field("error", &self.error)
            .finish()
    }
}

/// Decodes a chunked body: (bytes so far, whether the last chunk and the
/// final CRLF were seen). Trailers are not expected.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let line = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (out, false);
        };
        let rest = &data[eol + 2..];
        if size == 0 {
            return (out, rest.starts_with(b"\r\n"));
        }
        let take = size.min(rest.len());
        out.extend_from_slice(&rest[..take]);
        if rest.len() < size + 2 {
            return (out, false);
        }
        data = &rest[size + 2..];
    }
}

/// Sends `request` on a new TCP connection to `addr` and reads the
/// response until its framing says it is whole, the server closes or
/// resets the connection, or `limit` (from the start, connect included)
/// passes. A failed write is not an error by itself: the response (a 5xx
/// sent before the request was read, say) is still read.
pub fn http_exchange(addr: &str, request: &[u8], limit: Duration) -> HttpExchange {
    let start = Instant::now();
    let deadline = start + limit;
    let mut ex = HttpExchange {
        status: None,
        head_after: None,
        elapsed: Duration::ZERO,
        body: Vec::new(),
        chunked: false,
        end: HttpEnd::Error,
        error: None,
    };
    let sa: SocketAddr = addr.parse().expect("IP:PORT");
    let mut s = match TcpStream::connect_timeout(&sa, limit) {
        Ok(s) => s,
        Err(e) => {
            ex.elapsed = start.elapsed();
            ex.end = match e.kind() {
                std::io::ErrorKind::ConnectionReset => HttpEnd::Reset,
                std::io::ErrorKind::TimedOut => HttpEnd::TimedOut,
                _ => HttpEnd::Error,
            };
            ex.error = Some(format!("connect: {e}"));
            return ex;
        }
    };
    let _ = s.set_nodelay(true);
    let _ = s.write_all(request);
    let mut buf: Vec<u8> = Vec::new();
    // (body offset, Some(length) | None = close-delimited)
    let mut framing: Option<(usize, Option<usize>)> = None;
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some((off, len)) = framing {
            let raw = &buf[off..];
            if ex.chunked {
                let (body, done) = dechunk(raw);
                ex.body = body;
                if done {
                    break HttpEnd::Complete;
                }
            } else {
                ex.body = raw.to_vec();
                if len.is_some_and(|n| raw.len() >= n) {
                    ex.body.truncate(len.unwrap());
                    break HttpEnd::Complete;
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break HttpEnd::TimedOut;
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => {
                break match framing {
                    Some((_, None)) if !ex.chunked => HttpEnd::Complete,
                    _ => HttpEnd::Eof,
                };
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if framing.is_none()
                    && let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    ex.head_after = Some(start.elapsed());
                    let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
                    let mut lines = head.split("\r\n");
                    ex.status = lines
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|c| c.parse().ok());
                    let mut length = None;
                    for l in lines {
                        let Some((name, value)) = l.split_once(':') else {
                            continue;
                        };
                        match name.trim().to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().ok(),
                            "transfer-encoding" => {
                                ex.chunked = value.trim().eq_ignore_ascii_case("chunked")
                            }
                            _ => {}
                        }
                    }
                    framing = Some((pos + 4, length));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break HttpEnd::TimedOut;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break HttpEnd::Reset,
            Err(e) => {
                ex.error = Some(e.to_string());
                break HttpEnd::Error;
            }
        }
    };
    ex.end = end;
    ex.elapsed = start.elapsed();
    ex
}

/// `GET path` with `Connection: close` through [`http_exchange`].
pub fn http_get_once(addr: &str, path: &str, limit: Duration) -> HttpExchange {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, req.as_bytes(), limit)
}

/// Non-listener lines of /proc/net/unix carrying `path` in state `st`
/// (2 = SS_CONNECTING embryos, 3 = SS_CONNECTED).
pub fn unix_path_lines(lines: &[ProcUnixLine], path: &str, st: u8) -> u64 {
    lines
        .iter()
        .filter(|l| l.flags & 0x10000 == 0 && l.st == st && l.path.as_deref() == Some(path))
        .count() as u64
}

/// Waits (bounded: 5 s) until [`unix_path_lines`] of `path` in state `st`
/// counts `want`; `what` names the wait.
pub fn wait_unix_path_lines(what: &str, path: &str, st: u8, want: u64) {
    wait_for(what, Duration::from_secs(5), || {
        let n = unix_path_lines(&proc_net_unix(), path, st);
        if n == want {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });
}

/// `ss -ltn` (Recv-Q, Send-Q) of the TCP listener on exactly `addr`.
pub fn ss_tcp_listen_queue(addr: &str) -> Option<(u64, u64)> {
    ss_tcp(&["-ltn"])
        .iter()
        .find(|r| r.state == "LISTEN" && r.local == addr)
        .map(|r| (r.recv_q, r.send_q))
}

/// ESTABLISHED sockets in `rows` (`ss -tan`) whose local address is `addr`.
pub fn ss_estab_local(rows: &[SsTcpRow], addr: &str) -> u64 {
    rows.iter()
        .filter(|r| r.state == "ESTAB" && r.local == addr)
        .count() as u64
}

/// VmRSS of `pid` in KiB (/proc/PID/status), `None` once it is gone.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The open descriptor numbers of `pid` (/proc/PID/fd).
pub fn fd_numbers(pid: u32) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    v.sort();
    v
}

/// Sets the soft RLIMIT_NOFILE of another process with prlimit(2), its
/// hard limit unchanged; returns the previous (soft, hard).
pub fn set_nofile_of(pid: u32, soft: u64) -> (u64, u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit struct of this frame; a null new limit reads.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit({pid}): {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; a null old limit is allowed.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit({pid}, NOFILE={soft}): {}",
        std::io::Error::last_os_error()
    );
    (old.rlim_cur, old.rlim_max)
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (up to the
/// hard limit); returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit struct of this frame.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    if rl.rlim_cur < want {
        rl.rlim_cur = want.min(rl.rlim_max);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    }
    rl.rlim_cur
}
