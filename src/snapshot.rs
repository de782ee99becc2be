//! `sockscope snapshot`: one poll printed as tables that fit an 80-column
//! terminal, for humans in an incident (`--json` for scripts: [`Json`],
//! its schema in the README). A figure whose source could not be read is
//! `-` (JSON `null`) and named by [`unread`], never shown as 0.

use std::fmt::Write;

use crate::collector::Sample;
use crate::collector::netns::{NetnsInfo, NetnsStats};
use crate::model::{Family, TcpState, UnixState, UnixType};
use crate::namespaces::NamespaceSample;

/// The figures of `sample` that could not be read, even after the
/// fallback, by their JSON names: `tcp.ipv4`, `tcp.ipv6`, `unix`,
/// `sysctls`, `netstat`, `sockstat`. A procfs fallback that worked, or a
/// missing `/proc/net/tcp6` (IPv6 disabled: no IPv6 socket), is read.
pub fn unread(sample: &Sample) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (f, name) in [(Family::Ipv4, "tcp.ipv4"), (Family::Ipv6, "tcp.ipv6")] {
        if sample.tcp.family(f).is_none() {
            out.push(name);
        }
    }
    if sample.unix.is_none() {
        out.push("unix");
    }
    if sample.sysctls.is_none() {
        out.push("sysctls");
    }
    if sample.netstat.is_none() {
        out.push("netstat");
    }
    if sample.sockstat.is_none() {
        out.push("sockstat");
    }
    out
}

/// `snapshot --json` of one namespace: the sample and what could not be
/// read.
#[derive(serde::Serialize)]
pub struct Json<'a> {
    /// What the namespace is (`--netns all` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<&'a NetnsInfo>,
    #[serde(flatten)]
    pub sample: &'a Sample,
    /// [`unread`].
    pub unread: Vec<&'static str>,
}

impl<'a> Json<'a> {
    /// The document of one namespace's sample.
    pub fn new(ns: &'a NamespaceSample) -> Json<'a> {
        Json {
            netns: ns.netns.as_ref(),
            sample: &ns.sample,
            unread: unread(&ns.sample),
        }
    }
}

/// `snapshot --netns all --json`: every namespace's document and the
/// discovery figures.
#[derive(serde::Serialize)]
pub struct JsonAll<'a> {
    pub namespaces: Vec<Json<'a>>,
    pub discovery: &'a NetnsStats,
}

/// Renders every namespace of `snapshot --netns all`: the discovery
/// figures, then a section per namespace (a header line saying what it
/// is, then [`render`]'s tables).
pub fn render_all(namespaces: &[NamespaceSample], stats: &NetnsStats, timing: bool) -> String {
    let mut o = String::new();
    let errors: u64 = stats.errors_total.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        o,
        "Network namespaces: {} found, {} shown, {} over the limit, {} failed reads",
        stats.discovered,
        namespaces.len(),
        stats.over_limit,
        errors
    );
    for ns in namespaces {
        let _ = writeln!(o, "\n{}", "=".repeat(80));
        if let Some(info) = &ns.netns {
            let h = header(info);
            // Keep the start (the inode); cut the end.
            let h = if h.chars().count() > 80 {
                h.chars().take(79).chain(['…']).collect()
            } else {
                h
            };
            let _ = writeln!(o, "{h}");
        }
        let _ = writeln!(o, "{}\n", "=".repeat(80));
        o.push_str(&render(&ns.sample, timing));
    }
    o
}

/// One line saying what a namespace is.
fn header(info: &NetnsInfo) -> String {
    let mut h = format!("netns {}", info.inode);
    if info.agent {
        h.push_str(" (the agent's own)");
    }
    for (k, v) in [
        ("name", info.name.as_str()),
        ("hostname", info.hostname.as_str()),
        ("pod_uid", info.pod_uid.as_str()),
        ("comm", info.comm.as_str()),
    ] {
        if !v.is_empty() {
            let _ = write!(h, " {k}={v}");
        }
    }
    if let Some(pid) = info.pid {
        let _ = write!(h, " pid={pid}");
    }
    h
}

