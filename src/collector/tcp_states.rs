//! TCP socket counts per family and state: `sockscope_tcp_sockets`, from
//! `idiag_state` of every inet_diag message (or the `st` column of
//! `/proc/net/tcp{,6}`).

use crate::metrics::Families;
use crate::model::{Family, TcpSocket, TcpState};

crate::metric_specs! {
    /// `idiag_state` (include/net/tcp_states.h) counted per family; a
    /// family whose read failed is absent.
    TCP_SOCKETS = "sockscope_tcp_sockets", Gauge, ["family", "state"],
        "TCP sockets per address family and state (inet_diag idiag_state, or the st column of /proc/net/tcp{,6}), as of the latest census.";
}

const STATES: usize = TcpState::ALL.len();

/// Counts of TCP sockets per family, indexed by [`TcpState::index`]. A
/// family is `None` until [`TcpStates::read`] says it was read, so a
/// family whose source failed is absent, not zero.
///
/// Serialized (`snapshot --json`) with every count named:
/// `{"ipv4": {"established": 3, …, "closing": 0}, "ipv6": null}` (`null`:
/// the family was not read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpStates {
    pub ipv4: Option<[u64; STATES]>,
    pub ipv6: Option<[u64; STATES]>,
}

impl TcpStates {
    /// Marks `family` as read (all zeros until sockets are observed).
    pub fn read(&mut self, family: Family) {
        self.slot(family).get_or_insert([0; STATES]);
    }

    /// Counts one socket (its family is read from then on).
    pub fn observe(&mut self, s: &TcpSocket) {
        self.slot(s.family).get_or_insert([0; STATES])[s.state.index()] += 1;
    }

    /// The counts of `f`, `None` when it was not read.
    pub fn family(&self, f: Family) -> Option<&[u64; STATES]> {
        match f {
            Family::Ipv4 => self.ipv4.as_ref(),
            Family::Ipv6 => self.ipv6.as_ref(),
        }
    }

    fn slot(&mut self, f: Family) -> &mut Option<[u64; STATES]> {
        match f {
            Family::Ipv4 => &mut self.ipv4,
            Family::Ipv6 => &mut self.ipv6,
        }
    }

    /// Adds `n` sockets in `state` to `family`, when that family was read
    /// (carried counts of sockets this read did not ask for).
    pub(crate) fn add_read(&mut self, family: Family, state: TcpState, n: u64) {
        if let Some(c) = self.slot(family) {
            c[state.index()] += n;
        }
    }

    /// True when at least one family was read.
    pub fn any(&self) -> bool {
        self.ipv4.is_some() || self.ipv6.is_some()
    }

    /// Sockets in `state` over the families that were read.
    pub fn total(&self, state: TcpState) -> u64 {
        Family::ALL
            .iter()
            .filter_map(|&f| self.family(f))
            .map(|c| c[state.index()])
            .sum()
    }

    /// Adds another census (of another family) to this one.
    pub fn merge(&mut self, other: &TcpStates) {
        for f in Family::ALL {
            if let Some(theirs) = other.family(f) {
                let ours = self.slot(f).get_or_insert([0; STATES]);
                for (a, b) in ours.iter_mut().zip(theirs) {
                    *a += b;
                }
            }
        }
    }

    /// `sockscope_tcp_sockets`, every state of every family read.
    pub fn encode(&self, out: &mut Families) {
        for f in Family::ALL {
            if let Some(counts) = self.family(f) {
                for st in TcpState::ALL {
                    out.push(
                        &TCP_SOCKETS,
                        &[f.label(), st.label()],
                        counts[st.index()] as f64,
                    );
                }
            }
        }
    }
}

/// One family's counts as a map from state label to count.
struct ByState<'a>(&'a [u64; STATES]);

impl serde::Serialize for ByState<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            TcpState::ALL
                .iter()
                .map(|st| (st.label(), self.0[st.index()])),
        )
    }
}

impl serde::Serialize for TcpStates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            Family::ALL
                .iter()
                .map(|&f| (f.label(), self.family(f).map(ByState))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TcpQueues, TcpSocket};

    fn sock(family: Family, state: TcpState) -> TcpSocket {
        let (l, r) = match family {
            Family::Ipv4 => ("127.0.0.1:1", "127.0.0.1:2"),
            Family::Ipv6 => ("[::1]:1", "[::1]:2"),
        };
        TcpSocket {
            family,
            state,
            local: l.parse().unwrap(),
            remote: r.parse().unwrap(),
            queues: TcpQueues::Bytes { recv: 0, send: 0 },
            expires_ms: None,
        }
    }

    #[test]
    fn encodes_read_families_only() {
        let mut t = TcpStates::default();
        t.read(Family::Ipv4);
        t.observe(&sock(Family::Ipv4, TcpState::TimeWait));
        t.observe(&sock(Family::Ipv4, TcpState::TimeWait));
        let text = crate::metrics::encoded(|f| t.encode(f));
        assert!(
            text.contains("# TYPE sockscope_tcp_sockets gauge\n"),
            "{text}"
        );
        assert!(text.contains("sockscope_tcp_sockets{family=\"ipv4\",state=\"time_wait\"} 2\n"));
        assert!(text.contains("sockscope_tcp_sockets{family=\"ipv4\",state=\"syn_recv\"} 0\n"));
        assert!(!text.contains("ipv6"), "an unread family is absent: {text}");
        assert!(!text.contains("new_syn_recv"), "{text}");
        assert_eq!(text.matches("sockscope_tcp_sockets{").count(), 11);

        let mut v6 = TcpStates::default();
        v6.read(Family::Ipv6);
        t.merge(&v6);
        let text = crate::metrics::encoded(|f| t.encode(f));
        assert!(text.contains("sockscope_tcp_sockets{family=\"ipv6\",state=\"listen\"} 0\n"));
        assert_eq!(t.total(TcpState::TimeWait), 2);
    }

    /// JSON names every state; an unread family is `null`.
    #[test]
    fn serializes_with_named_states() {
        let mut t = TcpStates::default();
        t.observe(&sock(Family::Ipv4, TcpState::TimeWait));
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["ipv4"]["time_wait"], 1);
        assert_eq!(v["ipv4"]["established"], 0);
        assert_eq!(v["ipv4"].as_object().unwrap().len(), 11);
        assert!(v["ipv6"].is_null());
    }
}
