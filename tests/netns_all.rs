//! `--netns all`: one agent, started in the parent namespace, reports
//! every network namespace apart, figure by figure equal to `nsenter -t
//! PID -n ss …` read at the same moment.
//!
//! The world is private: the test re-runs itself under `unshare -n -m -p
//! -f --mount-proc`, so `/proc` lists only its processes and `/run/netns`
//! only its bindings. In it: three namespaces made by `unshare -n -u`
//! (tests/netns_child.py: each its own hostname, port range, somaxconn, a
//! listener that never accepts, TIME_WAIT sockets, and the same abstract
//! UNIX listener name with a different queue), one of them in a
//! kubelet-style cgroup, and one `ip netns add` namespace with no process.
//! Then churn (namespaces created and destroyed while the agent runs), and
//! the agent without privileges.
//!
//! Needs root, iproute2 (`ss`, `ip`, `nsenter`), python3 and a cgroup
//! hierarchy (v2, or v1 `pids`): marked `#[ignore]`, run by `./scripts/test`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::agent::start_agent;
use common::metrics::Metrics;
use common::netns::run_unshared;
use common::prereq;
use common::process::{fd_numbers, run_ok};
use common::scrape::{Scraper, measure};
use common::wait::wait_for;

const PRIVATE_WORLD: &[&str] = &["-n", "-m", "-p", "-f", "--mount-proc"];
const POD_UID: &str = "3f1c2d4e-5a6b-7c8d-9e0f-112233445566";
const ABSTRACT: &str = "@sockscope-netns-test";

/// One child namespace (tests/netns_child.py), stopped on drop.
struct ChildNs {
    k: u64,
    child: Child,
    pid: u32,
    inode: String,
}

impl ChildNs {
    fn start(k: u64, dir: &Path) -> ChildNs {
        let ready = dir.join(format!("ready-{k}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netns_child.py");
        let python = prereq::python_with(&["socket"]);
        let mut child = prereq::command("unshare")
            .args(["-n", "-u", "--"])
            .arg(python)
            .arg(script)
            .arg(k.to_string())
            .arg(&ready)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning unshare … netns_child.py: {e}"));
        wait_for(
            &format!("namespace {k} ready"),
            Duration::from_secs(30),
            || {
                if let Some(st) = child.try_wait().unwrap() {
                    panic!("netns_child.py {k} exited: {st}");
                }
                std::fs::read_to_string(&ready).map_err(|e| e.to_string())
            },
        );
        let pid = child.id();
        let inode = ns_inode(&format!("/proc/{pid}/ns/net"));
        ChildNs {
            k,
            child,
            pid,
            inode,
        }
    }

    /// `ss ARGS` inside this namespace.
    fn ss(&self, args: &[&str]) -> String {
        let pid = self.pid.to_string();
        let mut all = vec!["-t", pid.as_str(), "-n", "ss"];
        all.extend(args);
        run_ok(prereq::tool("nsenter").to_str().unwrap(), &all)
    }
}

impl Drop for ChildNs {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The inode of a namespace file: `/proc/PID/ns/net` (followed) or a
/// `/run/netns` binding.
fn ns_inode(path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path}: {e}"))
        .ino()
        .to_string()
}

/// A kubelet-style pod cgroup holding one process, in whichever hierarchy
/// the host has (removed on drop): cgroup v2 — the only one on a
/// standard Debian 12 host (systemd), at `/sys/fs/cgroup`, or at
/// `/sys/fs/cgroup/unified` beside v1 — in kubelet's systemd layout
/// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice`
/// (`-` of the UID as `_`); else the v1 `pids` hierarchy in the cgroupfs
/// layout `/kubepods/besteffort/pod<uid>/`.
struct PodCgroup {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    pid: u32,
}

impl PodCgroup {
    /// The hierarchy to use and the pod cgroup's path components in it.
    fn layout() -> (PathBuf, Vec<String>) {
        let v2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|r| r.join("cgroup.controllers").exists() || is_cgroup2(r));
        if let Some(root) = v2 {
            let uid = POD_UID.replace('-', "_");
            return (
                root.to_owned(),
                vec![
                    "kubepods.slice".into(),
                    "kubepods-besteffort.slice".into(),
                    format!("kubepods-besteffort-pod{uid}.slice"),
                ],
            );
        }
        let v1 = Path::new("/sys/fs/cgroup/pids");
        assert!(
            v1.join("cgroup.procs").exists(),
            "prerequisite missing: a cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified) \
             or the cgroup v1 pids hierarchy (/sys/fs/cgroup/pids)"
        );
        (
            v1.to_owned(),
            vec![
                "kubepods".into(),
                "besteffort".into(),
                format!("pod{POD_UID}"),
            ],
        )
    }

