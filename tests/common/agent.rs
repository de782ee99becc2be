//! The `sockscope agent` child process, either on the fixed address of the
//! network-namespace tests ([`Agent::spawn`]) or on an OS-chosen port with
//! a JSON log ([`Agent::start`]).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::process::{LoggedChild, signal_child};
use super::scrape::Scraper;
use super::wait::{scaled, wait_for};

/// The binary under test: `SOCKSCOPE_AGENT_BIN` when set (to measure
/// another build with the same test, e.g. the static musl one for
/// BENCHMARKS.md), else this package's.
pub fn agent_bin() -> std::path::PathBuf {
    std::env::var_os("SOCKSCOPE_AGENT_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sockscope").into())
}

/// Where the agent listens inside the namespace.
pub const AGENT_ADDR: &str = "127.0.0.1:9977";

/// The `sockscope agent` child; stdout and stderr go to a log file. It
/// gets SIGKILL if the spawning thread dies; on drop SIGKILL (and its log
/// printed when the test is panicking).
pub struct Agent {
    proc: LoggedChild,
    /// The address it serves on (`IP:PORT`).
    pub addr: String,
}

impl Agent {
    /// Starts `sockscope agent --web.listen-address 127.0.0.1:9977
    /// --poll.interval 100ms` (unless `extra` sets `--poll.interval`) plus
    /// `extra` flags. It inherits the
    /// namespace. Does not wait for it to listen.
    pub fn spawn(extra: &[&str]) -> Agent {
        Agent::launch(AGENT_ADDR, &[], extra, |_| {})
    }

    /// Starts the agent on 127.0.0.1 with an OS-chosen port and a JSON
    /// log, with `extra` flags, and waits (bounded: 20 s) for its
    /// "serving" log line, which carries the bound address.
    pub fn start(extra: &[&str]) -> Agent {
        Agent::start_with(extra, |_| {})
    }

    /// Like [`Agent::start`], letting `prepare` adjust the command first
    /// (e.g. a `pre_exec` hook).
    pub fn start_with(extra: &[&str], prepare: impl FnOnce(&mut Command)) -> Agent {
        let mut agent = Agent::launch("127.0.0.1:0", &["--log.format", "json"], extra, prepare);
        agent.addr = wait_for(
            "the agent's \"serving\" log line",
            Duration::from_secs(20),
            || {
                agent.assert_running();
                let log = agent.log();
                serving_address(&log).ok_or(log)
            },
        );
        agent
    }

    fn launch(
        listen: &str,
        log_flags: &[&str],
        extra: &[&str],
        prepare: impl FnOnce(&mut Command),
    ) -> Agent {
        Agent::launch_via(None, listen, log_flags, extra, prepare)
    }

    /// [`Agent::spawn`] run through `program ARGS… sockscope …`: a program
    /// that execs its arguments (e.g. `setpriv … --`), so the PID stays the
    /// agent's.
    pub fn spawn_via(program: &Path, args: &[&str], extra: &[&str]) -> Agent {
        Agent::launch_via(Some((program, args)), AGENT_ADDR, &[], extra, |_| {})
    }

    fn launch_via(
        via: Option<(&Path, &[&str])>,
        listen: &str,
        log_flags: &[&str],
        extra: &[&str],
        prepare: impl FnOnce(&mut Command),
    ) -> Agent {
        let bin = agent_bin();
        let mut cmd = match via {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["agent", "--web.listen-address", listen])
            .args(log_flags);
        if !extra.contains(&"--poll.interval") {
            cmd.args(["--poll.interval", "100ms"]);
        }
        // The agent closes a keep-alive connection idle for this long, and a
        // test's one scrape connection ([`super::scrape::Scraper`]) idles
        // between scrapes while the test builds its world or reads `ss`:
        // the default 10 s, scaled like every wait under emulation (on 5.10
        // under TCG netns_ground_truth_procfs idled past 10 s between two
        // scrapes). web_limits sets its own.
        if !extra.contains(&"--web.read-header-timeout") {
            let idle = scaled(Duration::from_secs(10));
            cmd.args([
                "--web.read-header-timeout",
                &format!("{}ms", idle.as_millis()),
            ]);
        }
        cmd.args(extra);
        prepare(&mut cmd);
        let proc = LoggedChild::spawn(&mut cmd, Signal::KILL)
            .unwrap_or_else(|e| panic!("spawning the agent: {e}"));
        Agent {
            proc,
            addr: listen.to_owned(),
        }
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Panics (with the log) if the agent has exited.
    pub fn assert_running(&mut self) {
        self.proc.assert_running("the agent");
    }

    /// GETs /metrics on a new connection.
    pub fn scrape(&self) -> String {
        ureq::get(&format!("http://{}/metrics", self.addr))
            .call()
            .expect("scrape /metrics")
            .into_body()
            .read_to_string()
            .unwrap()
    }

    /// Stops the agent with SIGTERM, waits for it (bounded: 10 s), asserts
    /// it exited successfully, and returns its log.
    pub fn stop(mut self) -> String {
        signal_child(&self.proc.child, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.proc.child.try_wait().unwrap() {
                assert!(status.success(), "agent exited with {status} on SIGTERM");
                break;
            }
            assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }
}

/// The address of the first complete JSON `"serving"` line of `log`.
fn serving_address(log: &str) -> Option<String> {
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|l| l.contains("\"serving\""))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["fields"]["address"].as_str().map(str::to_owned)
        })
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

/// Spawns the agent ([`Agent::spawn`] with `extra` flags) and connects
/// its one scrape connection ([`Scraper::connect`]).
pub fn start_agent(extra: &[&str]) -> (Agent, Scraper) {
    let mut agent = Agent::spawn(extra);
    let scraper = Scraper::connect(&mut agent);
    (agent, scraper)
}
