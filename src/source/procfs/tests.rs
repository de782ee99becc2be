//! Tests for the procfs parsers: real kernel 6.18 snapshots (see
//! `tests/fixtures/kernel-6.18/make_fixtures.py` for the socket population),
//! hand-written malformed lines, and property tests.

use std::collections::BTreeMap;
use std::io::{BufReader, Cursor, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

const TCP: &[u8] = include_bytes!("../../../tests/fixtures/kernel-6.18/tcp");
const TCP6: &[u8] = include_bytes!("../../../tests/fixtures/kernel-6.18/tcp6");
const UNIX: &[u8] = include_bytes!("../../../tests/fixtures/kernel-6.18/unix");
const SS_TAN: &str = include_str!("../../../tests/fixtures/kernel-6.18/ss-tan.txt");
const SS_XA: &str = include_str!("../../../tests/fixtures/kernel-6.18/ss-xa.txt");

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
const UNIX_HEADER: &str = "Num       RefCount Protocol Flags    Type St Inode Path";

fn tcp(family: Family, data: &[u8]) -> (Vec<TcpSocket>, ReadStats) {
    let mut out = Vec::new();
    let stats = parse_tcp(family, data, &mut |s| out.push(s)).expect("in-memory read");
    assert_eq!(stats.records, out.len() as u64);
    (out, stats)
}

fn unix(data: &[u8]) -> (Vec<UnixSocket>, ReadStats) {
    let mut out = Vec::new();
    let stats = parse_unix(data, &mut |s| out.push(s)).expect("in-memory read");
    assert_eq!(stats.records, out.len() as u64);
    (out, stats)
}

fn stats(records: u64, parse_errors: u64) -> ReadStats {
    ReadStats {
        records,
        parse_errors,
    }
}

fn tcp_states(socks: &[TcpSocket]) -> BTreeMap<TcpState, usize> {
    let mut m = BTreeMap::new();
    for s in socks {
        *m.entry(s.state).or_default() += 1;
    }
    m
}

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The oracle for `records + parse_errors`: non-blank lines after the first.
fn expected_lines(data: &[u8]) -> u64 {
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .iter()
        .skip(1)
        .filter(|p| !p.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

// ---------------------------------------------------------------------------
// Kernel 6.18 fixtures
// ---------------------------------------------------------------------------

#[test]
fn fixture_tcp_state_counts() {
    let (socks, st) = tcp(Family::Ipv4, TCP);
    assert_eq!(st, stats(38, 0));
    let want = BTreeMap::from([
        (TcpState::Established, 23),
        (TcpState::SynSent, 3),
        (TcpState::FinWait2, 2),
        (TcpState::TimeWait, 4),
        (TcpState::CloseWait, 2),
        (TcpState::Listen, 4),
    ]);
    assert_eq!(tcp_states(&socks), want);
    assert!(socks.iter().all(|s| s.family == Family::Ipv4));
    assert!(
        socks
            .iter()
            .filter_map(|s| s.queues.accept())
            .all(|q| q.limit.is_none()),
        "procfs has no accept-queue limit"
    );

    let (socks6, st6) = tcp(Family::Ipv6, TCP6);
    assert_eq!(st6, stats(4, 0));
    let want6 = BTreeMap::from([(TcpState::Established, 3), (TcpState::Listen, 1)]);
    assert_eq!(tcp_states(&socks6), want6);
    assert!(socks6.iter().all(|s| s.family == Family::Ipv6));
}

#[cfg(target_endian = "little")]
#[test]
fn fixture_tcp_full_listener_queue_is_limit_plus_one() {
    let (socks, _) = tcp(Family::Ipv4, TCP);
    let l = socks
        .iter()
        .find(|s| s.state == TcpState::Listen && s.local == v4("127.0.0.1:8080"))
        .expect("listener 127.0.0.1:8080");
    assert_eq!(
        l.queues,
        TcpQueues::Accept(ListenQueue {
            queued: 9,
            limit: None,
            drops: None,
        }),
        "backlog 8 holds limit + 1; procfs has no limit"
    );
    assert_eq!(l.expires_ms, None);
    assert_eq!(l.remote, v4("0.0.0.0:0"));

    // 9 completed handshakes: client side + the queued (unaccepted) child.
    let to_8080 = |st| {
        socks
            .iter()
            .filter(|s| s.state == st && s.remote.port() == 8080)
            .count()
    };
    assert_eq!(to_8080(TcpState::Established), 9);
    assert_eq!(to_8080(TcpState::SynSent), 3);
    let children = socks
        .iter()
        .filter(|s| s.state == TcpState::Established && s.local == v4("127.0.0.1:8080"))
        .count();
    assert_eq!(children, 9);
    // SYN_SENT clients have the SYN retransmit timer armed (tr 01).
    for s in socks.iter().filter(|s| s.state == TcpState::SynSent) {
        let ms = s.expires_ms.expect("SYN_SENT timer");
        assert!(ms > 0 && ms <= 3000, "{ms}");
    }
}

#[cfg(target_endian = "little")]
#[test]
fn fixture_tcp_time_wait_and_close_wait() {
    let (socks, _) = tcp(Family::Ipv4, TCP);
    let tw: Vec<_> = socks
        .iter()
        .filter(|s| s.state == TcpState::TimeWait)
        .collect();
    assert_eq!(tw.len(), 4);
    let mut ports: Vec<u16> = tw.iter().map(|s| s.remote.port()).collect();
    ports.sort();
    assert_eq!(ports, [9101, 9102, 9103, 9104]);
    for s in &tw {
        let ms = s.expires_ms.expect("TIME_WAIT timer");
        assert!(ms > 0 && ms <= 60_000, "{ms}");
        // `03:00001751` = 5969 ticks of 10 ms.
        assert_eq!(ms, 59_690);
    }

    // Orphaned FIN_WAIT2 (client close()d) is a timewait minisocket:
    // `05` with timer `03`; the shutdown(SHUT_WR) one is a full socket.
    let fw2 = |port| {
        socks
            .iter()
            .find(|s| s.state == TcpState::FinWait2 && s.remote.port() == port)
            .unwrap()
    };
    assert_eq!(fw2(9200).expires_ms, Some(59_700));
    assert_eq!(fw2(9300).expires_ms, None);

    // A received FIN counts 1 in rx_queue.
    for s in socks.iter().filter(|s| s.state == TcpState::CloseWait) {
        assert!(matches!(s.queues, TcpQueues::Bytes { recv: 1, .. }));
        assert!([9200, 9300].contains(&s.local.port()));
    }
}

#[cfg(target_endian = "little")]
#[test]
fn fixture_tcp6_addresses() {
    let (socks, _) = tcp(Family::Ipv6, TCP6);
    let l = socks.iter().find(|s| s.state == TcpState::Listen).unwrap();
    assert_eq!(l.local, v4("[::]:8443"));
    assert_eq!(l.remote, v4("[::]:0"));
    assert_eq!(rx(l), 0);

    let mapped: SocketAddr = "[::ffff:127.0.0.1]:8443".parse().unwrap();
    assert_eq!(socks.iter().filter(|s| s.local == mapped).count(), 1);
    let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let on_lo = socks
        .iter()
        .filter(|s| s.local.ip() == lo && s.remote.ip() == lo)
        .count();
    assert_eq!(on_lo, 2);
    assert!(
        socks
            .iter()
            .any(|s| s.local == v4("[::1]:8443") && s.state == TcpState::Established)
    );
}

#[test]
fn fixture_tcp_wrong_family_is_all_errors() {
    assert_eq!(tcp(Family::Ipv4, TCP6).1, stats(0, 4));
    assert_eq!(tcp(Family::Ipv6, TCP).1, stats(0, 38));
}

/// Every socket `ss -tan` (inet_diag) saw at the same moment matches one
/// parsed procfs line: state, addresses and receive queue.
#[cfg(target_endian = "little")]
#[test]
fn fixture_tcp_matches_ss() {
    fn ss_state(s: &str) -> TcpState {
        match s {
            "ESTAB" => TcpState::Established,
            "SYN-SENT" => TcpState::SynSent,
            "SYN-RECV" => TcpState::SynRecv,
            "FIN-WAIT-1" => TcpState::FinWait1,
            "FIN-WAIT-2" => TcpState::FinWait2,
            "TIME-WAIT" => TcpState::TimeWait,
            "UNCONN" => TcpState::Close,
            "CLOSE-WAIT" => TcpState::CloseWait,
            "LAST-ACK" => TcpState::LastAck,
            "LISTEN" => TcpState::Listen,
            "CLOSING" => TcpState::Closing,
            other => panic!("ss state {other}"),
        }
    }
    fn ss_addr(s: &str) -> SocketAddr {
        let s = match s.strip_prefix("*:") {
            Some(port) => format!("[::]:{port}"),
            None => s.to_owned(),
        };
        let s = match s.strip_suffix(":*") {
            Some(host) => format!("{host}:0"),
            None => s,
        };
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    let mut from_ss: Vec<_> = SS_TAN
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                ss_state(f[0]),
                ss_addr(f[3]),
                ss_addr(f[4]),
                f[1].parse::<u32>().unwrap(),
            )
        })
        .collect();
    let mut ours: Vec<_> = tcp(Family::Ipv4, TCP)
        .0
        .into_iter()
        .chain(tcp(Family::Ipv6, TCP6).0)
        .map(|s| (s.state, s.local, s.remote, rx(&s)))
        .collect();
    from_ss.sort();
    ours.sort();
    assert_eq!(ours, from_ss);
}

#[test]
fn fixture_unix_states_and_names() {
    let (socks, st) = unix(UNIX);
    assert_eq!(st, stats(16, 0));
    let mut by_state = BTreeMap::new();
    let mut by_type = BTreeMap::new();
    for s in &socks {
        *by_state.entry(s.state).or_insert(0) += 1;
        *by_type.entry(s.sock_type).or_insert(0) += 1;
        assert_eq!(s.listen_queue, None);
    }
    assert_eq!(
        by_state,
        BTreeMap::from([
            (UnixState::Unconnected, 2),
            (UnixState::Connecting, 3),
            (UnixState::Connected, 9),
            (UnixState::Listen, 2),
        ])
    );
    assert_eq!(
        by_type,
        BTreeMap::from([
            (UnixType::Stream, 12),
            (UnixType::Dgram, 2),
            (UnixType::Seqpacket, 2),
        ])
    );

    let spaced = Some(UnixName::Path("/tmp/sockscope-fixture/my app.sock".into()));
    let count = |state, name: &Option<UnixName>| {
        socks
            .iter()
            .filter(|s| s.state == state && &s.name == name)
            .count()
    };
    assert_eq!(count(UnixState::Listen, &spaced), 1);
    assert_eq!(count(UnixState::Connecting, &spaced), 3, "3 queued embryos");
    assert_eq!(count(UnixState::Connected, &spaced), 0);

    let abs = Some(UnixName::Abstract("sockscope-test".into()));
    assert_eq!(count(UnixState::Listen, &abs), 1);
    assert_eq!(count(UnixState::Connected, &abs), 1, "accepted connection");
    assert_eq!(
        abs.as_ref().map(ToString::to_string).as_deref(),
        Some("@sockscope-test")
    );

    // Embedded NUL printed as '@'.
    let nul = socks
        .iter()
        .find(|s| s.name == Some(UnixName::Abstract("sock@scope".into())))
        .unwrap();
    assert_eq!(
        (nul.sock_type, nul.state),
        (UnixType::Dgram, UnixState::Unconnected)
    );

    assert_eq!(socks.iter().filter(|s| s.name.is_none()).count(), 9);
    let listeners_stream = socks
        .iter()
        .filter(|s| s.state == UnixState::Listen)
        .all(|s| s.sock_type == UnixType::Stream);
    assert!(listeners_stream);
}

/// unix_diag (`ss -xa`) lists every socket but the St 02 embryos, and shows
/// the same names.
#[test]
fn fixture_unix_matches_ss() {
    let (socks, _) = unix(UNIX);
    let ss_lines = SS_XA.lines().skip(1).count();
    let not_embryo = socks
        .iter()
        .filter(|s| s.state != UnixState::Connecting)
        .count();
    assert_eq!(not_embryo, ss_lines);
    for name in socks.iter().filter_map(|s| s.name.as_ref()) {
        assert!(SS_XA.contains(&name.to_string()), "{name}");
    }
}

// ---------------------------------------------------------------------------
// Hand-written lines
// ---------------------------------------------------------------------------

#[test]
fn tcp_malformed_lines_are_counted_and_skipped() {
    let good = [
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0 9047 10 00000000e690e59c 100 0 0 10 0                     ",
        // TIME_WAIT: 12 fields.
        "   6: 0100007F:867E 0100007F:238D 06 00000000:00000000 03:00001751 00000000     0        0 0 3 00000000e31e2311",
        // A request socket (get_openreq4): 03 with the SYN-ACK timer.
        "   7: 0100007F:1F90 0100007F:A8F0 03 00000000:00000000 01:00000064 00000002     0        0 0 1 0000000000000000",
        // Lower-case hex and a 16-digit `when` are accepted.
        "   8: 0100007f:1f90 0100007F:A8F0 01 00000000:00000000 02:FFFFFFFFFFFFFFFF 00000000  1000        0 123",
    ];
    let bad: &[&[u8]] = &[
        b"   1: 0100007F:1F90 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0",
        b"   2: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1",
        b"   3: 0100007F:1F90 00000000:0000 00 00000000:00000000 00:00000000 00000000     0        0 1",
        b"   4: 0100007F:1F90 00000000:0000 0D 00000000:00000000 00:00000000 00000000     0        0 1",
        b"   5: 00000000000000000000000001000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
        b"   6: 0100007F:1F900 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1",
        b"   7: 0100007F:1F90 00000000:0000 0A 00000000-00000000 00:00000000 00000000     0        0 1",
        b"   8: 0100007F:1F90 00000000:0000 0A 00000000:1FFFFFFFF 00:00000000 00000000     0        0 1",
        "   9: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 caf\u{e9}".as_bytes(),
        b"  10: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 \xff",
        b"0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0",
        b"  11: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0      abc 1",
        b"  12: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00:00000000 00000000     0        0 1",
        b"  13: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 -1",
        b"  14: 0100007F: 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1",
        b"  15: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:000000000000000000 0 0 0 1",
    ];
    let mut data = Vec::from(TCP_HEADER.as_bytes());
    data.push(b'\n');
    for (i, b) in bad.iter().enumerate() {
        data.extend_from_slice(good[i % good.len()].as_bytes());
        data.extend_from_slice(b"\n\n   \t\r\n");
        data.extend_from_slice(b);
        data.push(b'\n');
    }
    let (socks, st) = tcp(Family::Ipv4, &data);
    assert_eq!(st, stats(bad.len() as u64, bad.len() as u64));
    for (i, s) in socks.iter().enumerate() {
        assert_eq!(
            s,
            &parse_tcp_line(Family::Ipv4, good[i % 4].as_bytes()).unwrap()
        );
    }
    for b in bad {
        assert_eq!(
            parse_tcp_line(Family::Ipv4, b),
            None,
            "{}",
            b.escape_ascii()
        );
    }

    let tw = parse_tcp_line(Family::Ipv4, good[1].as_bytes()).unwrap();
    assert_eq!(tw.state, TcpState::TimeWait);
    assert_eq!(tw.expires_ms, Some(59_690));
    let req = parse_tcp_line(Family::Ipv4, good[2].as_bytes()).unwrap();
    assert_eq!(req.state, TcpState::SynRecv);
    assert_eq!(req.expires_ms, Some(1_000));
    let sat = parse_tcp_line(Family::Ipv4, good[3].as_bytes()).unwrap();
    assert_eq!(sat.expires_ms, Some(u32::MAX));
    #[cfg(target_endian = "little")]
    assert_eq!(sat.local, v4("127.0.0.1:8080"));
}

#[test]
fn tcp_last_line_without_newline_and_empty_input() {
    let line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0 9047";
    let data = format!("{TCP_HEADER}\n{line}");
    assert_eq!(tcp(Family::Ipv4, data.as_bytes()).1, stats(1, 0));
    assert_eq!(tcp(Family::Ipv4, b"").1, stats(0, 0));
    // The first line is the header, whatever it holds.
    assert_eq!(tcp(Family::Ipv4, line.as_bytes()).1, stats(0, 0));
}

#[test]
fn tcp_ipv6_words_are_host_order() {
    let line = b"   2: 00000000000000000000000001000000:B506 0000000000000000FFFF00000100007F:20FB 01 00000000:00000000 00:00000000 00000000     0        0 9084";
    let s = parse_tcp_line(Family::Ipv6, line).unwrap();
    #[cfg(target_endian = "little")]
    {
        assert_eq!(s.local, v4("[::1]:46342"));
        assert_eq!(
            s.remote,
            SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), 8443)
        );
    }
    assert_eq!(s.family, Family::Ipv6);
    assert_eq!(parse_tcp_line(Family::Ipv4, line), None);
}

