//! UNIX socket counts per type and `SS_*` state: `sockscope_unix_sockets`,
//! from unix_diag (`udiag_type`, `udiag_state`, and a listener's
//! `UNIX_DIAG_RQLEN` for the embryos unix_diag does not list) or the Type
//! and St columns of `/proc/net/unix`.

use crate::metrics::Families;
use crate::model::{UnixSocket, UnixState, UnixType};

crate::metric_specs! {
    UNIX_SOCKETS = "sockscope_unix_sockets", Gauge, ["sock_type", "state"],
        "UNIX sockets per type and SS_* state of /proc/net/unix; connecting = embryos waiting for accept() (unix_diag: the listeners' UNIX_DIAG_RQLEN), as of the latest census.";
}

/// Counts indexed `[type][state]` in [`UnixType::ALL`] / [`UnixState::ALL`]
/// order.
///
/// Serialized (`snapshot --json`) with every count named:
/// `{"stream": {"unconnected": 0, "connecting": 3, …}, "dgram": …, "seqpacket": …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixStates {
    pub counts: [[u64; 5]; 3],
}

fn type_index(t: UnixType) -> usize {
    match t {
        UnixType::Stream => 0,
        UnixType::Dgram => 1,
        UnixType::Seqpacket => 2,
    }
}

impl UnixStates {
    pub fn observe(&mut self, s: &UnixSocket) {
        self.add(s.sock_type, s.state, 1);
        // unix_diag does not list embryos; their listener's RQLEN counts
        // them (procfs lists them itself and has no RQLEN).
        if let Some(q) = s.listen_queue {
            self.add(s.sock_type, UnixState::Connecting, u64::from(q.queued));
        }
    }

    pub fn add(&mut self, t: UnixType, s: UnixState, n: u64) {
        self.counts[type_index(t)][s.index()] += n;
    }

    pub fn get(&self, t: UnixType, s: UnixState) -> u64 {
        self.counts[type_index(t)][s.index()]
    }

    /// `sockscope_unix_sockets`, every type and state.
    pub fn encode(&self, out: &mut Families) {
        for t in UnixType::ALL {
            for st in UnixState::ALL {
                out.push(
                    &UNIX_SOCKETS,
                    &[t.label(), st.label()],
                    self.get(t, st) as f64,
                );
            }
        }
    }
}

/// One type's counts as a map from state label to count.
struct ByState<'a>(&'a UnixStates, UnixType);

impl serde::Serialize for ByState<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            UnixState::ALL
                .iter()
                .map(|&st| (st.label(), self.0.get(self.1, st))),
        )
    }
}

impl serde::Serialize for UnixStates {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(UnixType::ALL.iter().map(|&t| (t.label(), ByState(self, t))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ListenQueue, UnixName};

    #[test]
    fn rqlen_counts_embryos_and_every_series_is_encoded() {
        let mut u = UnixStates::default();
        u.observe(&UnixSocket {
            sock_type: UnixType::Stream,
            state: UnixState::Listen,
            name: Some(UnixName::Path("/run/a.sock".into())),
            listen_queue: Some(ListenQueue {
                queued: 5,
                limit: Some(4),
                drops: None,
            }),
        });
        let text = crate::metrics::encoded(|f| u.encode(f));
        assert!(
            text.contains("sockscope_unix_sockets{sock_type=\"stream\",state=\"connecting\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("sockscope_unix_sockets{sock_type=\"stream\",state=\"listen\"} 1\n"));
        assert!(text.contains(
            "sockscope_unix_sockets{sock_type=\"seqpacket\",state=\"disconnecting\"} 0\n"
        ));
        assert_eq!(text.matches("sockscope_unix_sockets{").count(), 15);
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["stream"]["connecting"], 5);
        assert_eq!(v["stream"]["listen"], 1);
        assert_eq!(v["seqpacket"]["disconnecting"], 0);
    }
}
