//! The `flows` map's key bytes → [`Flow`]. Pure: no kernel, no I/O.
//!
//! Layout (`struct flow_key` in `connects.bpf.c`, 44 bytes, integers in
//! host byte order as the program wrote them):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4  | netns: `sock_net(sk)->ns.inum` |
//! | 4  | 2  | family: `AF_INET` (2) or `AF_INET6` (10) |
//! | 6  | 2  | dport: destination port |
//! | 8  | 16 | saddr: local address; IPv4 in the first 4 bytes, rest zero |
//! | 24 | 16 | daddr: destination address; same |
//! | 40 | 2  | outcome: errno (< 0x1000) or one of the `OUTCOME_*` codes |
//! | 42 | 2  | pad: zero |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Flow, Outcome};

/// Size of `struct flow_key`.
pub(crate) const KEY_LEN: usize = 44;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `OUTCOME_*` in `connects.bpf.c`.
pub(crate) const OUTCOME_ESTABLISHED: u16 = 0x1000;
pub(crate) const OUTCOME_ABORTED: u16 = 0x1001;
pub(crate) const OUTCOME_TIME_WAIT: u16 = 0x1002;
pub(crate) const OUTCOME_EADDRNOTAVAIL_BOUND: u16 = 0x1003;
/// EADDRNOTAVAIL: the code for a connect whose autobind found no free port.
pub(crate) const EADDRNOTAVAIL: u16 = 99;

/// Why a key could not be decoded (a program/reader mismatch: the object
/// embedded in this binary writes only well-formed keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("flow key is {0} bytes, expected {KEY_LEN}")]
    Length(usize),
    #[error("flow key has address family {0}, expected 2 (AF_INET) or 10 (AF_INET6)")]
    Family(u16),
    #[error("flow key has outcome code {0:#x}, which no program version writes")]
    Outcome(u16),
}

/// Decodes one key of the `flows` map.
pub(crate) fn flow(key: &[u8]) -> Result<Flow, DecodeError> {
    let key: &[u8; KEY_LEN] = key.try_into().map_err(|_| DecodeError::Length(key.len()))?;
    let u16_at = |at: usize| u16::from_ne_bytes([key[at], key[at + 1]]);
    let netns = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]);
    let family = u16_at(4);
    let dport = u16_at(6);
    let addr = |at: usize| -> Result<IpAddr, DecodeError> {
        let bytes: [u8; 16] = key[at..at + 16].try_into().expect("16 bytes");
        match family {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(bytes))),
            other => Err(DecodeError::Family(other)),
        }
    };
    let local_ip = addr(8)?;
    let destination = SocketAddr::new(addr(24)?, dport);
    let outcome = outcome(u16_at(40))?;
    Ok(Flow {
        netns,
        local_ip,
        destination,
        outcome,
    })
}

/// The namespace field of a key (0 for a short key).
pub(crate) fn netns(key: &[u8]) -> u32 {
    match key.first_chunk::<4>() {
        Some(b) => u32::from_ne_bytes(*b),
        None => 0,
    }
}

/// The outcome a code stands for.
pub(crate) fn outcome(code: u16) -> Result<Outcome, DecodeError> {
    Ok(match code {
        OUTCOME_ESTABLISHED => Outcome::Established,
        OUTCOME_ABORTED => Outcome::Aborted,
        OUTCOME_TIME_WAIT => Outcome::TimeWait,
        OUTCOME_EADDRNOTAVAIL_BOUND => Outcome::AddrNotAvail { bound: true },
        EADDRNOTAVAIL => Outcome::AddrNotAvail { bound: false },
        1..0x1000 => Outcome::Errno(i32::from(code)),
        other => return Err(DecodeError::Outcome(other)),
    })
}

/// The errnos a TCP connect can end with (synchronously or in `sk_err`:
/// RST, SYN timeout, ICMP errors via `icmp_err_convert`, netfilter, LSMs)
/// and their lower-case names.
const ERRNO_NAMES: &[(i32, &str)] = &[
    (1, "eperm"),
    (4, "eintr"),
    (11, "eagain"),
    (12, "enomem"),
    (13, "eacces"),
    (22, "einval"),
    (32, "epipe"),
    (64, "enonet"),
    (71, "eproto"),
    (90, "emsgsize"),
    (92, "enoprotoopt"),
    (95, "eopnotsupp"),
    (97, "eafnosupport"),
    (98, "eaddrinuse"),
    (99, "eaddrnotavail"),
    (100, "enetdown"),
    (101, "enetunreach"),
    (103, "econnaborted"),
    (104, "econnreset"),
    (105, "enobufs"),
    (110, "etimedout"),
    (111, "econnrefused"),
    (112, "ehostdown"),
    (113, "ehostunreach"),
];

/// The errno's lower-case name, if it is one a connect can end with.
pub(crate) fn errno_name(errno: i32) -> Option<&'static str> {
    ERRNO_NAMES
        .binary_search_by_key(&errno, |&(n, _)| n)
        .ok()
        .map(|i| ERRNO_NAMES[i].1)
}
