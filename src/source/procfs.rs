//! Parsers for `/proc/net/tcp`, `/proc/net/tcp6` and `/proc/net/unix`: the
//! fallback when sock_diag netlink is unavailable, and a cross-check.
//!
//! Each parser takes any `BufRead` and calls the visitor once per socket;
//! a malformed line is skipped, counted in [`ReadStats::parse_errors`] and
//! never stops the read.
//!
//! # Line handling (both parsers)
//!
//! * Input is read with `read_until(b'\n')` into one reused buffer and
//!   parsed as bytes: no per-line allocation (except the path `String` of a
//!   bound UNIX socket, which the record owns).
//! * The **first line is the header** and is skipped unconditionally,
//!   whatever it contains (the kernel always prints one; it is not
//!   validated).
//! * A line is the bytes up to a `\n` (or the end of input for a last line
//!   without one). Only the `\n` is stripped.
//! * **Blank lines** (empty, or nothing but ASCII whitespace) are ignored:
//!   neither a record nor a parse error. The kernel never prints them.
//! * Every other line yields exactly one record or one parse error, so
//!   `records + parse_errors` = number of non-blank lines after the header.
//!
//! Kernel quirks seen on 6.18 (fixtures in `tests/fixtures/kernel-6.18/`):
//! `/proc/net/tcp` lines are space-padded to 149 characters, `tcp6` lines
//! are not; TIME_WAIT lines (and orphaned FIN_WAIT2 sockets, which become
//! timewait minisockets printed as `05` with timer `03`) have 12 fields
//! instead of 17; children waiting in a listener's accept queue and
//! timewait sockets show inode 0. In `/proc/net/unix` a path containing
//! `\n` splits its line in two (the tail is counted as a parse error), and
//! a relative path that starts with `@` cannot be told from an abstract
//! name.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::model::{
    Family, ListenQueue, TcpQueues, TcpSocket, TcpState, UnixName, UnixSocket, UnixState, UnixType,
};
use crate::source::ReadStats;

#[cfg(test)]
mod tests;

/// `__SO_ACCEPTCON` (include/linux/net.h): the Flags bit `unix_seq_show()`
/// prints for a socket in `TCP_LISTEN`.
const SO_ACCEPTCON: u32 = 1 << 16;

/// Milliseconds per `clock_t` tick: `jiffies_delta_to_clock_t()` converts to
/// `USER_HZ`, which is 100 on every architecture Linux exports to userspace.
const MS_PER_CLOCK_TICK: u64 = 10;

/// Parses `/proc/net/tcp` (`family` = Ipv4) or `/proc/net/tcp6` (Ipv6),
/// as printed by `tcp4_seq_show()` / `tcp6_seq_show()`.
///
/// Calls `visit` once per socket line, in file order, with a [`TcpSocket`]
/// whose `family` is the given `family`. See [`parse_tcp_line`] for the
/// fields, units and kernel sources. The first line (the header) is
/// skipped; blank lines are ignored; a malformed line is skipped and
/// counted in [`ReadStats::parse_errors`] (see the module docs).
///
/// # Errors
///
/// Only an I/O error from `reader` (returned as is; records already
/// visited stay visited). Malformed content is never an error.
pub fn parse_tcp<R: BufRead>(
    family: Family,
    reader: R,
    visit: &mut dyn FnMut(TcpSocket),
) -> std::io::Result<ReadStats> {
    for_each_line(reader, |line| match parse_tcp_line(family, line) {
        Some(sock) => {
            visit(sock);
            true
        }
        None => false,
    })
}