#[test]
fn unix_special_lines() {
    let cases: &[(&[u8], Option<UnixSocket>)] = &[
        (
            b"000000009b287365: 00000002 00000000 00010000 0001 01  9088 /tmp/sockscope-fixture/my app.sock",
            Some(sock(
                UnixType::Stream,
                UnixState::Listen,
                Some(UnixName::Path("/tmp/sockscope-fixture/my app.sock".into())),
            )),
        ),
        // Embryo: St 02, inode 0, the listener's path.
        (
            b"000000005f755f38: 00000003 00000000 00000000 0001 02     0 /tmp/a b",
            Some(sock(
                UnixType::Stream,
                UnixState::Connecting,
                Some(UnixName::Path("/tmp/a b".into())),
            )),
        ),
        (
            b"0000000000000000: 00000002 00000000 00000000 0005 04  1 ",
            None,
        ),
        (
            b"0000000000000000: 00000002 00000000 00000000 0005 04 12",
            Some(sock(UnixType::Seqpacket, UnixState::Disconnecting, None)),
        ),
        // Relative path with a leading space: two spaces after the inode.
        (
            b"00000000563c444c: 00000002 00000000 00000000 0002 01  9193  lead",
            Some(sock(
                UnixType::Dgram,
                UnixState::Unconnected,
                Some(UnixName::Path(" lead".into())),
            )),
        ),
        // Trailing spaces are part of the name.
        (
            b"00000000563c444c: 00000002 00000000 00000000 0002 01  9193 /x  ",
            Some(sock(
                UnixType::Dgram,
                UnixState::Unconnected,
                Some(UnixName::Path("/x  ".into())),
            )),
        ),
        // Not UTF-8: replaced, not an error.
        (
            b"000000007584df25: 00000002 00000000 00000000 0002 01  9196 /tmp/sx/\xff\xfe",
            Some(sock(
                UnixType::Dgram,
                UnixState::Unconnected,
                Some(UnixName::Path("/tmp/sx/\u{fffd}\u{fffd}".into())),
            )),
        ),
        // Zero-length abstract name, autobind name.
        (
            b"000000003b9ae180: 00000002 00000000 00000000 0002 01  9195 @",
            Some(sock(
                UnixType::Dgram,
                UnixState::Unconnected,
                Some(UnixName::Abstract(String::new())),
            )),
        ),
        (
            b"00000000205cc7fb: 00000002 00000000 00000000 0002 01  9197 @7000f",
            Some(sock(
                UnixType::Dgram,
                UnixState::Unconnected,
                Some(UnixName::Abstract("7000f".into())),
            )),
        ),
        // Malformed.
        (b"000000009b287365: 00000002 00000000 00010000 0001", None),
        (b"000000009b287365: 00000002 00000000 00000000 0001 05 1", None),
        (b"000000009b287365: 00000002 00000000 00000000 0003 01 1", None),
        (b"000000009b287365 00000002 00000000 00000000 0001 01 1", None),
        (b"000000009b287365: 00000002 00000000 00000000 0001 01 12a", None),
        (b"000000009b287365: 00000002 00000000 0001000G 0001 01 1", None),
        (b"10000000009b287365: 00000002 00000000 00000000 0001 01 1", None),
        (b"\xff000000009b287365: 00000002 00000000 00000000 0001 01 1", None),
        (b"000000009b287365:\t00000002 00000000 00000000 0001 01 1", None),
    ];
    for (line, want) in cases {
        assert_eq!(&parse_unix_line(line), want, "{}", line.escape_ascii());
    }

    let mut data = Vec::from(UNIX_HEADER.as_bytes());
    for (line, _) in cases {
        data.extend_from_slice(b"\n\n  \n");
        data.extend_from_slice(line);
    }
    let ok = cases.iter().filter(|(_, w)| w.is_some()).count() as u64;
    let (socks, st) = unix(&data);
    assert_eq!(st, stats(ok, cases.len() as u64 - ok));
    let want: Vec<_> = cases.iter().filter_map(|(_, w)| w.clone()).collect();
    assert_eq!(socks, want);
}