    fn place(pid: u32) -> PodCgroup {
        let (root, parts) = PodCgroup::layout();
        let mut dirs = Vec::new();
        let mut dir = root.clone();
        for part in parts {
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                dirs.push(dir.clone());
            }
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
        PodCgroup { root, dirs, pid }
    }
}

/// True when `dir` is the mount point of a cgroup v2 hierarchy.
fn is_cgroup2(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[2] == "cgroup2" && Path::new(f[1]) == dir
        })
    })
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The figures compared for one namespace: agent and `ss` alike.
#[derive(Debug, PartialEq)]
struct Figures {
    time_wait: u64,
    established: u64,
    listen_queue: (u64, u64),
    unix_queue: (u64, u64),
}

fn ss_figures(ns: &ChildNs) -> Figures {
    let count = |state: &str| ns.ss(&["-Htan", "state", state]).lines().count() as u64;
    let queue = |out: String| -> (u64, u64) {
        let f: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // ss -Hltn: State Recv-Q Send-Q …; ss -Hxl: Netid State Recv-Q Send-Q …
        let at = if f.first() == Some(&"u_str") { 2 } else { 1 };
        (f[at].parse().unwrap(), f[at + 1].parse().unwrap())
    };
    let unix = ns
        .ss(&["-Hxl"])
        .lines()
        .filter(|l| l.contains(ABSTRACT))
        .collect::<Vec<_>>()
        .join("\n");
    Figures {
        time_wait: count("time-wait"),
        established: count("established"),
        listen_queue: queue(ns.ss(&["-Hltn", "sport", "=", ":8080"])),
        unix_queue: queue(unix),
    }
}

fn agent_figures(m: &Metrics, netns: &str) -> Figures {
    let tcp = |state| {
        m.value(
            "sockscope_tcp_sockets",
            &[("netns", netns), ("family", "ipv4"), ("state", state)],
        ) as u64
    };
    let queue = |proto, listener| {
        let l = [("netns", netns), ("proto", proto), ("listener", listener)];
        (
            m.value("sockscope_listen_queue_length", &l) as u64,
            m.value("sockscope_listen_queue_limit", &l) as u64,
        )
    };
    Figures {
        time_wait: tcp("time_wait"),
        established: tcp("established"),
        listen_queue: queue("tcp", "127.0.0.1:8080"),
        unix_queue: queue("unix", ABSTRACT),
    }
}

fn info<'a>(m: &'a Metrics, netns: &str) -> &'a std::collections::BTreeMap<String, String> {
    let rows = m.matching("sockscope_netns_info", &[("netns", netns)]);
    assert_eq!(rows.len(), 1, "one sockscope_netns_info for {netns}");
    &rows[0].labels
}