/// Shortens `s` to `width` characters, keeping its end (the distinctive part
/// of a path or an address) behind a leading `…`.
fn fit(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_owned();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

fn percent(r: f64) -> String {
    format!("{:.0}%", r * 100.0)
}

/// Renders the sample as text tables, each line at most 80 columns.
pub fn render(sample: &Sample, timing: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<27} {:>10} {:>10}", "TCP sockets", "ipv4", "ipv6");
    let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for st in TcpState::ALL {
        let count = |f| sample.tcp.family(f).map(|c| c[st.index()]);
        let (v4, v6) = (count(Family::Ipv4), count(Family::Ipv6));
        if v4.unwrap_or(0) + v6.unwrap_or(0) > 0
            || matches!(
                st,
                TcpState::Established | TcpState::TimeWait | TcpState::Listen
            )
        {
            let _ = writeln!(o, "  {:<25} {:>10} {:>10}", st.label(), show(v4), show(v6));
        }
    }

    let _ = writeln!(
        o,
        "\n{:<27} {:>10} {:>10} {:>10}",
        "UNIX sockets", "stream", "dgram", "seqpacket"
    );
    for st in UnixState::ALL {
        let v: Vec<String> = UnixType::ALL
            .iter()
            .map(|&t| show(sample.unix.as_ref().map(|u| u.get(t, st))))
            .collect();
        let _ = writeln!(
            o,
            "  {:<25} {:>10} {:>10} {:>10}",
            st.label(),
            v[0],
            v[1],
            v[2]
        );
    }

    let _ = writeln!(o, "\nListeners, fullest first (Q = queued, A = accepted)");
    let _ = writeln!(
        o,
        "  {:<5} {:<36} {:>7} {:>7} {:>6} {:>8}",
        "PROTO", "LISTENER", "Q", "LIMIT", "FILL", "A"
    );
    for l in &sample.listeners {
        let l = &l.listener;
        let (limit, fill) = match (l.limit, l.fill()) {
            (Some(lim), Some(f)) => (lim.to_string(), percent(f)),
            _ => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            o,
            "  {:<5} {:<36} {:>7} {:>7} {:>6} {:>8}",
            l.proto.label(),
            fit(&l.listener.to_string(), 36),
            l.length,
            limit,
            fill,
            l.connected
        );
    }

    match &sample.ephemeral {
        Some(e) => {
            let reuse = sample
                .sysctls
                .as_ref()
                .map_or("-".to_owned(), |s| s.tcp_tw_reuse.to_string());
            let _ = writeln!(
                o,
                "\nEphemeral ports {}-{}: limit {}, {} listening in range, tcp_tw_reuse {}",
                e.range.0, e.range.1, e.limit, e.listening_in_range, reuse
            );
            let _ = writeln!(
                o,
                "  {:<15} {:<21} {:>6} {:>9} {:>5} {:>6} {:>5}",
                "LOCAL IP", "DESTINATION", "ESTAB", "TIME_WAIT", "OTHER", "AVAIL", "USED"
            );
            for p in &e.pools {
                let _ = writeln!(
                    o,
                    "  {:<15} {:<21} {:>6} {:>9} {:>5} {:>6} {:>5}",
                    fit(&p.local_ip, 15),
                    fit(&p.destination, 21),
                    p.counts.established,
                    p.counts.time_wait,
                    p.counts.other,
                    p.available,
                    percent(p.usage_ratio)
                );
            }
            let _ = writeln!(
                o,
                "  {} pools; worst usage {}",
                e.pools_total,
                percent(e.usage_ratio_max)
            );
        }
        None => {
            let _ = writeln!(
                o,
                "\nEphemeral ports: unknown (sysctls or TCP sockets unreadable)"
            );
        }
    }

    let netstat = sample.netstat.unwrap_or_default();
    let _ = writeln!(
        o,
        "\nListenOverflows {}  ListenDrops {}  sockstat tw {}",
        show(netstat.listen_overflows),
        show(netstat.listen_drops),
        show(sample.sockstat.and_then(|s| s.tcp_tw))
    );

    let down: Vec<&str> = sample
        .sources
        .iter()
        .filter(|s| !s.up)
        .map(|s| s.source.label())
        .collect();
    if !down.is_empty() {
        let _ = writeln!(o, "Sources down: {}", down.join(", "));
    }
    let unread = unread(sample);
    if !unread.is_empty() {
        let _ = writeln!(o, "Not read (shown as -): {}", unread.join(", "));
    }
    if timing {
        let _ = writeln!(o, "\nPoll timing");
        let mut total = 0.0;
        for s in &sample.sources {
            total += s.duration_seconds;
            let _ = writeln!(
                o,
                "  {:<20} {:>10.3} ms",
                s.source,
                s.duration_seconds * 1e3
            );
        }
        let _ = writeln!(o, "  {:<20} {:>10.3} ms", "total", total * 1e3);
    }
    o
}

#[cfg(test)]
#[path = "snapshot/tests.rs"]
mod tests;