fn sock(sock_type: UnixType, state: UnixState, name: Option<UnixName>) -> UnixSocket {
    UnixSocket {
        sock_type,
        state,
        name,
        listen_queue: None,
    }
}

/// Kernel surprise: a filesystem path containing `\n` splits its line; the
/// head is a record with a truncated path, the tail a parse error.
/// (Captured from 6.18 with `bind("/tmp/sx/nl\nx.sock")`.)
#[test]
fn unix_path_with_newline_splits_line() {
    let data = b"Num       RefCount Protocol Flags    Type St Inode Path\n\
000000002014a670: 00000002 00000000 00000000 0002 01  9191 /tmp/sx/nl\n\
x.sock\n\
0000000058ec07dc: 00000002 00000000 00000000 0002 01  9192 @rel.sock\n";
    let (socks, st) = unix(data);
    assert_eq!(st, stats(2, 1));
    assert_eq!(socks[0].name, Some(UnixName::Path("/tmp/sx/nl".into())));
    // A relative path "@rel.sock" is indistinguishable from an abstract name.
    assert_eq!(socks[1].name, Some(UnixName::Abstract("rel.sock".into())));
}

#[test]
fn io_error_is_returned_after_delivered_lines() {
    struct Fail;
    impl Read for Fail {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("boom"))
        }
    }
    let tcp_data = format!(
        "{TCP_HEADER}\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0 9047\n"
    );
    let mut n = 0;
    let r = parse_tcp(
        Family::Ipv4,
        BufReader::new(Cursor::new(tcp_data).chain(Fail)),
        &mut |_| n += 1,
    );
    assert_eq!(r.unwrap_err().to_string(), "boom");
    assert_eq!(n, 1);

    let unix_data =
        format!("{UNIX_HEADER}\n0000000000000000: 00000002 00000000 00000000 0002 01  1\n");
    let mut n = 0;
    let r = parse_unix(
        BufReader::new(Cursor::new(unix_data).chain(Fail)),
        &mut |_| n += 1,
    );
    assert!(r.is_err());
    assert_eq!(n, 1);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// Formats a socket the way `get_tcp4_sock()` / `get_timewait4_sock()` and
