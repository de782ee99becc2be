//! nginx `stub_status` figures as metric families, from the scrapes of
//! [`crate::source::stub_status`] (`ngx_http_stub_status_handler()`).

use crate::metrics::Families;
use crate::source::stub_status::{ScrapeError, StubStatus, TargetSample};

crate::metric_specs! {
    NGINX_UP = "sockscope_nginx_up", Gauge, ["target"],
        "1 when the last scrape of the nginx stub_status target succeeded, 0 when it failed.";
    NGINX_ACTIVE = "sockscope_nginx_connections_active", Gauge, ["target"],
        "stub_status Active connections: open client connections, waiting ones and the scraper's included.";
    NGINX_READING = "sockscope_nginx_connections_reading", Gauge, ["target"],
        "stub_status Reading: connections reading a request header.";
    NGINX_WRITING = "sockscope_nginx_connections_writing", Gauge, ["target"],
        "stub_status Writing: connections writing a response or waiting for the upstream.";
    NGINX_WAITING = "sockscope_nginx_connections_waiting", Gauge, ["target"],
        "stub_status Waiting: idle keepalive client connections.";
    NGINX_ACCEPTED = "sockscope_nginx_connections_accepted_total", Counter, ["target"],
        "stub_status accepts: client connections accepted.";
    NGINX_HANDLED = "sockscope_nginx_connections_handled_total", Counter, ["target"],
        "stub_status handled: client connections handled (accepted minus those refused at worker_connections).";
    NGINX_REQUESTS = "sockscope_nginx_http_requests_total", Counter, ["target"],
        "stub_status requests: client requests.";
    NGINX_DURATION = "sockscope_nginx_scrape_duration_seconds", Gauge, ["target"],
        "Time the last stub_status scrape took.";
    NGINX_TIMESTAMP = "sockscope_nginx_scrape_timestamp_seconds", Gauge, ["target"],
        "When the last stub_status scrape of the target ended (Unix seconds); each target is scraped on its own clock, apart from the kernel poll.";
    NGINX_ERRORS = "sockscope_nginx_scrape_errors_total", Counter, ["target", "reason"],
        "Failed stub_status scrapes by reason: connect, timeout, http, status (not 2xx), body (unreadable or over 64 KiB), parse (not a stub_status page).";
}

type Figure = fn(&StubStatus) -> u64;

/// The figures, in exposition order.
const FIGURES: [(&crate::metrics::Spec, Figure); 7] = [
    (&NGINX_ACTIVE, |s| s.active),
    (&NGINX_READING, |s| s.reading),
    (&NGINX_WRITING, |s| s.writing),
    (&NGINX_WAITING, |s| s.waiting),
    (&NGINX_ACCEPTED, |s| s.accepts),
    (&NGINX_HANDLED, |s| s.handled),
    (&NGINX_REQUESTS, |s| s.requests),
];

/// Every target's families. A target that is down has `up` 0, its error
/// counters (every reason, from 0) and duration, no figures.
pub fn encode(targets: &[&TargetSample], out: &mut Families) {
    for t in targets {
        let label = [t.target.as_str()];
        out.push(
            &NGINX_UP,
            &label,
            if t.status.is_some() { 1.0 } else { 0.0 },
        );
    }
    for (spec, get) in FIGURES {
        for t in targets {
            if let Some(s) = &t.status {
                out.push(spec, &[t.target.as_str()], get(s) as f64);
            }
        }
    }
    for t in targets {
        out.push(&NGINX_DURATION, &[t.target.as_str()], t.duration_seconds);
    }
    for t in targets {
        out.push(&NGINX_TIMESTAMP, &[t.target.as_str()], t.timestamp);
    }
    for t in targets {
        for kind in ScrapeError::KINDS {
            let n = t.errors_total.get(kind).copied().unwrap_or(0);
            out.push(&NGINX_ERRORS, &[t.target.as_str(), kind], n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_target_has_figures_down_target_has_errors_only() {
        let up = TargetSample {
            target: "http://127.0.0.1:8081/stub_status".into(),
            status: Some(StubStatus {
                active: 3,
                accepts: 10,
                handled: 10,
                requests: 20,
                reading: 0,
                writing: 1,
                waiting: 2,
            }),
            duration_seconds: 0.001,
            timestamp: 1_700_000_000.5,
            errors_total: Default::default(),
        };
        let down = TargetSample {
            target: "unix:/run/nginx.sock:/status".into(),
            status: None,
            duration_seconds: 2.0,
            timestamp: 1_700_000_001.0,
            errors_total: [("timeout", 4)].into_iter().collect(),
        };
        let text = crate::metrics::encoded(|f| encode(&[&up, &down], f));
        let u = "target=\"http://127.0.0.1:8081/stub_status\"";
        let d = "target=\"unix:/run/nginx.sock:/status\"";
        for line in [
            format!("sockscope_nginx_up{{{u}}} 1\n"),
            format!("sockscope_nginx_up{{{d}}} 0\n"),
            format!("sockscope_nginx_connections_active{{{u}}} 3\n"),
            format!("sockscope_nginx_connections_waiting{{{u}}} 2\n"),
            format!("sockscope_nginx_http_requests_total{{{u}}} 20\n"),
            format!("sockscope_nginx_scrape_errors_total{{{d},reason=\"timeout\"}} 4\n"),
            format!("sockscope_nginx_scrape_errors_total{{{u},reason=\"parse\"}} 0\n"),
            format!("sockscope_nginx_scrape_duration_seconds{{{d}}} 2\n"),
            format!("sockscope_nginx_scrape_timestamp_seconds{{{u}}} 1700000000.5\n"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(!text.contains(&format!("sockscope_nginx_connections_active{{{d}}}")));
    }
}