#[test]
#[ignore = "needs root (unshare -n -p), iproute2, python3 and a cgroup hierarchy: ./scripts/test runs it"]
fn netns_all_reports_every_namespace_apart() {
    run_unshared(
        "netns_all_reports_every_namespace_apart",
        PRIVATE_WORLD,
        || {
            run_ok("ip", &["link", "set", "lo", "up"]);
            let dir = tempfile::tempdir().unwrap();
            let kids: Vec<ChildNs> = (0..3).map(|k| ChildNs::start(k, dir.path())).collect();
            let _pod = PodCgroup::place(kids[0].pid);
            // The binding's file lives in the shared /run; remove a leftover.
            let _ = Command::new(prereq::tool("ip"))
                .args(["netns", "del", "sockscope-empty"])
                .output();
            run_ok("ip", &["netns", "add", "sockscope-empty"]);
            let empty = ns_inode("/run/netns/sockscope-empty");
            let own = ns_inode("/proc/self/ns/net");

            let (mut agent, mut scraper) =
                start_agent(&["--netns", "all", "--census.cpu-budget-ratio", "1"]);
            let (truth, m) = measure(&mut scraper, || {
                kids.iter().map(ss_figures).collect::<Vec<_>>()
            });
            for (ns, want) in kids.iter().zip(&truth) {
                let k = ns.k;
                assert_eq!(want.time_wait, 10 * (k + 1), "ss in namespace {k}");
                assert_eq!(want.listen_queue, (k + 2, 8), "ss in namespace {k}");
                assert_eq!(want.unix_queue, (k + 1, 16), "ss in namespace {k}");
                assert_eq!(&agent_figures(&m, &ns.inode), want, "namespace {k}");
                let sysctl = |name| m.value(name, &[("netns", &ns.inode)]);
                assert_eq!(sysctl("sockscope_sysctl_somaxconn"), (64 + k) as f64);
                assert_eq!(
                    sysctl("sockscope_sysctl_ip_local_port_range_first"),
                    (41000 + 1000 * k) as f64
                );
                assert_eq!(sysctl("sockscope_sysctl_tcp_tw_reuse"), 0.0);
                let pool = [
                    ("netns", ns.inode.as_str()),
                    ("local_ip", "127.0.0.1"),
                    ("destination", "127.0.0.1:9000"),
                    ("state", "time_wait"),
                ];
                assert_eq!(
                    m.value("sockscope_ephemeral_ports_used", &pool),
                    want.time_wait as f64,
                    "namespace {k}'s pool, in its own port range"
                );
                let i = info(&m, &ns.inode);
                assert_eq!(i["hostname"], format!("sockscope-ns{k}"));
                assert_eq!(i["pid"], ns.pid.to_string());
                assert_eq!(i["comm"], "python3");
                let want_uid = if k == 0 { POD_UID } else { "" };
                assert_eq!(i["pod_uid"], want_uid, "namespace {k}");
                assert_eq!(i["agent"], "false", "namespace {k}");
            }
            // The namespace with no process: reported by its name, with the
            // defaults of a fresh namespace and no socket.
            let e = info(&m, &empty);
            assert_eq!(
                (e["name"].as_str(), e["pid"].as_str()),
                ("sockscope-empty", "")
            );
            assert_eq!(
                m.value("sockscope_sysctl_somaxconn", &[("netns", &empty)]),
                4096.0
            );
            assert_eq!(
                m.value(
                    "sockscope_tcp_sockets",
                    &[("netns", &empty), ("family", "ipv4"), ("state", "listen")]
                ),
                0.0
            );
            // Our own namespace is one among the others, marked as the agent's.
            assert_eq!(info(&m, &own)["agent"], "true");
            assert_eq!(m.value("sockscope_netns_discovered", &[]), 5.0);
            assert_eq!(m.value("sockscope_netns_over_limit", &[]), 0.0);
            assert!(
                m.all("sockscope_tcp_sockets")
                    .iter()
                    .all(|s| s.labels.contains_key("netns")),
                "every per-namespace series carries netns"
            );

            snapshot_sections(&kids, &own);

            churn(&mut agent, &mut scraper);
            drop(kids);
            run_ok("ip", &["netns", "del", "sockscope-empty"]);
            agent.assert_running();
        },
    );
}