/// the tcp6 twins do (tcp4 lines padded to 149 columns).
fn kernel_tcp_line(i: usize, s: &TcpSocket) -> String {
    let addr = |a: &SocketAddr| {
        let hex: String = match a.ip() {
            IpAddr::V4(ip) => format!("{:08X}", u32::from_ne_bytes(ip.octets())),
            IpAddr::V6(ip) => ip
                .octets()
                .chunks_exact(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
                .collect(),
        };
        format!("{hex}:{:04X}", a.port())
    };
    let (tr, when) = match s.expires_ms {
        None => (0, 0),
        Some(ms) if s.state == TcpState::TimeWait => (3, ms / 10),
        Some(ms) => (1, ms / 10),
    };
    let head = format!(
        "{i:4}: {} {} {:02X} {:08X}:{:08X} {tr:02X}:{when:08X}",
        addr(&s.local),
        addr(&s.remote),
        s.state as u8,
        match s.queues {
            TcpQueues::Bytes { send, .. } => send,
            TcpQueues::Accept(_) => 0,
        },
        rx(s)
    );
    let line = if s.state == TcpState::TimeWait {
        format!("{head} 00000000     0        0 0 3 0000000000000000")
    } else {
        format!("{head} 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1")
    };
    match s.family {
        Family::Ipv4 => format!("{line:<149}"),
        Family::Ipv6 => line,
    }
}

/// Formats a socket the way `unix_seq_show()` does.
fn kernel_unix_line(i: usize, s: &UnixSocket) -> Vec<u8> {
    let ty = match s.sock_type {
        UnixType::Stream => 1,
        UnixType::Dgram => 2,
        UnixType::Seqpacket => 5,
    };
    let (flags, st) = match s.state {
        UnixState::Listen => (0x10000, 1),
        UnixState::Unconnected => (0, 1),
        UnixState::Connecting => (0, 2),
        UnixState::Connected => (0, 3),
        UnixState::Disconnecting => (0, 4),
    };
    let mut line = format!(
        "{:016x}: {:08X} {:08X} {flags:08X} {ty:04X} {st:02X} {:5}",
        i * 64,
        2,
        0,
        i
    );
    if let Some(name) = &s.name {
        line.push(' ');
        line.push_str(&name.to_string());
    }
    line.into_bytes()
}

fn tcp_socket(family: Family) -> BoxedStrategy<TcpSocket> {
    let ip = match family {
        Family::Ipv4 => any::<[u8; 4]>().prop_map(IpAddr::from).boxed(),
        Family::Ipv6 => any::<[u8; 16]>().prop_map(IpAddr::from).boxed(),
    };
    let addr = (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port));
    (
        addr.clone(),
        addr,
        1u8..=11,
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(0..=u32::MAX / 10),
    )
        .prop_map(move |(local, remote, st, recv, send, ticks)| {
            let state = TcpState::from_kernel(st).unwrap();
            TcpSocket {
                family,
                state,
                local,
                remote,
                queues: match state {
                    TcpState::Listen => TcpQueues::Accept(ListenQueue {
                        queued: recv,
                        limit: None,
                        drops: None,
                    }),
                    _ => TcpQueues::Bytes { recv, send },
                },
                expires_ms: ticks.map(|t| t * 10),
            }
        })
        .boxed()
}

