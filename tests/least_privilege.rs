//! The agent needs no privilege in its own network namespace: run as
//! `nobody` with every capability dropped (bounding, inheritable, and
//! effective sets empty, no_new_privs — what daemonset-unprivileged.yaml,
//! the sidecar, and the systemd unit with its two capabilities removed
//! configure), it reads inet_diag, unix_diag and /proc/net and reports the
//! same figures as the kernel shows `ss`; `--ebpf auto` (the default) then
//! logs once why eBPF is off and exports no event series, and `--ebpf on`
//! refuses to start. (With exactly the unit's `CAP_BPF` and `CAP_PERFMON`
//! the eBPF source runs: tests/netns_ebpf.rs, also on 5.10.) Its peak RSS
//! here must fit the memory limit of `deploy/kubernetes/daemonset.yaml`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::agent::AGENT_ADDR;
use common::metrics::Metrics;
use common::netns::{run_in_netns, setup_netns};
use common::prereq;
use common::process::{run_ok, status_field};
use common::wait::wait_for;

/// The `limits: memory: NMi` of the DaemonSet, in bytes.
fn daemonset_memory_limit() -> u64 {
    let y = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/daemonset.yaml"
    ))
    .unwrap();
    let limits = &y[y.find("limits:").expect("limits in daemonset.yaml")..];
    let line = limits
        .lines()
        .find(|l| l.trim_start().starts_with("memory:"))
        .unwrap();
    let mi: u64 = line
        .trim()
        .trim_start_matches("memory:")
        .trim()
        .trim_end_matches("Mi")
        .parse()
        .unwrap();
    mi << 20
}

#[test]
#[ignore = "needs root (unshare -n), iproute2 and setpriv: ./scripts/test runs it"]
fn agent_runs_as_nobody_without_capabilities() {
    run_in_netns("agent_runs_as_nobody_without_capabilities", || {
        prereq::tool("setpriv");
        setup_netns(&[]);
        // A listener with backlog 8 that never accepts, and 12 clients.
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(
                &"127.0.0.1:8080"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        listener.listen(8).unwrap();
        let mut clients = Vec::new();
        for _ in 0..12 {
            let c =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            c.set_nonblocking(true).unwrap();
            let _ = c.connect(
                &"127.0.0.1:8080"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            );
            clients.push(c);
        }
        wait_for("9 queued connections", Duration::from_secs(10), || {
            let out = run_ok("ss", &["-Hltn", "sport = :8080"]);
            if out.split_whitespace().nth(1) == Some("9") {
                Ok(())
            } else {
                Err(out)
            }
        });
        // A UNIX listener with pending connections, in a directory nobody can reach.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let _unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _pending: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();

        let mut child = prereq::command("setpriv")
            .args(NOBODY_NO_CAPS)
            .arg(env!("CARGO_BIN_EXE_sockscope"))
            .args([
                "agent",
                "--web.listen-address",
                AGENT_ADDR,
                "--poll.interval",
                "100ms",
                "--source",
                "netlink",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning setpriv");
        let pid = child.id();
        let result = std::panic::catch_unwind(|| {
            wait_for("the agent to listen", Duration::from_secs(20), || {
                let out = run_ok("ss", &["-Hltn", "sport = :9977"]);
                if out.contains(AGENT_ADDR) {
                    Ok(())
                } else {
                    Err(out)
                }
            });
            assert_eq!(
                status_field(pid, "Uid:").split_whitespace().next(),
                Some("65534")
            );
            for caps in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
                assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
            }
            assert_eq!(status_field(pid, "NoNewPrivs:"), "1");

            let body = ureq::get(&format!("http://{AGENT_ADDR}/metrics"))
                .call()
                .unwrap()
                .into_body()
                .read_to_string()
                .unwrap();
            let m = Metrics::parse(&body).unwrap();
            for source in ["inet_diag", "unix_diag", "sysctl", "proc_net_netstat"] {
                assert_eq!(
                    m.value("sockscope_source_up", &[("source", source)]),
                    1.0,
                    "{source}"
                );
            }
            let l = [("proto", "tcp"), ("listener", "127.0.0.1:8080")];
            assert_eq!(m.value("sockscope_listen_queue_length", &l), 9.0);
            assert_eq!(
                m.value("sockscope_listen_queue_limit", &l),
                8.0,
                "the limit needs inet_diag: it worked"
            );
            let p = path.display().to_string();
            let u = [("proto", "unix"), ("listener", p.as_str())];
            assert_eq!(m.value("sockscope_listen_queue_length", &u), 3.0);

            let hwm_kib: u64 = status_field(pid, "VmHWM:")
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap();
            let limit = daemonset_memory_limit();
            println!(
                "agent as nobody: peak RSS {hwm_kib} KiB; DaemonSet memory limit {} MiB",
                limit >> 20
            );
            assert!(
                hwm_kib * 1024 < limit / 2,
                "peak RSS {hwm_kib} KiB leaves < 2x headroom under the DaemonSet limit"
            );
            // --ebpf auto without the capabilities: no event series at all.
            for s in body.lines().filter(|l| !l.starts_with('#')) {
                assert!(
                    !s.starts_with("sockscope_connects_total")
                        && !s.starts_with("sockscope_ebpf_")
                        && !s.contains("ebpf_connects"),
                    "an eBPF series without the capabilities: {s}"
                );
            }
        });
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Err(e) = result {
            eprintln!("----- agent stderr -----\n{log}");
            std::panic::resume_unwind(e);
        }
        // Exactly one line about eBPF, saying it is off and why.
        let ebpf: Vec<&str> = log.lines().filter(|l| l.contains("eBPF")).collect();
        assert_eq!(ebpf.len(), 1, "one eBPF line:\n{log}");
        for want in ["--ebpf auto", "off", "CAP_BPF and CAP_PERFMON"] {
            assert!(ebpf[0].contains(want), "{want:?} not in {:?}", ebpf[0]);
        }
        drop(clients);

        // --ebpf on, same user and sets: exits non-zero at once with one
        // line naming the capabilities.
        let out = prereq::command("setpriv")
            .args(NOBODY_NO_CAPS)
            .arg(env!("CARGO_BIN_EXE_sockscope"))
            .args(["agent", "--web.listen-address", AGENT_ADDR, "--ebpf", "on"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--ebpf on started:\n{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line:\n{err}");
        assert!(
            err.contains("--ebpf on") && err.contains("CAP_BPF and CAP_PERFMON"),
            "{err}"
        );
    });
}

/// `nobody`, no capability in any set, no_new_privs.
const NOBODY_NO_CAPS: &[&str] = &[
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
];
