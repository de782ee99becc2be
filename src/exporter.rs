//! Metric families built from the latest [`Sample`], and the axum server
//! that serves them in the Prometheus text format 0.0.4.
//!
//! A custom `prometheus::core::Collector` turns the sample into fresh
//! families on every scrape; nothing is cached between scrapes except the
//! sample itself, which the background poller replaces.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use tokio::sync::watch;

use crate::collector::Sample;
use crate::collector::nginx::{ScrapeError, TargetSample};
use crate::model::{Family, TcpState, UnixState, UnixType};

/// One metric family of the contract: name, help, type and label names.
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub labels: &'static [&'static str],
}

const G: MetricType = MetricType::GAUGE;
const C: MetricType = MetricType::COUNTER;

macro_rules! specs {
    ($($id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal;)*) => {
        $(pub const $id: Spec = Spec { name: $name, help: $help, kind: $kind, labels: &[$($l),*] };)*
        /// Every family, in exposition order.
        pub const ALL: &[&Spec] = &[$(&$id),*];
    };
}

/// The metric contract. Sampled figures say so: they are the poller's
/// latest sample, not read at scrape time.
pub mod specs {
    use super::*;
    specs! {
        TCP_SOCKETS = "sockscope_tcp_sockets", G, ["family", "state"],
            "TCP sockets per address family and state (inet_diag or /proc/net/tcp{,6}), as of the latest census.";
        UNIX_SOCKETS = "sockscope_unix_sockets", G, ["sock_type", "state"],
            "UNIX sockets per type and SS_* state of /proc/net/unix; connecting = embryos waiting for accept(), as of the latest census.";
        LISTEN_QUEUE_LENGTH = "sockscope_listen_queue_length", G, ["proto", "listener"],
            "Current accept-queue depth per listener (sk_ack_backlog; UNIX_DIAG_RQLEN), as of the latest poll.";
        LISTEN_QUEUE_LIMIT = "sockscope_listen_queue_limit", G, ["proto", "listener"],
            "Accept-queue limit per listener, min(backlog, somaxconn) (sk_max_ack_backlog); absent when the source does not report it (procfs).";
        LISTEN_QUEUE_FULL = "sockscope_listen_queue_full_seconds_total", C, ["proto", "listener"],
            "Seconds the listener's accept queue was sampled at or over its limit.";
        LISTEN_CONNECTIONS = "sockscope_listen_connections", G, ["proto", "listener", "state"],
            "Connections per listener: connecting = queued, not yet accepted (Q), as of the latest poll; connected = accepted and still open (A), as of the latest census.";
        LISTEN_SOCKETS = "sockscope_listen_sockets", G, ["proto", "listener"],
            "Listening sockets behind each listener label (more than 1 for an SO_REUSEPORT group, summed), as of the latest poll.";
        SOMAXCONN = "sockscope_somaxconn", G, [],
            "net.core.somaxconn: the cap on every listen() backlog.";
        LISTEN_OVERFLOWS = "sockscope_tcp_listen_overflows_total", C, [],
            "TcpExt ListenOverflows from /proc/net/netstat: connections dropped because an accept queue was full.";
        LISTEN_DROPS = "sockscope_tcp_listen_drops_total", C, [],
            "TcpExt ListenDrops from /proc/net/netstat: connections dropped at a listener for any reason.";
        EPHEMERAL_USED = "sockscope_ephemeral_ports_used", G, ["source", "destination", "state"],
            "Outbound TCP sockets (local port in ip_local_port_range, not a listening port) per source IP and destination pool, as of the latest census.";
        EPHEMERAL_REUSABLE = "sockscope_ephemeral_ports_time_wait_reusable", G, ["source", "destination"],
            "TIME_WAIT sockets of the pool that connect() may take over now (tcp_tw_reuse model), as of the latest census.";
        EPHEMERAL_LIMIT = "sockscope_ephemeral_ports_limit", G, [],
            "Ports connect() can pick: ip_local_port_range size (even, as __inet_hash_connect walks it) minus ip_local_reserved_ports.";
        EPHEMERAL_AVAILABLE = "sockscope_ephemeral_ports_available", G, ["source", "destination"],
            "Ports connect() can still take toward the destination, after listening ports, live sockets and non-reusable TIME_WAIT; for destination=\"other\" the least among the pools it aggregates. As of the latest census.";
        EPHEMERAL_RATIO = "sockscope_ephemeral_ports_usage_ratio_max", G, [],
            "Worst pool's (limit - available) / limit; 0 without outbound sockets. As of the latest census.";
        EPHEMERAL_POOLS = "sockscope_ephemeral_ports_pools", G, [],
            "Distinct (source IP, destination) pools before the --ephemeral.top-destinations cap, as of the latest census.";
        PORT_RANGE_FIRST = "sockscope_sysctl_ip_local_port_range_first", G, [],
            "net.ipv4.ip_local_port_range: first port.";
        PORT_RANGE_LAST = "sockscope_sysctl_ip_local_port_range_last", G, [],
            "net.ipv4.ip_local_port_range: last port.";
        TW_REUSE = "sockscope_sysctl_tcp_tw_reuse", G, [],
            "net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only.";
        TW_REUSE_DELAY = "sockscope_sysctl_tcp_tw_reuse_delay_seconds", G, [],
            "net.ipv4.tcp_tw_reuse_delay (kernel >= 6.13; 1 s before): age after which a TIME_WAIT socket may be reused.";
        TCP_TIMESTAMPS = "sockscope_sysctl_tcp_timestamps", G, [],
            "net.ipv4.tcp_timestamps: TIME_WAIT reuse needs TCP timestamps.";
        MAX_TW_BUCKETS = "sockscope_tcp_max_tw_buckets", G, [],
            "net.ipv4.tcp_max_tw_buckets: TIME_WAIT sockets beyond this are not created.";
        SOCKSTAT_TW = "sockscope_sockstat_tcp_tw", G, [],
            "TIME_WAIT sockets in the namespace per /proc/net/sockstat (cross-check of sockscope_tcp_sockets{state=\"time_wait\"}).";
        SOCKSTAT_INUSE = "sockscope_sockstat_tcp_inuse", G, [],
            "TCP sockets in use per /proc/net/sockstat.";
        SOCKSTAT_ORPHAN = "sockscope_sockstat_tcp_orphan", G, [],
            "Orphaned TCP sockets (closed by the application, still in the kernel) per /proc/net/sockstat.";
        SOURCE_UP = "sockscope_source_up", G, ["source"],
            "1 when the last read of the source succeeded, 0 when it failed.";
        POLL_DURATION = "sockscope_poll_duration_seconds", G, ["source"],
            "Time the last poll spent reading and classifying each source.";
        PARSE_ERRORS = "sockscope_parse_errors_total", C, ["source"],
            "Lines or messages skipped as malformed, per source.";
        LAST_POLL = "sockscope_last_poll_timestamp_seconds", G, [],
            "Unix time at which the latest sample was taken.";
        CENSUS_TIMESTAMP = "sockscope_census_timestamp_seconds", G, [],
            "Unix time of the latest census of every socket (socket states, ephemeral ports, accepted connections); listener queues, sysctls and counters are read on every poll.";
        CENSUS_INTERVAL = "sockscope_census_interval_seconds", G, [],
            "Time from the latest census to the next: its duration / --census.cpu-budget-ratio, at most --census.max-interval (the census runs on the first poll after).";
        NGINX_UP = "sockscope_nginx_up", G, ["target"],
            "1 when the last scrape of the nginx stub_status target succeeded, 0 when it failed.";
        NGINX_ACTIVE = "sockscope_nginx_connections_active", G, ["target"],
            "stub_status Active connections: open client connections, waiting ones and the scraper's included.";
        NGINX_READING = "sockscope_nginx_connections_reading", G, ["target"],
            "stub_status Reading: connections reading a request header.";
        NGINX_WRITING = "sockscope_nginx_connections_writing", G, ["target"],
            "stub_status Writing: connections writing a response or waiting for the upstream.";
        NGINX_WAITING = "sockscope_nginx_connections_waiting", G, ["target"],
            "stub_status Waiting: idle keepalive client connections.";
        NGINX_ACCEPTED = "sockscope_nginx_connections_accepted_total", C, ["target"],
            "stub_status accepts: client connections accepted.";
        NGINX_HANDLED = "sockscope_nginx_connections_handled_total", C, ["target"],
            "stub_status handled: client connections handled (accepted minus those refused at worker_connections).";
        NGINX_REQUESTS = "sockscope_nginx_http_requests_total", C, ["target"],
            "stub_status requests: client requests.";
        NGINX_DURATION = "sockscope_nginx_scrape_duration_seconds", G, ["target"],
            "Time the last stub_status scrape took.";
        NGINX_ERRORS = "sockscope_nginx_scrape_errors_total", C, ["target", "reason"],
            "Failed stub_status scrapes by reason: connect, timeout, http, status (not 2xx), body (unreadable or over 64 KiB), parse (not a stub_status page).";
        BUILD_INFO = "sockscope_build_info", G, ["version"],
            "A metric with a constant 1 labelled with the version of sockscope.";
    }
}