fn unix_socket() -> BoxedStrategy<UnixSocket> {
    let name = prop_oneof![
        Just(None),
        "[^\n@][^\n]{0,40}".prop_map(|p| Some(UnixName::Path(p))),
        "[^\n]{0,40}".prop_map(|a| Some(UnixName::Abstract(a))),
    ];
    (
        proptest::sample::select(UnixType::ALL.to_vec()),
        proptest::sample::select(UnixState::ALL.to_vec()),
        name,
    )
        .prop_map(|(t, s, n)| sock(t, s, n))
        .boxed()
}

#[derive(Debug, Clone)]
enum Line<T> {
    Valid(T),
    Junk(Vec<u8>),
}

/// Bytes without `\n`: random, printable ASCII, or spaces only.
fn junk() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..200
        ),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        "[ \t\r]{0,5}".prop_map(String::into_bytes),
    ]
    .boxed()
}

/// A valid line with one byte replaced or the line cut short.
fn mutate(line: Vec<u8>, at: prop::sample::Index, byte: u8, cut: bool) -> Vec<u8> {
    let mut line = line;
    if line.is_empty() {
        return line;
    }
    let i = at.index(line.len());
    if cut {
        line.truncate(i);
    } else if byte != b'\n' {
        line[i] = byte;
    }
    line
}

