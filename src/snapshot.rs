//! `sockscope snapshot`: one poll printed as tables that fit an 80-column
//! terminal, for humans in an incident (`--json` for scripts).

use std::fmt::Write;

use crate::collector::Sample;
use crate::model::{Family, TcpState, UnixState, UnixType};

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
    for st in TcpState::ALL {
        let count = |f| sample.tcp.family(f).map_or(0, |c| c[st.index()]);
        let (v4, v6) = (count(Family::Ipv4), count(Family::Ipv6));
        if v4 + v6 > 0
            || matches!(
                st,
                TcpState::Established | TcpState::TimeWait | TcpState::Listen
            )
        {
            let _ = writeln!(o, "  {:<25} {:>10} {:>10}", st.label(), v4, v6);
        }
    }

    let _ = writeln!(
        o,
        "\n{:<27} {:>10} {:>10} {:>10}",
        "UNIX sockets", "stream", "dgram", "seqpacket"
    );
    for st in UnixState::ALL {
        let v: Vec<u64> = UnixType::ALL
            .iter()
            .map(|&t| sample.unix.as_ref().map_or(0, |u| u.get(t, st)))
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
            let reuse = sample.sysctls.as_ref().map_or(0, |s| s.tcp_tw_reuse);
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

    let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
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
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_tail() {
        assert_eq!(fit("/run/app.sock", 36), "/run/app.sock");
        let long = "/var/lib/some/very/long/path/to/the/application/socket.sock";
        let f = fit(long, 20);
        assert_eq!(f.chars().count(), 20);
        assert!(f.ends_with("socket.sock"));
    }
}
