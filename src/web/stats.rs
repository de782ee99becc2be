//! The web server's own health, appended to every `/metrics` answer:
//! connections open (and their cap), accepted, closed by the server and
//! why, and requests refused before the handler and why.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Families;

crate::metric_specs! {
    CONNECTIONS_OPEN = "sockscope_web_connections_open", Gauge, [],
        "Connections to the agent's web server open now.";
    CONNECTIONS_LIMIT = "sockscope_web_connections_limit", Gauge, [],
        "--web.max-connections: open connections beyond which the longest-stalled connection without a complete request header is closed.";
    CONNECTIONS_ACCEPTED = "sockscope_web_connections_accepted_total", Counter, [],
        "Connections the agent's web server accepted.";
    CONNECTIONS_CLOSED = "sockscope_web_connections_closed_total", Counter, ["reason"],
        "Connections the web server closed on its own: header_timeout (no complete request header within --web.read-header-timeout), evicted (longest-stalled, to make room at --web.max-connections), refused (at --web.max-connections with none stalled), tls_handshake (failed TLS handshake, e.g. plain HTTP on the TLS port).";
    REQUESTS_REJECTED = "sockscope_web_requests_rejected_total", Counter, ["reason"],
        "Requests refused before their handler: max_requests (503, beyond --web.max-requests scrapes at once), unauthorized (401, missing or wrong basic-auth credentials).";
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    HeaderTimeout,
    Evicted,
    Refused,
    TlsHandshake,
}

impl Closed {
    const ALL: [Closed; 4] = [
        Closed::HeaderTimeout,
        Closed::Evicted,
        Closed::Refused,
        Closed::TlsHandshake,
    ];

    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::TlsHandshake => "tls_handshake",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    MaxRequests,
    Unauthorized,
}

impl Rejected {
    const ALL: [Rejected; 2] = [Rejected::MaxRequests, Rejected::Unauthorized];

    fn label(self) -> &'static str {
        match self {
            Rejected::MaxRequests => "max_requests",
            Rejected::Unauthorized => "unauthorized",
        }
    }
}

/// The counters, shared by the accept loop, the connections, the request
/// layers and the `/metrics` handler.
#[derive(Debug, Default)]
pub struct WebStats {
    open: AtomicU64,
    limit: AtomicU64,
    accepted: AtomicU64,
    closed: [AtomicU64; Closed::ALL.len()],
    rejected: [AtomicU64; Rejected::ALL.len()],
}

impl WebStats {
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit as u64, Ordering::Relaxed);
    }

    pub fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended (whoever closed it).
    pub fn ended(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, why: Rejected) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections that ended since start (accepted − open).
    pub(crate) fn ended_total(&self) -> u64 {
        self.accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.open.load(Ordering::Relaxed))
    }

    /// Every family, each reason present from the start (at 0).
    pub fn encode(&self, out: &mut Families) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        out.one(&CONNECTIONS_OPEN, Some(get(&self.open)));
        out.one(&CONNECTIONS_LIMIT, Some(get(&self.limit)));
        out.one(&CONNECTIONS_ACCEPTED, Some(get(&self.accepted)));
        for why in Closed::ALL {
            out.push(
                &CONNECTIONS_CLOSED,
                &[why.label()],
                get(&self.closed[why as usize]),
            );
        }
        for why in Rejected::ALL {
            out.push(
                &REQUESTS_REJECTED,
                &[why.label()],
                get(&self.rejected[why as usize]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_there_from_the_start() {
        let s = WebStats::default();
        s.set_limit(512);
        s.opened();
        s.opened();
        s.ended();
        s.closed(Closed::Evicted);
        s.rejected(Rejected::Unauthorized);
        let text = crate::metrics::encoded(|f| s.encode(f));
        for line in [
            "sockscope_web_connections_open 1\n",
            "sockscope_web_connections_limit 512\n",
            "# TYPE sockscope_web_connections_accepted_total counter\n",
            "sockscope_web_connections_accepted_total 2\n",
            "sockscope_web_connections_closed_total{reason=\"evicted\"} 1\n",
            "sockscope_web_connections_closed_total{reason=\"header_timeout\"} 0\n",
            "sockscope_web_connections_closed_total{reason=\"refused\"} 0\n",
            "sockscope_web_connections_closed_total{reason=\"tls_handshake\"} 0\n",
            "sockscope_web_requests_rejected_total{reason=\"max_requests\"} 0\n",
            "sockscope_web_requests_rejected_total{reason=\"unauthorized\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
