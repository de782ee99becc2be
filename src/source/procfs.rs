//! Parsers for `/proc/net/tcp`, `/proc/net/tcp6` and `/proc/net/unix`: the
//! fallback when sock_diag netlink is unavailable, and a cross-check.
//!
//! Each parser takes any `BufRead` and calls the visitor once per socket;
//! a malformed line is skipped, counted in [`ReadStats::parse_errors`] and
//! never stops the read.

use std::io::BufRead;

use crate::model::{Family, TcpSocket, UnixSocket};
use crate::source::ReadStats;

/// Parses `/proc/net/tcp` (`family` = Ipv4) or `/proc/net/tcp6` (Ipv6),
/// as printed by `tcp4_seq_show()` / `tcp6_seq_show()`.
pub fn parse_tcp<R: BufRead>(
    _family: Family,
    _reader: R,
    _visit: &mut dyn FnMut(TcpSocket),
) -> std::io::Result<ReadStats> {
    todo!("procfs tcp parser")
}

/// Parses `/proc/net/unix` as printed by `unix_seq_show()`.
pub fn parse_unix<R: BufRead>(
    _reader: R,
    _visit: &mut dyn FnMut(UnixSocket),
) -> std::io::Result<ReadStats> {
    todo!("procfs unix parser")
}