/// Parses `/proc/net/unix` as printed by `unix_seq_show()`.
///
/// Calls `visit` once per socket line, in file order, including the
/// `SS_CONNECTING` embryos (St `02`, inode 0, the listener's path) that
/// sit in a listener's queue: the caller counts those per path. See
/// [`parse_unix_line`] for the fields and kernel sources. The first line
/// (the header) is skipped; blank lines are ignored; a malformed line is
/// skipped and counted in [`ReadStats::parse_errors`] (see the module
/// docs).
///
/// # Errors
///
/// Only an I/O error from `reader` (returned as is; records already
/// visited stay visited). Malformed content is never an error.
pub fn parse_unix<R: BufRead>(
    reader: R,
    visit: &mut dyn FnMut(UnixSocket),
) -> std::io::Result<ReadStats> {
    for_each_line(reader, |line| match parse_unix_line(line) {
        Some(sock) => {
            visit(sock);
            true
        }
        None => false,
    })
}

/// Parses one data line of `/proc/net/tcp` or `/proc/net/tcp6` (without its
/// trailing `\n`; trailing padding spaces are fine). `None` if malformed.
///
/// The line is `sl local rem st tx_queue:rx_queue tr:when retrnsmt uid
/// timeout inode [more...]`, printed by `get_tcp4_sock()`,
/// `get_timewait4_sock()` and `get_openreq4()` in net/ipv4/tcp_ipv4.c (and
/// their `*6` twins in net/ipv6/tcp_ipv6.c); at least these 10
/// whitespace-separated fields must be present and well-formed, the rest
/// (refcount, socket pointer, rto, ato, ...) is ignored:
///
/// * `sl` (`%4d:`): decimal slot number followed by `:`; checked, unused.
/// * `local`, `rem` (`%08X:%04X`, IPv6 `%08X%08X%08X%08X:%04X`): the
///   address is the network-order `in_addr`/`s6_addr32[i]` words printed as
///   host-order `u32`s, so each word is converted back with the host's
///   byte order (`0100007F` = 127.0.0.1 on little-endian); exactly 8 hex
///   digits for Ipv4 and 32 for Ipv6, otherwise the line is malformed (a
///   `tcp6` line fed as Ipv4 is an error). The port is the host-order
///   value (`1F90` = 8080). → [`TcpSocket::local`] / [`TcpSocket::remote`].
/// * `st` (`%02X`): `sk_state` (or `tw_substate` for timewait sockets, so
///   an orphaned FIN_WAIT2 shows `05`); request sockets are printed as
///   `03` SYN_RECV. Mapped with [`TcpState::from_kernel`]; values outside
///   1..=12 are malformed (12 reads as SYN_RECV). → [`TcpSocket::state`].
/// * `tx_queue:rx_queue` (`%08X:%08X`): `write_seq - snd_una` and, for
///   LISTEN, `sk_ack_backlog` (accept-queue length), otherwise
///   `rcv_nxt - copied_seq` (a received FIN counts 1, so CLOSE_WAIT shows
///   1). → [`TcpSocket::queues`]: for LISTEN [`TcpQueues::Accept`] with
///   `queued` = `rx_queue` and no limit (procfs does not print it;
///   `tx_queue` is 0); otherwise [`TcpQueues::Bytes`] `{recv: rx_queue,
///   send: tx_queue}`.
/// * `tr:when` (`%02X:%08lX`): `timer_active` (0 none, 1 retransmit/
///   SYN-ACK, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe) and
///   `jiffies_delta_to_clock_t(expires - jiffies)`, in `clock_t` ticks of
///   `USER_HZ` = 100 (10 ms). → [`TcpSocket::expires_ms`] = `when * 10`
///   (saturating at `u32::MAX`) when `tr != 0`, `None` when `tr == 0`.
/// * `retrnsmt` (`%08X`), `uid` (`%5u`), `timeout` (`%8d`), `inode`
///   (`%lu`): checked (hex, decimal, signed decimal, decimal), unused.
///
/// Any byte that is not ASCII makes the line malformed. Never panics.
pub fn parse_tcp_line(family: Family, line: &[u8]) -> Option<TcpSocket> {
    if !line.is_ascii() {
        return None;
    }
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());

    let sl = fields.next()?.strip_suffix(b":")?;
    dec_u64(sl)?;
    let local = parse_endpoint(family, fields.next()?)?;
    let remote = parse_endpoint(family, fields.next()?)?;
    let st = hex_u64(fields.next()?, 2)?;
    let state = TcpState::from_kernel(u8::try_from(st).ok()?)?;
    let (tx, rx) = split_pair(fields.next()?)?;
    let tx = u32::try_from(hex_u64(tx, 8)?).ok()?;
    let rx = u32::try_from(hex_u64(rx, 8)?).ok()?;
    let (tr, when) = split_pair(fields.next()?)?;
    let tr = hex_u64(tr, 8)?;
    let when = hex_u64(when, 16)?;
    hex_u64(fields.next()?, 8)?; // retrnsmt
    dec_u64(fields.next()?)?; // uid
    dec_i64(fields.next()?)?; // timeout (probes out)
    dec_u64(fields.next()?)?; // inode

    let expires_ms = (tr != 0)
        .then(|| u32::try_from(when.saturating_mul(MS_PER_CLOCK_TICK)).unwrap_or(u32::MAX));
    let queues = match state {
        TcpState::Listen => TcpQueues::Accept(ListenQueue {
            queued: rx,
            limit: None,
            drops: None,
        }),
        _ => TcpQueues::Bytes { recv: rx, send: tx },
    };
    Some(TcpSocket {
        family,
        state,
        local,
        remote,
        queues,
        expires_ms,
    })
}

