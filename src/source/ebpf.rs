//! Connect outcomes and TIME_WAIT entries from eBPF: load, attach, read.
//!
//! # What is counted, where
//! One program, `connects.bpf.c` (beside this file), attached as
//! `tp_btf/inet_sock_set_state`: the BTF-typed raw tracepoint behind
//! `sock:inet_sock_set_state`, which `tcp_set_state()` fires on every TCP
//! state change with `(const struct sock *sk, int oldstate, int newstate)`.
//! It classifies the transitions that end a connect (SYN_SENT →
//! ESTABLISHED or → CLOSE) and the entries into TIME_WAIT (FIN_WAIT2 or
//! CLOSING → CLOSE) and adds one to a row of the hash map `flows`, keyed by
//! network namespace, local address, destination and [`Outcome`]. Nothing
//! wakes user space per event: [`ConnectEvents::read`] walks the map when
//! the agent polls, so the cost is the program's run time (75–87 ns per
//! state change measured on 6.18 with `BPF_ENABLE_STATS`; a loopback
//! connect + close makes 10 state changes) plus one map walk per poll. The map is bounded
//! ([`LoadOptions::max_entries`]); a plain hash, not LRU, so a row, once
//! there, only grows, and an event that finds the map full is counted in
//! [`EbpfStats::lost_total`] instead of evicting another row.
//!
//! # Why C with CO-RE, clang at build time, and aya
//! - CO-RE (compile once, run everywhere): the program's struct accesses are
//!   recorded as relocations by field name (`preserve_access_index` on every
//!   type of the committed minimal `vmlinux.h`) and rewritten against the
//!   running kernel's BTF (`/sys/kernel/btf/vmlinux`) at load time, so one
//!   object runs on 5.10 … 6.18 whatever the layout of `struct sock`.
//! - C, because Rust-written programs (aya-ebpf) get no CO-RE relocations
//!   (aya-rs/aya#349), and bpf-linker needs an LLVM newer than Debian 12's.
//!   Debian's clang 14 and libbpf-dev headers compile it in `build.rs`; the
//!   object (~11 KB after `llvm-strip -g`, which keeps `.BTF`/`.BTF.ext`) is
//!   embedded in the binary, so nothing is read from disk at run time.
//! - aya (pure Rust; no libbpf.so, no bpftool at run time) loads it. 0.14.0 is
//!   the newest aya that builds with the toolchain this project pins.
//! - `tp_btf` rather than a classic tracepoint (needs tracefs, often not
//!   mounted), fentry or kprobes (refused or absent on some hosts, e.g.
//!   Firecracker VMs): it needs only BTF, kernel ≥ 5.5.
//!
//! # Requirements
//! Kernel ≥ 5.5 built with `CONFIG_DEBUG_INFO_BTF` (Debian's 5.10+ are),
//! `CAP_BPF` + `CAP_PERFMON` (`CAP_SYS_ADMIN` before 5.8), and before 5.11
//! an `RLIMIT_MEMLOCK` large enough for the maps (raised here when
//! `CAP_SYS_RESOURCE` allows). [`LoadOptions::kernel_stats`] needs
//! `CAP_SYS_ADMIN` too (`BPF_ENABLE_STATS`).

// Wired into the agent separately; until then only the tests use it.

mod decode;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{Btf, Ebpf, EbpfLoader};

use decode::KEY_LEN;

/// The object `build.rs` compiled from `connects.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/connects.bpf.o"));

/// The program's name (its C function) and the tracepoint it attaches to.
const PROGRAM: &str = "inet_sock_set_state";
const TRACEPOINT: &str = "inet_sock_set_state";
/// Map and global names in `connects.bpf.c`.
const FLOWS: &str = "flows";
const STATS: &str = "stats";
const NETNS_FILTER: &str = "netns_filter";
/// Slots of `stats`.
const STAT_EVENTS: u32 = 0;
const STAT_LOST: u32 = 1;

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;