fn lines<T: std::fmt::Debug + Clone + 'static>(
    valid: BoxedStrategy<T>,
    fmt: fn(usize, &T) -> Vec<u8>,
) -> impl Strategy<Value = Vec<Line<T>>> {
    let one = prop_oneof![
        3 => valid.clone().prop_map(Line::Valid),
        2 => junk().prop_map(Line::Junk),
        2 => (valid, any::<prop::sample::Index>(), any::<u8>(), any::<bool>())
            .prop_map(move |(v, at, b, cut)| Line::Junk(mutate(fmt(7, &v), at, b, cut))),
    ];
    proptest::collection::vec(one, 0..40)
}

fn assemble<T>(
    header: &str,
    lines: &[Line<T>],
    trailing_newline: bool,
    fmt: impl Fn(usize, &T) -> Vec<u8>,
) -> Vec<u8> {
    let mut data = Vec::from(header.as_bytes());
    for (i, l) in lines.iter().enumerate() {
        data.push(b'\n');
        match l {
            Line::Valid(v) => data.extend(fmt(i, v)),
            Line::Junk(j) => data.extend_from_slice(j),
        }
    }
    if trailing_newline {
        data.push(b'\n');
    }
    data
}

/// Asserts the `Valid` entries of `lines` appear, in order, in `got`
/// (junk that happens to parse may sit between them).
fn assert_subsequence<T: PartialEq + std::fmt::Debug>(lines: &[Line<T>], got: &[T]) {
    let mut it = got.iter();
    for l in lines {
        if let Line::Valid(want) = l {
            assert!(it.any(|g| g == want), "missing {want:?}");
        }
    }
}