/// `sockscope snapshot --netns all`: a section per namespace, in text and
/// JSON, with each namespace's own figures (its TIME_WAIT count and
/// listener queue, which differ by namespace and do not move) and its own
/// namespace marked.
fn snapshot_sections(kids: &[ChildNs], own: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_sockscope"))
        .args(["snapshot", "--netns", "all", "--json", "--log.level", "off"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nss = v["namespaces"].as_array().unwrap();
    assert_eq!(nss.len(), 5, "every namespace: {v}");
    for ns in kids {
        let k = ns.k;
        let doc = nss
            .iter()
            .find(|d| d["netns"]["inode"].as_u64() == ns.inode.parse().ok())
            .unwrap_or_else(|| panic!("namespace {k} in the snapshot"));
        assert_eq!(doc["netns"]["hostname"], format!("sockscope-ns{k}"));
        assert_eq!(doc["netns"]["agent"], false);
        assert_eq!(
            doc["tcp"]["ipv4"]["time_wait"],
            10 * (k + 1),
            "namespace {k}"
        );
        let l = doc["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["listener"] == "127.0.0.1:8080")
            .unwrap();
        assert_eq!(
            (l["length"].clone(), l["limit"].clone()),
            ((k + 2).into(), 8.into())
        );
    }
    let mine = nss
        .iter()
        .find(|d| d["netns"]["inode"].as_u64() == own.parse().ok())
        .unwrap();
    assert_eq!(mine["netns"]["agent"], true);

    let out = Command::new(env!("CARGO_BIN_EXE_sockscope"))
        .args(["snapshot", "--netns", "all", "--log.level", "off"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("Network namespaces: 5 found, 5 shown"),
        "{text}"
    );
    assert!(
        text.contains(&format!("netns {own} (the agent's own)")),
        "{text}"
    );
    for ns in kids {
        assert!(
            text.contains(&format!("netns {} hostname=sockscope-ns{}", ns.inode, ns.k)),
            "{text}"
        );
    }
}

/// Dozens of short-lived namespaces while the agent runs: each is
/// reported from a poll after it appears and gone from the poll after it
/// went; the agent's descriptors and threads come back to their count.
fn churn(agent: &mut common::agent::Agent, scraper: &mut Scraper) {
    let pid = agent.pid();
    let threads = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default())
            .map(|c| c.trim_end().to_owned())
            .collect();
        names.sort();
        names
    };
    scraper.scrape_after(common::wait::now_unix());
    let (fds0, threads0) = (fd_numbers(pid).len(), threads());
    for i in 0..24 {
        let name = format!("sockscope-churn-{i}");
        run_ok("ip", &["netns", "add", &name]);
        let inode = ns_inode(&format!("/run/netns/{name}"));
        let m = scraper.scrape_after(common::wait::now_unix());
        assert_eq!(info(&m, &inode)["name"], name);
        // A short-lived process namespace, gone before the next poll.
        let out = Command::new(prereq::tool("unshare"))
            .args(["-n", "--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success());
        run_ok("ip", &["netns", "del", &name]);
        let m = scraper.scrape_after(common::wait::now_unix());
        assert!(
            m.series
                .iter()
                .all(|s| s.labels.get("netns") != Some(&inode)),
            "no series of the vanished {name} remains"
        );
    }
    let m = scraper.scrape_after(common::wait::now_unix());
    assert_eq!(m.value("sockscope_netns_discovered", &[]), 5.0);
    assert_eq!(
        fd_numbers(pid).len(),
        fds0,
        "descriptors back to their count"
    );
    let threads1 = threads();
    assert_eq!(
        threads1.len(),
        threads0.len(),
        "threads back to their count: {threads0:?} then {threads1:?}"
    );
}

/// The census budget shared by every namespace goes first to a namespace
/// whose TCP socket count moved. With a budget that allows about one census
/// every 1.5 s (measured first: a census costs what the host's whole TCP
/// hash costs to walk), the test waits until namespace 1 holds the newest
/// census of all, then opens 30 connected pairs in it (61 sockets more in
/// its `/proc/net/sockstat`). Round robin would census every other
/// namespace first (3: the two other children and the agent's own); the
/// moved one must come back before they all have, and its figures then
/// follow `ss`. All of it well within the 60 s after which the children's
/// TIME_WAIT sockets expire (which moves every namespace).
#[test]
#[ignore = "needs root (unshare -n -p), iproute2 and python3: ./scripts/test runs it"]
fn netns_all_census_goes_first_to_the_namespace_that_moved() {
    run_unshared(
        "netns_all_census_goes_first_to_the_namespace_that_moved",
        PRIVATE_WORLD,
        || {
            run_ok("ip", &["link", "set", "lo", "up"]);
            let dir = tempfile::tempdir().unwrap();
            let kids: Vec<ChildNs> = (0..3).map(|k| ChildNs::start(k, dir.path())).collect();
            let own = ns_inode("/proc/self/ns/net");
            // What a round of censuses costs here (every inet_diag dump walks
            // the host's one TCP hash): a census every poll, once.
            let (probe, mut scraper) =
                start_agent(&["--netns", "all", "--census.cpu-budget-ratio", "1"]);
            let m = scraper.scrape_until("4 namespaces", Duration::from_secs(10), |m| {
                m.all("sockscope_census_timestamp_seconds").len() == 4
            });
            let cost = m.value("sockscope_census_interval_seconds", &[("netns", &own)]);
            drop((scraper, probe));
            // A budget for one round in about 6 s: a census every 1.5 s.
            let ratio = (cost / 6.0).clamp(1e-6, 0.5);
            let ratio_arg = format!("{ratio:.9}");
            let (mut agent, mut scraper) =
                start_agent(&["--netns", "all", "--census.cpu-budget-ratio", &ratio_arg]);
            let censuses = |m: &Metrics| -> Vec<(String, f64)> {
                m.all("sockscope_census_timestamp_seconds")
                    .iter()
                    .map(|s| (s.labels["netns"].clone(), s.value))
                    .collect()
            };
            let moved = &kids[1];
            let m = scraper.scrape_until("4 namespaces", Duration::from_secs(10), |m| {
                censuses(m).len() == 4
            });
            let round = m.value("sockscope_census_interval_seconds", &[("netns", &own)]);
            println!(
                "censuses of all namespaces take {:.1} ms; at ratio {ratio_arg} a round is {round:.1} s",
                cost * 1000.0
            );
            let before = scraper.scrape_until(
                "namespace 1 holding the newest census",
                Duration::from_secs_f64(round * 3.0 + 10.0),
                |m| {
                    let c = censuses(m);
                    let newest = c.iter().map(|(_, t)| *t).fold(f64::MIN, f64::max);
                    c.iter().any(|(n, t)| *n == moved.inode && *t == newest)
                        && c.iter().filter(|(_, t)| *t == newest).count() == 1
                },
            );
            let before = censuses(&before);
            let pid = moved.pid.to_string();
            let mut pairs = prereq::command("nsenter")
                .args(["-t", &pid, "-n", "--"])
                .arg(prereq::python_with(&["socket"]))
                .args([
                    "-c",
                    "import socket, sys\n\
                     l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(64)\n\
                     c = [socket.create_connection(l.getsockname()) for _ in range(30)]\n\
                     s = [l.accept()[0] for _ in range(30)]\n\
                     print('ready', flush=True); sys.stdin.read()",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning nsenter … python3: {e}"));
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(pairs.stdout.as_mut().unwrap()),
                &mut line,
            )
            .unwrap();
            assert_eq!(line.trim(), "ready", "the connected pairs");
            let old = |c: &[(String, f64)], n: &str| {
                c.iter().find(|(i, _)| i == n).map(|(_, t)| *t).unwrap()
            };
            let t_moved = old(&before, &moved.inode);
            let after = scraper.scrape_until(
                "a new census of namespace 1",
                Duration::from_secs_f64(round * 2.0 + 10.0),
                |m| old(&censuses(m), &moved.inode) > t_moved,
            );
            let now = censuses(&after);
            let others_since: Vec<&(String, f64)> = now
                .iter()
                .filter(|(n, t)| *n != moved.inode && *t > old(&before, n))
                .collect();
            println!("censuses before {before:?}, when namespace 1 came back {now:?}");
            assert!(
                others_since.len() < 3,
                "namespace 1 waited for every other namespace (round robin): {others_since:?}"
            );
            let estab = moved.ss(&["-tanH", "state", "established"]).lines().count() as f64;
            let m = scraper.scrape_until(
                "namespace 1's established sockets as ss counts them",
                Duration::from_secs(5),
                |m| {
                    m.get(
                        "sockscope_tcp_sockets",
                        &[
                            ("netns", &moved.inode),
                            ("family", "ipv4"),
                            ("state", "established"),
                        ],
                    ) == Some(estab)
                },
            );
            assert!(
                estab >= 60.0,
                "the 30 pairs and the queued connections: {estab}"
            );
            drop(pairs.stdin.take());
            let _ = pairs.wait();
            drop(m);
            drop(kids);
            agent.assert_running();
        },
    );
}

/// Without CAP_SYS_ADMIN and CAP_SYS_PTRACE (as nobody, every capability
/// dropped): one warning at start, the failures counted, its own
/// namespace still served.
#[test]
#[ignore = "needs root (unshare -n -p), iproute2, python3 and setpriv: ./scripts/test runs it"]
fn netns_all_without_privileges_serves_its_own_namespace() {
    run_unshared(
        "netns_all_without_privileges_serves_its_own_namespace",
        PRIVATE_WORLD,
        || {
            run_ok("ip", &["link", "set", "lo", "up"]);
            let dir = tempfile::tempdir().unwrap();
            let kid = ChildNs::start(1, dir.path());
            let own = ns_inode("/proc/self/ns/net");
            let mut agent = common::agent::Agent::spawn_via(
                &prereq::tool("setpriv"),
                &[
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--",
                ],
                &[
                    "--netns",
                    "all",
                    "--census.cpu-budget-ratio",
                    "1",
                    "--log.level",
                    "info,sockscope::namespaces=debug",
                ],
            );
            let mut scraper = Scraper::connect(&mut agent);
            let m = scraper.scrape_after(common::wait::now_unix());
            info(&m, &own);
            assert!(
                m.get(
                    "sockscope_tcp_sockets",
                    &[("netns", &own), ("family", "ipv4"), ("state", "listen")]
                )
                .is_some_and(|v| v >= 1.0),
                "its own namespace (its listener) is served"
            );
            assert!(
                m.matching("sockscope_netns_info", &[("netns", &kid.inode)])
                    .is_empty(),
                "another user's namespace is not entered"
            );
            let errors: f64 = m
                .all("sockscope_netns_errors_total")
                .iter()
                .map(|s| s.value)
                .sum();
            assert!(
                errors >= 1.0,
                "the namespaces it could not read are counted"
            );
            let log = agent.log();
            assert_eq!(
                log.matches("without CAP_SYS_ADMIN and CAP_SYS_PTRACE")
                    .count(),
                1,
                "one warning at start:\n{log}"
            );
            // At debug, what failed is named: the pids whose ns/net it could
            // not read, the child's among them.
            let named = log
                .lines()
                .filter(|l| l.contains("cannot read /proc/PID/ns/net"))
                .find(|l| l.contains("reason=\"eacces\"") || l.contains("reason=eacces"))
                .unwrap_or_else(|| panic!("a debug line naming the unreadable processes:\n{log}"));
            let pids = named
                .split("pids=[")
                .nth(1)
                .and_then(|r| r.split(']').next())
                .unwrap_or_else(|| panic!("pids listed: {named}"));
            assert!(
                pids.split(", ").any(|p| p == kid.pid.to_string()),
                "the child's pid {} among {pids}",
                kid.pid
            );
            assert_eq!(info(&m, &own)["agent"], "true");
            agent.assert_running();
            drop(kid);
            let _ = writeln!(std::io::stderr(), "errors counted: {errors}");
        },
    );
}