/// How to load the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadOptions {
    /// `None`: count every network namespace on the host. `Some(inum)`: only
    /// sockets whose `sock_net(sk)->ns.inum` is `inum` (the inode number of
    /// `/proc/<pid>/ns/net`), filtered in the kernel.
    pub netns: Option<u32>,
    /// Rows the `flows` map can hold (one per netns × local address ×
    /// destination × outcome). The kernel preallocates them at load: about
    /// 120 bytes each (16384 → 1.97 MB, bpftool's memlock figure on 6.18).
    /// At least 1.
    pub max_entries: u32,
    /// Turn on the kernel's `BPF_ENABLE_STATS` (host-wide, for as long as
    /// this [`ConnectEvents`] lives) to report the program's run time.
    pub kernel_stats: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            netns: None,
            max_entries: 16384,
            kernel_stats: false,
        }
    }
}

/// The loaded and attached program with its maps. Dropping it detaches the
/// program and frees the maps (and turns `BPF_ENABLE_STATS` off again).
pub(crate) struct ConnectEvents {
    /// Owns the program (and its link: attached until dropped) and maps.
    ebpf: Ebpf,
    /// `BPF_ENABLE_STATS` stays on while this descriptor is open.
    stats_fd: Option<OwnedFd>,
    max_entries: u32,
}

/// One [`ConnectEvents::read`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventsRead {
    /// Every row of `flows`, sorted by [`Flow`]: events counted since load
    /// (counters: they only grow, until [`ConnectEvents::forget`] removes
    /// the row).
    pub flows: Vec<(Flow, u64)>,
    pub stats: EbpfStats,
}

/// One row of `flows`: a connect outcome (or TIME_WAIT entry) of sockets
/// in one network namespace toward one destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Flow {
    /// `sock_net(sk)->ns.inum`: inode number of the socket's network namespace.
    pub netns: u32,
    /// The socket's local address (`skc_rcv_saddr` / `skc_v6_rcv_saddr`);
    /// unspecified (`0.0.0.0`) when connect() failed before a route chose it.
    pub local_ip: IpAddr,
    /// The remote address and port (`skc_daddr`/`skc_v6_daddr`, `skc_dport`).
    pub destination: SocketAddr,
    pub outcome: Outcome,
}

/// How a connect ended, or a TIME_WAIT entry. The kernel paths behind each
/// are documented at `classify()` in `connects.bpf.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// SYN_SENT → ESTABLISHED (`tcp_finish_connect()`: the SYN-ACK came).
    Established,
    /// SYN_SENT → CLOSE with no error while the socket was `SS_CONNECTING`:
    /// the application closed it (or `connect(AF_UNSPEC)`) before an answer.
    Aborted,
    /// FIN_WAIT2 or CLOSING → CLOSE without error: `tcp_time_wait()` replaced
    /// the socket with a timewait socket. Over-counts a little: when
    /// `tcp_max_tw_buckets` overflows (TcpExt `TCPTimeWaitOverflow`), for an
    /// orphaned FIN_WAIT2 that times out without the peer's FIN, and for the
    /// FIN_WAIT2 keepalive-timer reset and `TCP_LINGER2 < 0` paths.
    TimeWait,
    /// connect() failed with EADDRNOTAVAIL. `bound: false`: SYN_SENT → CLOSE
    /// with source port 0, no free ephemeral port (`inet_hash_connect()` in
    /// `tcp_v4_connect()`/`tcp_v6_connect()`). `bound: true`: the port was
    /// already set, so the failure was synchronous after an explicit
    /// `bind()` whose 4-tuple toward this destination is taken, or (rare,
    /// indistinguishable) `ip_route_newports()`/`tcp_connect()` failing.
    AddrNotAvail { bound: bool },
    /// SYN_SENT → CLOSE with `sk_err` set: the errno the connect ended with
    /// (111 ECONNREFUSED on RST, 110 ETIMEDOUT after the SYN retries, 113
    /// EHOSTUNREACH / 101 ENETUNREACH from ICMP, …). Never 99.
    Errno(i32),
}

