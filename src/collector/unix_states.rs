//! UNIX socket counts per type and `SS_*` state (`sockscope_unix_sockets`).

use crate::model::{UnixSocket, UnixState, UnixType};

/// Counts indexed `[type][state]` in [`UnixType::ALL`] / [`UnixState::ALL`]
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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
        if let Some((queued, _)) = s.listen_queue {
            self.add(s.sock_type, UnixState::Connecting, u64::from(queued));
        }
    }

    pub fn add(&mut self, t: UnixType, s: UnixState, n: u64) {
        self.counts[type_index(t)][s.index()] += n;
    }

    pub fn get(&self, t: UnixType, s: UnixState) -> u64 {
        self.counts[type_index(t)][s.index()]
    }
}
