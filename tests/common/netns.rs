//! Re-executing a test inside a private network namespace, pinning it to
//! one CPU, and the namespace's sysctls.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::prereq;
use super::process::run_ok;

/// Env var set in the re-executed child that runs inside the namespace.
pub const IN_NETNS: &str = "SOCKSCOPE_IN_NETNS";

/// Runs `body` inside a fresh private network namespace.
///
/// Outside (env [`IN_NETNS`] unset) this re-executes the current test
/// binary under `unshare -n` with only `test_name` (ignored or not: the
/// tests that call this are `#[ignore]`d for needing root), asserts the child ran
/// that one test and passed, and echoes its output. Inside, it runs `body`.
pub fn run_in_netns(test_name: &str, body: impl FnOnce()) {
    run_unshared(test_name, &["-n"], body)
}

/// [`run_in_netns`] with other `unshare` flags, e.g. `-n -m -p -f
/// --mount-proc` for a world whose `/proc` lists only its own processes.
pub fn run_unshared(test_name: &str, unshare_flags: &[&str], body: impl FnOnce()) {
    if std::env::var_os(IN_NETNS).is_some() {
        body();
        return;
    }
    prereq::require_netns();
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let out = Command::new("unshare")
        .args(unshare_flags)
        .arg("--")
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
    let cpus = allowed_cpus();
    assert!(!cpus.is_empty(), "no CPU in the affinity mask");
    pin_to_nth_cpu(&cpus, 0)
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

/// The ephemeral range size (odd or even: `connect()` reaches every port,
/// see netns_port_exhaustion_odd_range), minus reserved ports inside it.
pub fn ephemeral_limit() -> u64 {
    let range = sysctl("net/ipv4/ip_local_port_range");
    let v: Vec<u64> = range
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let n = v[1] - v[0] + 1;
    let last = v[1];
    let reserved = sysctl("net/ipv4/ip_local_reserved_ports");
    let mut r = 0;
    for part in reserved.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        r += (a.max(v[0])..=b.min(last)).count() as u64;
    }
    n - r
}