impl Outcome {
    /// The `result` label value: "established", "aborted", "eaddrnotavail"
    /// (both kinds), or the errno's name in lower case ("econnrefused",
    /// "etimedout", "ehostunreach", "enetunreach", …; an errno outside the
    /// table of those a connect can end with is "errno_<n>"). `None` for
    /// [`Outcome::TimeWait`], which is not a connect result.
    pub(crate) fn result_label(&self) -> Option<Cow<'static, str>> {
        Some(match self {
            Outcome::Established => Cow::Borrowed("established"),
            Outcome::Aborted => Cow::Borrowed("aborted"),
            Outcome::AddrNotAvail { .. } => Cow::Borrowed("eaddrnotavail"),
            Outcome::Errno(n) => match decode::errno_name(*n) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(format!("errno_{n}")),
            },
            Outcome::TimeWait => return None,
        })
    }
}

/// The source's health, read with the flows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EbpfStats {
    /// Programs loaded and attached (1).
    pub programs: u32,
    /// Rows in `flows` now (the number of rows this read returned).
    pub map_entries: u64,
    /// `flows`' capacity ([`LoadOptions::max_entries`]).
    pub map_max_entries: u32,
    /// Events counted into `flows` since load: the per-CPU `stats` slot 0
    /// summed over CPUs. Ignored transitions are not events.
    pub events_total: u64,
    /// Events dropped because `flows` was full (`stats` slot 1, summed).
    /// Not included in `events_total`.
    pub lost_total: u64,
    /// Some only with [`LoadOptions::kernel_stats`] (`BPF_ENABLE_STATS`,
    /// needs `CAP_SYS_ADMIN`, host-wide): the program's cumulative run time
    /// (`bpf_prog_info.run_time_ns`, in seconds) since stats were enabled.
    pub run_time_seconds: Option<f64>,
    /// Likewise: its runs (`bpf_prog_info.run_cnt`), i.e. every
    /// `inet_sock_set_state` on the host, counted or ignored.
    pub run_count: Option<u64>,
}

/// Why loading or reading failed; each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EbpfError {
    /// The kernel lacks what is needed (no `/sys/kernel/btf/vmlinux`, no
    /// `tp_btf`, older than 5.5).
    #[error("eBPF connect events unsupported: {0}")]
    Unsupported(String),
    /// EPERM/EACCES: missing `CAP_BPF` + `CAP_PERFMON` (`CAP_SYS_ADMIN` before 5.8).
    #[error("eBPF connect events not permitted: {0}")]
    Permission(String),
    /// Map creation failed with EPERM on a kernel < 5.11, where maps are
    /// charged to `RLIMIT_MEMLOCK`, and the limit could not be raised.
    #[error("eBPF connect events: RLIMIT_MEMLOCK too low: {0}")]
    Memlock(String),
    #[error("eBPF connect events: {0}")]
    Other(String),
}

impl ConnectEvents {
    /// Loads and attaches. Errors say why in one line a user can act on.
    ///
    /// Raises `RLIMIT_MEMLOCK` to infinity first (best effort: needed only
    /// before 5.11; failure is ignored unless map creation then fails).
    pub(crate) fn load(opts: &LoadOptions) -> Result<ConnectEvents, EbpfError> {
        if opts.max_entries == 0 {
            return Err(EbpfError::Other("max_entries must be at least 1".into()));
        }
        let kernel = kernel_release();
        if let Some(v) = kernel
            && v < (5, 5)
        {
            return Err(EbpfError::Unsupported(format!(
                "kernel {}.{} is older than 5.5 (tp_btf programs)",
                v.0, v.1
            )));
        }
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(EbpfError::Unsupported(
                "no /sys/kernel/btf/vmlinux (kernel built without CONFIG_DEBUG_INFO_BTF)".into(),
            ));
        }
        // Before parsing the kernel's BTF (5 MB here, a 50 MB peak): a
        // process that cannot load tracing programs is told so at once.
        if !bpf_capable() {
            return Err(EbpfError::Permission(
                "needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before kernel 5.8); the \
                 process's effective capabilities (/proc/self/status CapEff) have neither \
                 CAP_BPF nor CAP_SYS_ADMIN"
                    .into(),
            ));
        }
        let memlock_raised = raise_memlock();
        let btf = Btf::from_sys_fs().map_err(|e| {
            EbpfError::Unsupported(format!("reading /sys/kernel/btf/vmlinux: {}", chain(&e)))
        })?;