fn tcp4_bytes(i: usize, s: &TcpSocket) -> Vec<u8> {
    kernel_tcp_line(i, s).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let want = expected_lines(&data);
        for family in Family::ALL {
            let st = parse_tcp(family, &data[..], &mut |_| {}).unwrap();
            prop_assert_eq!(st.records + st.parse_errors, want);
        }
        let st = parse_unix(&data[..], &mut |_| {}).unwrap();
        prop_assert_eq!(st.records + st.parse_errors, want);
    }

    #[test]
    fn prop_tcp4_lines_after_header(
        lines in lines(tcp_socket(Family::Ipv4), tcp4_bytes),
        nl in any::<bool>(),
    ) {
        let data = assemble(TCP_HEADER, &lines, nl, tcp4_bytes);
        let (got, st) = tcp(Family::Ipv4, &data);
        prop_assert_eq!(st.records + st.parse_errors, expected_lines(&data));
        assert_subsequence(&lines, &got);
    }

    #[test]
    fn prop_tcp6_lines_after_header(
        lines in lines(tcp_socket(Family::Ipv6), tcp4_bytes),
        nl in any::<bool>(),
    ) {
        let data = assemble(TCP_HEADER, &lines, nl, tcp4_bytes);
        let (got, st) = tcp(Family::Ipv6, &data);
        prop_assert_eq!(st.records + st.parse_errors, expected_lines(&data));
        assert_subsequence(&lines, &got);
        // The same lines read as the other family are all errors.
        let st4 = parse_tcp(Family::Ipv4, &data[..], &mut |_| {}).unwrap();
        let valid = lines.iter().filter(|l| matches!(l, Line::Valid(_))).count() as u64;
        prop_assert!(st4.parse_errors >= valid);
    }

    #[test]
    fn prop_unix_lines_after_header(
        lines in lines(unix_socket(), kernel_unix_line),
        nl in any::<bool>(),
    ) {
        let data = assemble(UNIX_HEADER, &lines, nl, kernel_unix_line);
        let (got, st) = unix(&data);
        prop_assert_eq!(st.records + st.parse_errors, expected_lines(&data));
        assert_subsequence(&lines, &got);
    }
}

/// `rx_queue`: the accept queue of a listener, bytes otherwise.
fn rx(s: &TcpSocket) -> u32 {
    match s.queues {
        TcpQueues::Accept(q) => q.queued,
        TcpQueues::Bytes { recv, .. } => recv,
    }
}