/// Parses one data line of `/proc/net/unix` (without its trailing `\n`).
/// `None` if malformed.
///
/// The line is printed by `unix_seq_show()` (net/unix/af_unix.c) as
/// `"%pK: %08X %08X %08X %04X %02X %5lu"`, then, for a bound socket, one
/// space and the name:
///
/// * `Num` (`%pK:`): the socket pointer (hashed or zeroed) and `:`;
///   checked as 1..=16 hex digits, unused.
/// * `RefCount` (`sk_refcnt`), `Protocol` (always 0): hex, unused.
/// * `Flags`: `__SO_ACCEPTCON` (`00010000`) when `sk_state == TCP_LISTEN`
///   → [`UnixState::Listen`], whatever `St` says (the kernel prints `01`).
/// * `Type` (`%04X`, `sk_type`): [`UnixType::from_kernel`]; `0001` stream,
///   `0002` dgram, `0005` seqpacket, anything else is malformed.
///   → [`UnixSocket::sock_type`].
/// * `St` (`%02X`): `SS_*` derived from `sk_socket` and `sk_state`:
///   `01` [`UnixState::Unconnected`], `02` [`UnixState::Connecting`] (an
///   embryo queued on a listener, not yet accepted; inode 0), `03`
///   [`UnixState::Connected`], `04` [`UnixState::Disconnecting`]; other
///   values are malformed. → [`UnixSocket::state`].
/// * `Inode` (`%5lu`, left-padded with spaces): decimal, unused.
/// * `Path`: everything after the inode and exactly one space, to the end
///   of the line (only `\n` was stripped), so names with spaces, leading
///   spaces or trailing spaces survive. A name starting with `@` is
///   abstract (the kernel prints `@` for the leading NUL and for every
///   embedded NUL) → [`UnixName::Abstract`] of the bytes after that first
///   `@`; anything else → [`UnixName::Path`]. Bytes that are not UTF-8
///   are replaced (U+FFFD), not an error. No name → `None`; a separator
///   space followed by nothing is malformed (the kernel never prints it).
///
/// [`UnixSocket::listen_queue`] is always `None`: procfs has no queue
/// column. Never panics.
pub fn parse_unix_line(line: &[u8]) -> Option<UnixSocket> {
    let mut cur = Fields { line, pos: 0 };
    let num = cur.next()?.strip_suffix(b":")?;
    hex_u64(num, 16)?;
    hex_u64(cur.next()?, 8)?; // RefCount
    hex_u64(cur.next()?, 8)?; // Protocol
    let flags = u32::try_from(hex_u64(cur.next()?, 8)?).ok()?;
    let sock_type = UnixType::from_kernel(u32::try_from(hex_u64(cur.next()?, 8)?).ok()?)?;
    let state = match hex_u64(cur.next()?, 2)? {
        1 => UnixState::Unconnected,
        2 => UnixState::Connecting,
        3 => UnixState::Connected,
        4 => UnixState::Disconnecting,
        _ => return None,
    };
    let state = if flags & SO_ACCEPTCON != 0 {
        UnixState::Listen
    } else {
        state
    };
    dec_u64(cur.next()?)?; // Inode

    // `Fields::next` stops at a space or at the end of the line.
    let name = match line.get(cur.pos..)? {
        [] => None,
        [b' ', path @ ..] => Some(unix_name(path)?),
        _ => return None,
    };
    Some(UnixSocket {
        sock_type,
        state,
        name,
        listen_queue: None,
    })
}

