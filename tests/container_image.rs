//! The container image: `scripts/image` builds the static (musl) binary and
//! a `FROM scratch` image (`deploy/container/Containerfile`) with podman.
//! Here it is built twice (the same tree gives the same image ID),
//! inspected (user, entrypoint, labels, size, every file it holds: no
//! shell), and run the two ways the Kubernetes manifests and the Helm chart
//! run it:
//!
//! - node mode: host network, read-only root, every capability dropped,
//!   uid 65534: `/metrics` passes `promtool check metrics` and shows a
//!   listener this test opened in the host's namespace;
//! - all-namespaces mode: uid 0 (Kubernetes does not hand added
//!   capabilities to a non-root user, podman would, as ambient ones: so
//!   the test runs it as the chart does), the host's PID namespace,
//!   `SYS_ADMIN` and `SYS_PTRACE` only: it reports a network namespace
//!   this test made, and the listener inside it; a namespace that holds no
//!   process (`ip netns add`) only where `/run/netns` is mounted.
//!
//! This machine's podman needs a `containers.conf` a normal host does not
//! (`default_ulimits` within the sandbox's nofile limit, `runc` instead of
//! crun, which fails on setrlimit here): the test writes one and passes it
//! as `CONTAINERS_CONF`; `scripts/image` and what users run stay without it.
//!
//! Needs root (rootful podman, `--pid=host`), podman, runc, musl-gcc, the
//! rustup target x86_64-unknown-linux-musl, promtool, python3 and
//! `unshare`: marked `#[ignore]`, run by `./scripts/test`, which installs
//! them.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::http::http_get_once;
use common::metrics::{Metrics, check_promtool};
use common::prereq;
use common::process::{ok_stdout as ok, output_text as text};
use common::wait::wait_for;

const NODE_PORT: u16 = 19210;
const ALL_PORT: u16 = 19211;
const HOST_LISTENER_PORT: u16 = 19212;
const CHILD_LISTENER_PORT: u16 = 19213;
const MOUNTED_PORT: u16 = 19214;
const SOURCE: &str = "https://example.invalid/sockscope.git";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// podman with this sandbox's settings (see the module comment).
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        prereq::tool("podman");
        prereq::tool("runc");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             runtime = \"runc\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    fn cmd(&self) -> Command {
        let mut c = prereq::command("podman");
        c.env("CONTAINERS_CONF", self.conf());
        c
    }

    /// `scripts/image`; returns the image ID it printed last.
    fn build(&self) -> String {
        let out = ok(Command::new(root().join("scripts/image"))
            .env("CONTAINERS_CONF", self.conf())
            .env("SOCKSCOPE_IMAGE_SOURCE", SOURCE)
            .env("CARGO_BUILD_JOBS", "1"));
        let id = out.lines().last().unwrap_or_default().trim().to_owned();
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "scripts/image's last line is not an image ID: {out:?}"
        );
        id
    }

    fn inspect(&self, what: &str, id: &str) -> serde_json::Value {
        let out = ok(self.cmd().args([what, "inspect", id]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("podman inspect's JSON");
        v[0].clone()
    }
}

/// A detached container, removed on drop.
struct Container<'a> {
    podman: &'a Podman,
    id: String,
}

impl<'a> Container<'a> {
    fn run(podman: &'a Podman, args: &[&str]) -> Container<'a> {
        let out = ok(podman.cmd().args(["run", "--detach"]).args(args));
        Container {
            podman,
            id: out.trim().to_owned(),
        }
    }

    fn logs(&self) -> String {
        let o = self.podman.cmd().args(["logs", &self.id]).output().unwrap();
        text(&o)
    }

    /// The agent's PID on the host.
    fn pid(&self) -> u32 {
        let st = &self.podman.inspect("container", &self.id)["State"];
        assert_eq!(st["Running"], true, "not running:\n{}", self.logs());
        st["Pid"].as_u64().expect("State.Pid") as u32
    }

    /// Waits until `/healthz` answers 200 on `port`.
    fn wait_ready(&self, port: u16) {
        let addr = format!("127.0.0.1:{port}");
        wait_for(
            &format!("the container's /healthz on {addr}"),
            Duration::from_secs(30),
            || {
                let ex = http_get_once(&addr, "/healthz", Duration::from_secs(2));
                if ex.status == Some(200) {
                    return Ok(());
                }
                let st = &self.podman.inspect("container", &self.id)["State"];
                if st["Running"] != true {
                    panic!("the container exited:\n{}", self.logs());
                }
                Err(format!("{ex:?}"))
            },
        );
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd()
            .args(["rm", "--force", "--time", "2", &self.id])
            .output();
    }
}

fn scrape(port: u16) -> String {
    let ex = http_get_once(
        &format!("127.0.0.1:{port}"),
        "/metrics",
        Duration::from_secs(10),
    );
    assert_eq!(ex.status, Some(200), "{ex:?}");
    String::from_utf8(ex.body).expect("UTF-8 exposition")
}

/// The `name:\tvalue` lines of /proc/PID/status.
fn proc_status(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn cap_mask(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | 1 << c))
}

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Every path in the image (relative), through `podman image mount`.
fn image_files(podman: &Podman, id: &str) -> BTreeSet<String> {
    let mnt = ok(podman.cmd().args(["image", "mount", id]));
    let mnt = PathBuf::from(mnt.trim());
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.insert(format!("{rel} {:o}", md.mode() & 0o7777));
            }
        }
    }
    let mut files = BTreeSet::new();
    walk(&mnt, &mnt, &mut files);
    let _ = podman.cmd().args(["image", "unmount", id]).output();
    files
}

