//! TCP socket counts per family and state (`sockscope_tcp_sockets`).

use crate::model::{Family, TcpSocket, TcpState};

/// Counts of TCP sockets, indexed by [`TcpState::index`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpStates {
    pub ipv4: [u64; 12],
    pub ipv6: [u64; 12],
}

impl TcpStates {
    pub fn observe(&mut self, s: &TcpSocket) {
        self.family_mut(s.family)[s.state.index()] += 1;
    }

    pub fn family(&self, f: Family) -> &[u64; 12] {
        match f {
            Family::Ipv4 => &self.ipv4,
            Family::Ipv6 => &self.ipv6,
        }
    }

    fn family_mut(&mut self, f: Family) -> &mut [u64; 12] {
        match f {
            Family::Ipv4 => &mut self.ipv4,
            Family::Ipv6 => &mut self.ipv6,
        }
    }

    /// Sockets in `state` over both families.
    pub fn total(&self, state: TcpState) -> u64 {
        self.ipv4[state.index()] + self.ipv6[state.index()]
    }

    /// Adds another census (of another family) to this one.
    pub fn merge(&mut self, other: &TcpStates) {
        for (a, b) in self.ipv4.iter_mut().zip(other.ipv4) {
            *a += b;
        }
        for (a, b) in self.ipv6.iter_mut().zip(other.ipv6) {
            *a += b;
        }
    }
}