/// Collects one family's samples.
struct Fam {
    spec: &'static Spec,
    metrics: Vec<Metric>,
}

impl Fam {
    fn new(spec: &'static Spec) -> Fam {
        Fam {
            spec,
            metrics: Vec::new(),
        }
    }

    fn push(&mut self, labels: &[&str], value: f64) {
        debug_assert_eq!(labels.len(), self.spec.labels.len(), "{}", self.spec.name);
        let pairs = self
            .spec
            .labels
            .iter()
            .zip(labels)
            .map(|(n, v)| {
                let mut p = LabelPair::default();
                p.set_name((*n).to_owned());
                p.set_value((*v).to_owned());
                p
            })
            .collect();
        let mut m = Metric::from_label(pairs);
        match self.spec.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    fn one(spec: &'static Spec, value: Option<f64>, out: &mut Vec<MetricFamily>) {
        if let Some(v) = value {
            let mut f = Fam::new(spec);
            f.push(&[], v);
            f.finish(out);
        }
    }

    fn finish(self, out: &mut Vec<MetricFamily>) {
        if self.metrics.is_empty() {
            return;
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.spec.name.to_owned());
        mf.set_help(self.spec.help.to_owned());
        mf.set_field_type(self.spec.kind);
        mf.set_metric(self.metrics);
        out.push(mf);
    }
}

/// Builds every family from a sample. Figures the sample lacks (a source
/// that is down) are left out rather than reported as zero.
pub fn families(sample: &Sample) -> Vec<MetricFamily> {
    use specs::*;
    let mut out = Vec::new();

    let mut f = Fam::new(&BUILD_INFO);
    f.push(&[env!("CARGO_PKG_VERSION")], 1.0);
    f.finish(&mut out);

    // A family whose source (netlink or its procfs fallback) is down is left
    // out, not reported as zeros.
    let family_up = |fam: Family| {
        let names = match fam {
            Family::Ipv4 => ["inet_diag_ipv4", "proc_net_tcp"],
            Family::Ipv6 => ["inet_diag_ipv6", "proc_net_tcp6"],
        };
        sample
            .sources
            .iter()
            .any(|s| s.up && (names.contains(&s.source) || s.source == "inet_diag"))
    };
    let tcp_up = Family::ALL.into_iter().any(family_up);
    if tcp_up {
        let mut f = Fam::new(&TCP_SOCKETS);
        for fam in Family::ALL.into_iter().filter(|&f| family_up(f)) {
            for st in TcpState::ALL {
                f.push(
                    &[fam.label(), st.label()],
                    sample.tcp.family(fam)[st.index()] as f64,
                );
            }
        }
        f.finish(&mut out);
    }
    let unix_up = sample
        .sources
        .iter()
        .any(|s| s.up && (s.source == "unix_diag" || s.source == "proc_net_unix"));
    if unix_up {
        let mut f = Fam::new(&UNIX_SOCKETS);
        for t in UnixType::ALL {
            for st in UnixState::ALL {
                f.push(&[t.label(), st.label()], sample.unix.get(t, st) as f64);
            }
        }
        f.finish(&mut out);
    }

    let mut len = Fam::new(&LISTEN_QUEUE_LENGTH);
    let mut lim = Fam::new(&LISTEN_QUEUE_LIMIT);
    let mut full = Fam::new(&LISTEN_QUEUE_FULL);
    let mut conns = Fam::new(&LISTEN_CONNECTIONS);
    let mut socks = Fam::new(&LISTEN_SOCKETS);
    for l in &sample.listeners {
        let r = &l.listener;
        let labels = [r.proto.label(), r.listener.as_str()];
        len.push(&labels, r.length as f64);
        if let Some(limit) = r.limit {
            lim.push(&labels, limit as f64);
            full.push(&labels, l.full_seconds_total);
        }
        socks.push(&labels, r.sockets as f64);
        conns.push(&[labels[0], labels[1], "connecting"], r.connecting as f64);
        conns.push(&[labels[0], labels[1], "connected"], r.connected as f64);
    }
    for f in [len, lim, full, conns, socks] {
        f.finish(&mut out);
    }

    if let Some(s) = &sample.sysctls {
        Fam::one(&SOMAXCONN, Some(f64::from(s.somaxconn)), &mut out);
        Fam::one(&PORT_RANGE_FIRST, Some(f64::from(s.port_range.0)), &mut out);
        Fam::one(&PORT_RANGE_LAST, Some(f64::from(s.port_range.1)), &mut out);
        Fam::one(&TW_REUSE, Some(f64::from(s.tcp_tw_reuse)), &mut out);
        let delay = s.tcp_tw_reuse_delay_ms.map(|ms| f64::from(ms) / 1000.0);
        Fam::one(&TW_REUSE_DELAY, delay, &mut out);
        Fam::one(&TCP_TIMESTAMPS, Some(f64::from(s.tcp_timestamps)), &mut out);
        Fam::one(
            &MAX_TW_BUCKETS,
            Some(f64::from(s.tcp_max_tw_buckets)),
            &mut out,
        );
    }
    let c = &sample.counters;
    let f64_of = |v: Option<u64>| v.map(|v| v as f64);
    Fam::one(&LISTEN_OVERFLOWS, f64_of(c.listen_overflows), &mut out);
    Fam::one(&LISTEN_DROPS, f64_of(c.listen_drops), &mut out);
    Fam::one(&SOCKSTAT_TW, f64_of(c.sockstat_tcp_tw), &mut out);
    Fam::one(&SOCKSTAT_INUSE, f64_of(c.sockstat_tcp_inuse), &mut out);
    Fam::one(&SOCKSTAT_ORPHAN, f64_of(c.sockstat_tcp_orphan), &mut out);

    if let Some(e) = sample.ephemeral.as_ref().filter(|_| tcp_up) {
        let mut used = Fam::new(&EPHEMERAL_USED);
        let mut avail = Fam::new(&EPHEMERAL_AVAILABLE);
        let mut reusable = Fam::new(&EPHEMERAL_REUSABLE);
        for p in &e.pools {
            let (s, d) = (p.source.as_str(), p.destination.as_str());
            used.push(&[s, d, "established"], p.counts.established as f64);
            used.push(&[s, d, "time_wait"], p.counts.time_wait as f64);
            used.push(&[s, d, "other"], p.counts.other as f64);
            reusable.push(&[s, d], p.counts.time_wait_reusable as f64);
            avail.push(&[s, d], p.available as f64);
        }
        for f in [used, reusable, avail] {
            f.finish(&mut out);
        }
        Fam::one(&EPHEMERAL_LIMIT, Some(e.limit as f64), &mut out);
        Fam::one(&EPHEMERAL_RATIO, Some(e.usage_ratio_max), &mut out);
        Fam::one(&EPHEMERAL_POOLS, Some(e.pools_total as f64), &mut out);
    }

    let mut up = Fam::new(&SOURCE_UP);
    let mut dur = Fam::new(&POLL_DURATION);
    let mut errs = Fam::new(&PARSE_ERRORS);
    for s in &sample.sources {
        up.push(&[s.source], if s.up { 1.0 } else { 0.0 });
        dur.push(&[s.source], s.duration_seconds);
        errs.push(&[s.source], s.parse_errors_total as f64);
    }
    for f in [up, dur, errs] {
        f.finish(&mut out);
    }
    Fam::one(&LAST_POLL, Some(sample.timestamp), &mut out);
    Fam::one(&CENSUS_TIMESTAMP, Some(sample.census.timestamp), &mut out);
    Fam::one(
        &CENSUS_INTERVAL,
        Some(sample.census.interval_seconds),
        &mut out,
    );
    out
}

/// Builds the nginx families from the latest stub_status scrapes. A target
/// that is down has `up` 0, its error counters and duration, no figures.
pub fn nginx_families(targets: &[TargetSample]) -> Vec<MetricFamily> {
    use specs::*;
    let mut out = Vec::new();
    if targets.is_empty() {
        return out;
    }
    let mut up = Fam::new(&NGINX_UP);
    type Figure = fn(&crate::collector::nginx::StubStatus) -> u64;
    let mut figures: Vec<(Fam, Figure)> = vec![
        (Fam::new(&NGINX_ACTIVE), |s| s.active),
        (Fam::new(&NGINX_READING), |s| s.reading),
        (Fam::new(&NGINX_WRITING), |s| s.writing),
        (Fam::new(&NGINX_WAITING), |s| s.waiting),
        (Fam::new(&NGINX_ACCEPTED), |s| s.accepts),
        (Fam::new(&NGINX_HANDLED), |s| s.handled),
        (Fam::new(&NGINX_REQUESTS), |s| s.requests),
    ];
    let mut dur = Fam::new(&NGINX_DURATION);
    let mut errs = Fam::new(&NGINX_ERRORS);
    for t in targets {
        let label = [t.target.as_str()];
        up.push(&label, if t.status.is_some() { 1.0 } else { 0.0 });
        if let Some(s) = &t.status {
            for (f, get) in &mut figures {
                f.push(&label, get(s) as f64);
            }
        }
        dur.push(&label, t.duration_seconds);
        for kind in ScrapeError::KINDS {
            let n = t.errors_total.get(kind).copied().unwrap_or(0);
            errs.push(&[label[0], kind], n as f64);
        }
    }
    up.finish(&mut out);
    for (f, _) in figures {
        f.finish(&mut out);
    }
    dur.finish(&mut out);
    errs.finish(&mut out);
    out
}

/// The `prometheus` collector over the poller's latest sample and the
/// latest stub_status scrapes.
pub struct SampleCollector {
    latest: watch::Receiver<Option<Arc<Sample>>>,
    nginx: Option<watch::Receiver<Arc<Vec<TargetSample>>>>,
    descs: Vec<Desc>,
}

impl SampleCollector {
    /// `nginx` is `None` when no `--nginx.scrape-uri` is configured.
    pub fn new(
        latest: watch::Receiver<Option<Arc<Sample>>>,
        nginx: Option<watch::Receiver<Arc<Vec<TargetSample>>>>,
    ) -> SampleCollector {
        let descs = specs::ALL
            .iter()
            .map(|s| {
                Desc::new(
                    s.name.to_owned(),
                    s.help.to_owned(),
                    s.labels.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
                .expect("static metric spec is valid")
            })
            .collect();
        SampleCollector {
            latest,
            nginx,
            descs,
        }
    }
}

impl Collector for SampleCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sample = self.latest.borrow().clone();
        let mut out = sample.map(|s| families(&s)).unwrap_or_default();
        if let Some(n) = &self.nginx {
            let targets = n.borrow().clone();
            out.extend(nginx_families(&targets));
        }
        out
    }
}

/// Encodes families in the text format 0.0.4.
pub fn encode(families: &[MetricFamily]) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(families)
        .expect("encoding to a String cannot fail")
}

pub mod server;