        let netns_filter: u32 = opts.netns.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(NETNS_FILTER, &netns_filter, true)
            .map_max_entries(FLOWS, opts.max_entries)
            .load(OBJECT)
            .map_err(|e| {
                // EPERM from map creation before 5.11 is the memlock charge
                // when the process has the capabilities but a low limit.
                let is_map = matches!(e, aya::EbpfError::MapError(_));
                let suspect = is_map && !memlock_raised && bpf_capable();
                classify(&e, "creating the maps", kernel, suspect)
            })?;

        let program: &mut BtfTracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| EbpfError::Other(format!("program {PROGRAM} missing from the object")))?
            .try_into()
            .map_err(|e: ProgramError| EbpfError::Other(chain(&e)))?;
        program.load(TRACEPOINT, &btf).map_err(|e| {
            if let ProgramError::Btf(_) = e {
                return EbpfError::Unsupported(format!(
                    "no BTF for tracepoint {TRACEPOINT}: {}",
                    chain(&e)
                ));
            }
            classify(&e, "loading tp_btf/inet_sock_set_state", kernel, false)
        })?;
        program
            .attach()
            .map_err(|e| classify(&e, "attaching tp_btf/inet_sock_set_state", kernel, false))?;

        let stats_fd = if opts.kernel_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(
                        "eBPF run-time statistics off: BPF_ENABLE_STATS failed ({}; needs \
                         CAP_SYS_ADMIN and kernel 5.8)",
                        chain(&e)
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(ConnectEvents {
            ebpf,
            stats_fd,
            max_entries: opts.max_entries,
        })
    }

    /// Every row of `flows` (cumulative counts since load) and the source's
    /// health. Costs two `bpf()` calls per row (next key, lookup).
    pub(crate) fn read(&mut self) -> Result<EventsRead, EbpfError> {
        let map = self.ebpf.map(FLOWS).ok_or_else(|| missing(FLOWS))?;
        let flows_map: HashMap<&MapData, [u8; KEY_LEN], u64> =
            HashMap::try_from(map).map_err(|e| other("flows", &e))?;
        let mut flows = Vec::new();
        for row in flows_map.iter() {
            let (key, count) = row.map_err(|e| other("reading flows", &e))?;
            let flow = decode::flow(&key)
                .map_err(|e| EbpfError::Other(format!("decoding a flows key: {e}")))?;
            flows.push((flow, count));
        }
        flows.sort_unstable();

        let map = self.ebpf.map(STATS).ok_or_else(|| missing(STATS))?;
        let stats_map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| other("stats", &e))?;
        let slot = |i: u32| -> Result<u64, EbpfError> {
            let values = stats_map
                .get(&i, 0)
                .map_err(|e| other("reading stats", &e))?;
            Ok(values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
        };
        let events_total = slot(STAT_EVENTS)?;
        let lost_total = slot(STAT_LOST)?;

        let (run_time_seconds, run_count) = match &self.stats_fd {
            Some(_) => {
                let program = self.ebpf.program(PROGRAM).ok_or_else(|| missing(PROGRAM))?;
                let info = program.info().map_err(|e| other("program info", &e))?;
                (Some(info.run_time().as_secs_f64()), Some(info.run_count()))
            }
            None => (None, None),
        };
        Ok(EventsRead {
            stats: EbpfStats {
                programs: 1,
                map_entries: flows.len() as u64,
                map_max_entries: self.max_entries,
                events_total,
                lost_total,
                run_time_seconds,
                run_count,
            },
            flows,
        })
    }

    /// Deletes the rows of namespaces for which `keep(netns)` is false
    /// (namespaces that went away), returns how many.
    pub(crate) fn forget(&mut self, keep: impl Fn(u32) -> bool) -> Result<usize, EbpfError> {
        let map = self.ebpf.map_mut(FLOWS).ok_or_else(|| missing(FLOWS))?;
        let mut flows_map: HashMap<&mut MapData, [u8; KEY_LEN], u64> =
            HashMap::try_from(map).map_err(|e| other("flows", &e))?;
        // Collect first: deleting while walking restarts the kernel's walk.
        let mut doomed = Vec::new();
        for key in flows_map.keys() {
            let key = key.map_err(|e| other("reading flows keys", &e))?;
            if !keep(decode::netns(&key)) {
                doomed.push(key);
            }
        }
        let mut removed = 0;
        for key in &doomed {
            match flows_map.remove(key) {
                Ok(()) => removed += 1,
                // Gone already (no one else deletes; kept for safety).
                Err(e) if errno_in_chain(&e) == Some(ENOENT) => {}
                Err(e) => return Err(other("deleting from flows", &e)),
            }
        }
        Ok(removed)
    }
}

