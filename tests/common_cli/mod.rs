//! Helpers for tests that run the `sockscope` binary on this host's
//! namespace (no privileges needed).
#![allow(dead_code)]

#[path = "../common/prereq.rs"]
pub mod prereq;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `cmd args` with `input` on stdin; returns (success, stdout+stderr).
pub fn run_with_stdin(cmd: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = prereq::command(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A running `sockscope agent` on 127.0.0.1 with an OS-chosen port; killed
/// on drop.
pub struct Agent {
    child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts the agent with `extra` flags and waits (bounded: 20 s) for its
    /// "serving" log line, which carries the bound address.
    pub fn start(extra: &[&str]) -> Agent {
        Agent::start_with(extra, |_| {})
    }

    /// Like [`Agent::start`], letting `prepare` adjust the command first
    /// (e.g. a `pre_exec` hook).
    pub fn start_with(extra: &[&str], prepare: impl FnOnce(&mut Command)) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockscope"));
        cmd.args([
            "agent",
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.format",
            "json",
            "--poll.interval",
            "100ms",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
        prepare(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning sockscope agent: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"serving\"") {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let _ = tx.send(v["fields"]["address"].as_str().unwrap().to_owned());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("agent did not start; log:\n{}", log.lock().unwrap()));
        Agent { child, addr, log }
    }

    /// GETs /metrics.
    pub fn scrape(&self) -> String {
        ureq::get(&format!("http://{}/metrics", self.addr))
            .call()
            .expect("scrape /metrics")
            .into_body()
            .read_to_string()
            .unwrap()
    }

    /// Stops the agent with SIGTERM, waits for it (bounded) and returns
    /// its log.
    pub fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .unwrap_or_else(|e| panic!("kill({pid:?}, SIGTERM): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "agent exited with {status} on SIGTERM");
                break;
            }
            assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
