//! The ground truth the agent is compared with: `ss` (TCP and UNIX rows,
//! listener queues, one ephemeral-port pool), `/proc/net/unix`,
//! `/proc/net/sockstat`, `/proc/net/netstat` and the sysctls, plus the
//! assertions that hold the agent's figures against them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::metrics::Metrics;
use super::netns::sysctl;
use super::process::run_ok;
use super::wait::wait_for;

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

/// The agent's `state` label(s) for an `ss` TCP state name (ss shows
/// request sockets as SYN-RECV, the kernel reports them as TCP_SYN_RECV).
pub fn ss_state_labels(ss: &str) -> &'static [&'static str] {
    match ss {
        "ESTAB" => &["established"],
        "SYN-SENT" => &["syn_sent"],
        "SYN-RECV" => &["syn_recv"],
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
pub const TCP_STATE_LABELS: [&str; 11] = [
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
/// state, and that no other state is exported.
pub fn assert_tcp_states(m: &Metrics, family: &str, ss_counts: &BTreeMap<String, u64>) {
    let mut expected: BTreeMap<&str, u64> = TCP_STATE_LABELS.iter().map(|s| (*s, 0)).collect();
    for (name, n) in ss_counts {
        *expected.get_mut(ss_state_labels(name)[0]).unwrap() += n;
    }
    assert_eq!(
        m.matching("sockscope_tcp_sockets", &[("family", family)])
            .len(),
        TCP_STATE_LABELS.len(),
        "one series per state, no other"
    );
    for st in TCP_STATE_LABELS {
        let got = m.value(
            "sockscope_tcp_sockets",
            &[("family", family), ("state", st)],
        ) as u64;
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
        ("sockscope_sysctl_somaxconn", num("net/core/somaxconn")),
        ("sockscope_sysctl_ip_local_port_range_first", range[0]),
        ("sockscope_sysctl_ip_local_port_range_last", range[1]),
        (
            "sockscope_sysctl_tcp_tw_reuse",
            num("net/ipv4/tcp_tw_reuse"),
        ),
        (
            "sockscope_sysctl_tcp_timestamps",
            num("net/ipv4/tcp_timestamps"),
        ),
        (
            "sockscope_sysctl_tcp_max_tw_buckets",
            num("net/ipv4/tcp_max_tw_buckets"),
        ),
    ];
    for (name, v) in want {
        assert_eq!(m.value(name, &[]), v, "{name}");
    }
    // net.ipv4.tcp_tw_reuse_delay exists since 6.14: before, the gauge
    // is absent (not 1 s, not 0).
    let delay = "sockscope_sysctl_tcp_tw_reuse_delay_seconds";
    if std::path::Path::new("/proc/sys/net/ipv4/tcp_tw_reuse_delay").exists() {
        let want = num("net/ipv4/tcp_tw_reuse_delay") / 1000.0;
        assert_eq!(m.get(delay, &[]), Some(want), "{delay}");
    } else {
        assert_eq!(m.get(delay, &[]), None, "{delay} without the sysctl");
    }
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