fn missing(name: &str) -> EbpfError {
    EbpfError::Other(format!("{name} missing from the eBPF object"))
}

fn other(what: &str, e: &(dyn std::error::Error + 'static)) -> EbpfError {
    EbpfError::Other(format!("{what}: {}", chain(e)))
}

/// `e` and its sources joined with ": ", on one line, at most 400 chars
/// (aya's load errors carry the whole verifier log).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    let mut s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The first `std::io::Error` OS errno in `e`'s source chain.
fn errno_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        cur = c.source();
    }
    None
}

/// Sorts an aya error into [`EbpfError`] by the errno inside it.
/// `memlock_suspect`: map creation failed, `RLIMIT_MEMLOCK` could not be
/// raised, and the process has the capabilities (so EPERM before 5.11 is
/// the memlock charge, not a missing capability).
fn classify(
    e: &(dyn std::error::Error + 'static),
    what: &str,
    kernel: Option<(u32, u32)>,
    memlock_suspect: bool,
) -> EbpfError {
    let detail = chain(e);
    match errno_in_chain(e) {
        Some(EPERM) if memlock_suspect && kernel.is_some_and(|v| v < (5, 11)) => {
            EbpfError::Memlock(format!(
                "{what}: EPERM on kernel < 5.11, which charges eBPF maps to \
                 RLIMIT_MEMLOCK; grant CAP_SYS_RESOURCE or set LimitMEMLOCK=infinity \
                 (systemd) ({detail})"
            ))
        }
        Some(EPERM | EACCES) => EbpfError::Permission(format!(
            "{what}: needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before kernel 5.8) ({detail})"
        )),
        _ => EbpfError::Other(format!("{what}: {detail}")),
    }
}

/// Whether the effective capabilities include CAP_SYS_ADMIN (21) or CAP_BPF
/// (39), from `/proc/self/status`.
fn bpf_capable() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21 | 1 << 39) != 0)
}

/// Best effort: `RLIMIT_MEMLOCK` to infinity. True when it is infinite now.
fn raise_memlock() -> bool {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let infinite = Rlimit {
        current: None,
        maximum: None,
    };
    if setrlimit(Resource::Memlock, infinite).is_ok() {
        return true;
    }
    getrlimit(Resource::Memlock).current.is_none()
}

/// The running kernel's (major, minor), from `uname -r`.
fn kernel_release() -> Option<(u32, u32)> {
    let uname = rustix::system::uname();
    parse_release(&uname.release().to_string_lossy())
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