/// Reads `reader` line by line into one reused buffer, skips the header
/// (first line) and blank lines, and tallies `parse(line)` as a record
/// (`true`) or a parse error (`false`).
fn for_each_line<R: BufRead>(
    mut reader: R,
    mut parse: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut buf = Vec::with_capacity(256);
    let mut header = true;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(stats);
        }
        if std::mem::take(&mut header) {
            continue;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if parse(line) {
            stats.records += 1;
        } else {
            stats.parse_errors += 1;
        }
    }
}

/// Space-separated fields of a `/proc/net/unix` line; `pos` ends just after
/// the last field returned (at a space or the end of the line).
struct Fields<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.line.get(self.pos..)?;
        let start = rest.iter().position(|&b| b != b' ')?;
        let len = rest[start..]
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(rest.len() - start);
        self.pos += start + len;
        Some(&rest[start..start + len])
    }
}

/// The name after the separator space: `@...` abstract, else a path.
fn unix_name(raw: &[u8]) -> Option<UnixName> {
    match raw {
        [] => None,
        [b'@', rest @ ..] => Some(UnixName::Abstract(
            String::from_utf8_lossy(rest).into_owned(),
        )),
        path => Some(UnixName::Path(String::from_utf8_lossy(path).into_owned())),
    }
}

/// `ADDR:PORT` as printed by the tcp seq files (see [`parse_tcp_line`]).
fn parse_endpoint(family: Family, field: &[u8]) -> Option<SocketAddr> {
    let (addr, port) = split_pair(field)?;
    let port = u16::try_from(hex_u64(port, 4)?).ok()?;
    let ip = match family {
        Family::Ipv4 => {
            if addr.len() != 8 {
                return None;
            }
            IpAddr::V4(Ipv4Addr::from(word(addr)?.to_ne_bytes()))
        }
        Family::Ipv6 => {
            if addr.len() != 32 {
                return None;
            }
            let mut octets = [0u8; 16];
            for (out, hex) in octets.chunks_exact_mut(4).zip(addr.chunks_exact(8)) {
                out.copy_from_slice(&word(hex)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    Some(SocketAddr::new(ip, port))
}

/// One `%08X` address word.
fn word(hex: &[u8]) -> Option<u32> {
    u32::try_from(hex_u64(hex, 8)?).ok()
}

/// Splits `a:b` at its only `:`.
fn split_pair(field: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = field.iter().position(|&b| b == b':')?;
    let (a, b) = (&field[..i], &field[i + 1..]);
    (!b.contains(&b':')).then_some((a, b))
}

/// 1..=`max_digits` hex digits (either case), `max_digits` <= 16.
fn hex_u64(s: &[u8], max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(d))
    })
}

/// 1..=20 decimal digits that fit a `u64`.
fn dec_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// An optional `-` and decimal digits that fit an `i64`.
fn dec_i64(s: &[u8]) -> Option<i64> {
    match s {
        [b'-', digits @ ..] => {
            let v = dec_u64(digits)?;
            0i64.checked_sub_unsigned(v)
        }
        digits => i64::try_from(dec_u64(digits)?).ok(),
    }
}