/// A network namespace of this test's own (`unshare -n`) holding a TCP
/// listener with backlog 11 on 127.0.0.1:19213; stopped on drop.
struct ChildNs {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    inode: u64,
}

impl ChildNs {
    fn start() -> ChildNs {
        let python = prereq::python_with(&["socket"]);
        let mut child = prereq::command("unshare")
            .args(["-n", "--"])
            .arg(python)
            .arg("-c")
            .arg(format!(
                "import os, socket, sys\n\
                 os.system('ip link set lo up')\n\
                 s = socket.socket()\n\
                 s.bind(('127.0.0.1', {CHILD_LISTENER_PORT}))\n\
                 s.listen(11)\n\
                 print('ready', flush=True)\n\
                 sys.stdin.read()\n"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning unshare -n python3");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the namespace's listener");
        // unshare execs python3: the child's PID is the namespace's holder.
        let inode = std::fs::metadata(format!("/proc/{}/ns/net", child.id()))
            .unwrap()
            .ino();
        ChildNs {
            child,
            _stdout: stdout,
            inode,
        }
    }
}

impl Drop for ChildNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root, podman, runc, musl-gcc and the musl target: ./scripts/test installs them"]
fn image_builds_reproducibly_and_runs_in_both_modes() {
    let podman = Podman::new();
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("localhost/sockscope:{version}");

    // --- Built twice from the same tree: the same image ID.
    let id = podman.build();
    let again = podman.build();
    assert_eq!(id, again, "two builds of the same tree differ");

    // --- Inspected.
    let img = podman.inspect("image", &tag);
    assert_eq!(img["Id"], id.as_str());
    let cfg = &img["Config"];
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/usr/bin/sockscope"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["agent"]));
    let labels = &cfg["Labels"];
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.source"], SOURCE);
    // HEAD's commit, or "unknown" in a source tree without git.
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(&head)),
        "revision label {} is not HEAD {head}",
        labels["org.opencontainers.image.revision"]
    );
    let size = img["Size"].as_u64().expect("Size");
    assert!(
        size < 16 << 20,
        "image is {size} bytes: more than the binary?"
    );
    // Every file it holds: the binary and the licence, nothing else (no
    // shell, no libc: the binary is static or it would not start below).
    let files = image_files(&podman, &id);
    let expected: BTreeSet<String> = [
        "usr/",
        "usr/bin/",
        "usr/bin/sockscope 555",
        "usr/share/",
        "usr/share/doc/",
        "usr/share/doc/sockscope/",
        "usr/share/doc/sockscope/LICENSE 444",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(files, expected, "the image's files");

    // --- Node mode, as deploy/kubernetes/daemonset.yaml and the chart run it.
    let host_listener = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    host_listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], HOST_LISTENER_PORT)).into())
        .unwrap();
    host_listener.listen(7).unwrap();
    let host_listener: TcpListener = host_listener.into();
    let node_listen = format!("--web.listen-address=127.0.0.1:{NODE_PORT}");
    let node = Container::run(
        &podman,
        &[
            "--network=host",
            "--read-only",
            "--cap-drop=ALL",
            &tag,
            "agent",
            &node_listen,
        ],
    );
    node.wait_ready(NODE_PORT);
    let pid = node.pid();
    assert_eq!(proc_status(pid, "Uid"), "65534\t65534\t65534\t65534");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(proc_status(pid, set), cap_mask(&[]), "{set}");
    }
    let listener = format!("127.0.0.1:{HOST_LISTENER_PORT}");
    let body = wait_for(
        "the host's listener in the node-mode agent's /metrics",
        Duration::from_secs(10),
        || {
            let body = scrape(NODE_PORT);
            let m = Metrics::parse(&body)?;
            match m.get(
                "sockscope_listen_queue_limit",
                &[("proto", "tcp"), ("listener", &listener)],
            ) {
                Some(7.0) => Ok(body),
                other => Err(format!("{listener} limit: {other:?}")),
            }
        },
    );
    check_promtool(&body);
    let m = Metrics::parse(&body).unwrap();
    assert_eq!(
        m.value("sockscope_build_info", &[("version", version)]),
        1.0
    );
    drop(node);
    drop(host_listener);

    // --- All-namespaces mode, as daemonset-netns-all.yaml and the chart's
    // netns=all run it.
    let ns = ChildNs::start();
    // A namespace with no process, known only by its /run/netns name.
    let named = IpNetns::add();
    let all_listen = format!("--web.listen-address=127.0.0.1:{ALL_PORT}");
    let all = Container::run(
        &podman,
        &[
            "--network=host",
            "--pid=host",
            "--user=0:0",
            "--read-only",
            "--cap-drop=ALL",
            "--cap-add=SYS_ADMIN,SYS_PTRACE",
            &tag,
            "agent",
            "--netns=all",
            &all_listen,
        ],
    );
    all.wait_ready(ALL_PORT);
    let pid = all.pid();
    assert_eq!(proc_status(pid, "Uid"), "0\t0\t0\t0");
    let two = cap_mask(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE]);
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(proc_status(pid, set), two, "{set}");
    }
    let netns = ns.inode.to_string();
    let child_listener = format!("127.0.0.1:{CHILD_LISTENER_PORT}");
    let body = wait_for(
        "the test's namespace in the all-namespaces agent's /metrics",
        Duration::from_secs(30),
        || {
            let body = scrape(ALL_PORT);
            let m = Metrics::parse(&body)?;
            let info = m.matching("sockscope_netns_info", &[("netns", &netns)]);
            let limit = m.get(
                "sockscope_listen_queue_limit",
                &[
                    ("netns", &netns),
                    ("proto", "tcp"),
                    ("listener", &child_listener),
                ],
            );
            match (info.len(), limit) {
                (1, Some(11.0)) => Ok(body),
                other => Err(format!("netns {netns}: info, limit {other:?}")),
            }
        },
    );
    check_promtool(&body);
    let m = Metrics::parse(&body).unwrap();
    let info = m.matching("sockscope_netns_info", &[("netns", &netns)]);
    assert_eq!(
        info[0].labels.get("pid").map(String::as_str),
        Some(ns.child.id().to_string().as_str()),
        "{:?}",
        info[0].labels
    );
    // Without /run/netns mounted, the namespace that holds no process is
    // not seen (the same scrape that saw the test's other namespace: the
    // discovery of one poll).
    let named_inode = named.inode.to_string();
    assert!(
        m.matching("sockscope_netns_info", &[("netns", &named_inode)])
            .is_empty(),
        "{} seen without /run/netns mounted",
        named.name
    );
    drop(all);

    // With it mounted (read-only, following the host's later mounts), it is,
    // by its name.
    let mounted_listen = format!("--web.listen-address=127.0.0.1:{MOUNTED_PORT}");
    let mounted = Container::run(
        &podman,
        &[
            "--network=host",
            "--pid=host",
            "--user=0:0",
            "--read-only",
            "--cap-drop=ALL",
            "--cap-add=SYS_ADMIN,SYS_PTRACE",
            "--volume=/run/netns:/run/netns:ro,rslave",
            &tag,
            "agent",
            "--netns=all",
            &mounted_listen,
        ],
    );
    mounted.wait_ready(MOUNTED_PORT);
    wait_for(
        "the /run/netns namespace in the agent's /metrics",
        Duration::from_secs(30),
        || {
            let m = Metrics::parse(&scrape(MOUNTED_PORT))?;
            let info = m.matching("sockscope_netns_info", &[("netns", &named_inode)]);
            match info.first().and_then(|s| s.labels.get("name")) {
                Some(n) if *n == named.name => Ok(()),
                other => Err(format!("{} ({named_inode}): {other:?}", named.name)),
            }
        },
    );
}

/// `ip netns add`: a namespace bound under /run/netns, no process in it;
/// deleted on drop.
struct IpNetns {
    name: String,
    inode: u64,
}

impl IpNetns {
    fn add() -> IpNetns {
        let name = format!("sockscope-image-test-{}", std::process::id());
        ok(prereq::command("ip").args(["netns", "add", &name]));
        let inode = std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino();
        IpNetns { name, inode }
    }
}

impl Drop for IpNetns {
    fn drop(&mut self) {
        let _ = prereq::command("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}
