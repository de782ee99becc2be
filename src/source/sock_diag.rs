//! sock_diag netlink (`NETLINK_SOCK_DIAG`, man 7 sock_diag): the primary
//! source. inet_diag dumps TCP sockets per family, unix_diag dumps UNIX
//! sockets.
//!
//! Framing and message layouts come from `netlink-sys` and
//! `netlink-packet-core` / `netlink-packet-sock-diag`; this module only
//! walks a receive buffer and turns each message into a
//! [`TcpSocket`]/[`UnixSocket`] (pure functions, tested on byte arrays).
//! Sockets are streamed to a visitor as they arrive: the dump is never held
//! in memory (one 64 KiB receive buffer per thread, reused).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneBuffer, Emitable, ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NlasIterator, Parseable, parse_u8, parse_u32,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage, UNIX_DIAG_ICONS,
    UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    unix::{
        ShowFlags, StateFlags as UnixStateFlags, UnixRequest, UnixResponseHeader,
        nlas::Nla as UnixNla,
    },
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

use crate::model::{
    Family, ListenQueue, SocketDrops, TcpQueues, TcpSocket, TcpState, UnixName, UnixSocket,
    UnixState, UnixType,
};
use crate::source::{ReadStats, SourceError};

/// Receive buffer size. The kernel sizes dump skbs by the reader's buffer
/// (up to 32 KiB per `recvmsg`, `netlink_dump()`); 64 KiB never truncates.
const RECV_BUF: usize = 64 * 1024;

/// `nlmsg_type` of the legacy inet_diag request and its replies
/// (include/uapi/linux/inet_diag.h), which dumps both address families in
/// one walk: see [`SockDiag::dump_tcp_any_family`].
pub const TCPDIAG_GETSOCK: u16 = 18;
/// Length of the legacy `struct inet_diag_req`: family, src_len, dst_len,
/// ext (1 byte each), `struct inet_diag_sockid` (48), states, dbs (4 each).
const INET_DIAG_REQ_LEN: usize = 60;

/// inet_diag state mask of every TCP connection state: bits 1..=11, and
/// 12 (`TCP_NEW_SYN_RECV`, which the crate's `StateFlags::all()` omits) so
/// that request sockets are dumped on every kernel (the kernel reports
/// them as `TCP_SYN_RECV`). Without [`TCPF_BOUND_INACTIVE`]: asking for
/// bound-only sockets makes kernels ≥ 6.8 walk their whole bind hash (every
/// socket that holds a port, TIME_WAIT included) before the established
/// hash, 30–60 % more kernel time per census at 35k sockets; the census
/// asks for it on its own cadence (`crate::poller`).
pub const TCP_ALL_STATES: u32 = 0x1ffe;
/// `TCPF_BOUND_INACTIVE` (include/net/tcp_states.h, kernel ≥ 6.8): asks
/// inet_diag for the sockets bound with `bind()` that neither listen nor
/// connect (the bind hash walk in `inet_diag_dump_icsk()`, after the
/// listeners and before the established hash), reported with
/// `idiag_state = TCP_CLOSE` and a zero peer. Older kernels ignore the
/// bit and never show such sockets (nor does `/proc/net/tcp`).
pub const TCPF_BOUND_INACTIVE: u32 = 1 << 13;
/// inet_diag state mask of `TCP_LISTEN` only.
pub const TCP_LISTEN_ONLY: u32 = 1 << 10;
/// `INET_DIAG_SKMEMINFO` (include/uapi/linux/inet_diag.h): the attribute
/// carrying `sk_get_meminfo()`'s `u32[SK_MEMINFO_VARS]`, asked for with
/// bit `INET_DIAG_SKMEMINFO - 1` of `idiag_ext`.
pub(crate) const INET_DIAG_SKMEMINFO: u16 = 7;
/// `idiag_ext` bit of [`INET_DIAG_SKMEMINFO`]: a dump that sets it gets
/// every socket's memory figures, `sk_drops` among them (the census asks
/// for it on listener dumps only).
pub(crate) const EXT_SKMEMINFO: u8 = 1 << (INET_DIAG_SKMEMINFO - 1);
/// Index of `SK_MEMINFO_DROPS` (`sk_drops`) in that array
/// (include/uapi/linux/sock_diag.h).
pub(crate) const SK_MEMINFO_DROPS: usize = 8;
/// unix_diag state mask of every socket (`udiag_states`, matched against
/// `1 << sk_state` in `sk_diag_dump()`).
pub(crate) const UNIX_ALL_STATES: u32 = u32::MAX;
/// unix_diag state mask of listeners only (a listening UNIX socket's
/// `sk_state` is `TCP_LISTEN`).
pub(crate) const UNIX_LISTEN_ONLY: u32 = 1 << 10;

/// Layout of `struct inet_diag_msg` (include/uapi/linux/inet_diag.h),
/// read in place: the crate's `InetResponseHeader::parse` builds a whole
/// `SocketId` (and drops `idiag_expires` for TIME_WAIT sockets, timer 3),
/// which is most of the decoding cost per socket.
///
/// ```text
///  0 u8 idiag_family    1 u8 idiag_state    2 u8 idiag_timer   3 u8 idiag_retrans
///  4 struct inet_diag_sockid {
///      4 __be16 idiag_sport     6 __be16 idiag_dport
///      8 __be32 idiag_src[4]   24 __be32 idiag_dst[4]
///     40 __u32 idiag_if        44 __u32 idiag_cookie[2] }
/// 52 u32 idiag_expires  56 u32 idiag_rqueue  60 u32 idiag_wqueue
/// 64 u32 idiag_uid      68 u32 idiag_inode
/// ```
///
/// Ports and addresses are in network order, the rest in host order. An
/// IPv4 socket uses the first 4 bytes of `idiag_src`/`idiag_dst`.
mod msg {
    use std::ops::Range;
    pub(crate) const FAMILY: usize = 0;
    pub(crate) const STATE: usize = 1;
    pub(crate) const TIMER: usize = 2;
    pub(crate) const SPORT: Range<usize> = 4..6;
    pub(crate) const DPORT: Range<usize> = 6..8;
    pub(crate) const SRC: Range<usize> = 8..24;
    pub(crate) const DST: Range<usize> = 24..40;
    /// `idiag_cookie[2]`: the socket cookie, low word first.
    pub(crate) const COOKIE_LO: Range<usize> = 44..48;
    pub(crate) const COOKIE_HI: Range<usize> = 48..52;
    pub(crate) const EXPIRES: Range<usize> = 52..56;
    pub(crate) const RQUEUE: Range<usize> = 56..60;
    /// For LISTEN: `sk_max_ack_backlog`.
    pub(crate) const WQUEUE: Range<usize> = 60..64;
    /// Length of `struct inet_diag_msg`.
    pub(crate) const LEN: usize = 72;
}

/// One netlink message found in a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A `SOCK_DIAG_BY_FAMILY` message's payload (one socket).
    Socket(&'a [u8]),
    /// `NLMSG_DONE`, carrying the dump's final error code (0 = success;
    /// negative errno otherwise).
    Done(i32),
    /// `NLMSG_ERROR` with a non-zero (negative errno) code.
    Error(i32),
    /// A message of another type, or one whose sequence number is not the
    /// request's (ignored).
    Other,
}

/// Splits a receive buffer into netlink messages (`NLMSG_ALIGN`ed).
///
/// Calls `on_frame` for each; stops at the first `Done`/`Error` and returns
/// `Ok(true)` when one was seen. A truncated or inconsistent header is a
/// decode error: the rest of the buffer cannot be framed.
pub fn walk_frames<'a>(
    mut buf: &'a [u8],
    seq: u32,
    mut on_frame: impl FnMut(Frame<'a>),
) -> Result<bool, netlink_packet_core::DecodeError> {
    while !buf.is_empty() {
        let msg = NetlinkBuffer::new_checked(buf)?;
        let len = msg.length() as usize;
        let frame = if msg.sequence_number() != seq {
            Frame::Other
        } else {
            match msg.message_type() {
                NLMSG_DONE => {
                    // Older kernels send a DONE without a code.
                    let code = DoneBuffer::new_checked(msg.payload())
                        .map(|d| d.code())
                        .unwrap_or(0);
                    Frame::Done(code)
                }
                NLMSG_ERROR => {
                    let e = ErrorBuffer::new_checked(msg.payload())?;
                    match e.code() {
                        Some(code) => Frame::Error(code.get()),
                        None => Frame::Other, // an ACK
                    }
                }
                SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => Frame::Socket(msg.payload()),
                _ => Frame::Other,
            }
        };
        let end = matches!(frame, Frame::Done(_) | Frame::Error(_));
        on_frame(frame);
        if end {
            return Ok(true);
        }
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    Ok(false)
}

/// Decodes one inet_diag response (`struct inet_diag_msg` plus attributes)
/// into a [`TcpSocket`]. Of the attributes only `INET_DIAG_SKMEMINFO` is
/// read, for a listener (its `sk_drops` and cookie become
/// [`ListenQueue::drops`]); the attributes are walked only when the
/// socket is a listener.
///
/// Errors: payload shorter than `inet_diag_msg`, a family other than
/// `AF_INET`/`AF_INET6`, a state outside 1..=12, a malformed attribute or
/// an `INET_DIAG_SKMEMINFO` too short to hold `SK_MEMINFO_DROPS`.
pub fn decode_inet(payload: &[u8]) -> Result<TcpSocket, netlink_packet_core::DecodeError> {
    let Some(m) = payload.first_chunk::<{ msg::LEN }>() else {
        return Err(format!("inet_diag_msg too short: {} bytes", payload.len()).into());
    };
    let u32_at =
        |r: std::ops::Range<usize>| u32::from_ne_bytes(m[r].try_into().expect("4-byte range"));
    let port_at =
        |r: std::ops::Range<usize>| u16::from_be_bytes(m[r].try_into().expect("2-byte range"));
    let (family, local_ip, remote_ip) = match m[msg::FAMILY] {
        AF_INET => {
            let v4 = |at: usize| -> IpAddr {
                Ipv4Addr::from(<[u8; 4]>::try_from(&m[at..at + 4]).expect("4 bytes")).into()
            };
            (Family::Ipv4, v4(msg::SRC.start), v4(msg::DST.start))
        }
        AF_INET6 => {
            let v6 = |r: std::ops::Range<usize>| -> IpAddr {
                Ipv6Addr::from(<[u8; 16]>::try_from(&m[r]).expect("16 bytes")).into()
            };
            (Family::Ipv6, v6(msg::SRC), v6(msg::DST))
        }
        f => return Err(format!("unexpected inet_diag family {f}").into()),
    };
    let state = m[msg::STATE];
    let state =
        TcpState::from_kernel(state).ok_or_else(|| format!("unexpected TCP state {state}"))?;
    // Timers 1..=4 (retransmit, keepalive, TIME_WAIT, zero-window probe)
    // carry a time left; 0 is none.
    let expires_ms = (1..=4)
        .contains(&m[msg::TIMER])
        .then(|| u32_at(msg::EXPIRES));
    let (rqueue, wqueue) = (u32_at(msg::RQUEUE), u32_at(msg::WQUEUE));
    let queues = match state {
        TcpState::Listen => TcpQueues::Accept(ListenQueue {
            queued: rqueue,
            limit: Some(wqueue),
            drops: listener_drops(payload, u32_at(msg::COOKIE_LO), u32_at(msg::COOKIE_HI))?,
        }),
        _ => TcpQueues::Bytes {
            recv: rqueue,
            send: wqueue,
        },
    };
    Ok(TcpSocket {
        family,
        state,
        local: SocketAddr::new(local_ip, port_at(msg::SPORT)),
        remote: SocketAddr::new(remote_ip, port_at(msg::DPORT)),
        queues,
        expires_ms,
    })
}

/// The `sk_drops` of a listener's `INET_DIAG_SKMEMINFO` attribute, with
/// its cookie (`idiag_cookie[0]` low, `[1]` high); `None` when the reply
/// has no such attribute (the request did not ask for it).
fn listener_drops(
    payload: &[u8],
    cookie_lo: u32,
    cookie_hi: u32,
) -> Result<Option<SocketDrops>, netlink_packet_core::DecodeError> {
    for nla in NlasIterator::new(&payload[msg::LEN..]) {
        let nla = nla?;
        if nla.kind() != INET_DIAG_SKMEMINFO {
            continue;
        }
        let at = SK_MEMINFO_DROPS * 4;
        let drops = nla
            .value()
            .get(at..at + 4)
            .ok_or("INET_DIAG_SKMEMINFO without SK_MEMINFO_DROPS")?;
        return Ok(Some(SocketDrops {
            cookie: u64::from(cookie_lo) | u64::from(cookie_hi) << 32,
            drops: u32::from_ne_bytes(drops.try_into().expect("4 bytes")),
        }));
    }
    Ok(None)
}

/// Decodes one unix_diag response (`struct unix_diag_msg` + `UNIX_DIAG_*`
/// attributes) into a [`UnixSocket`].
///
/// State mapping (sk_state → `/proc/net/unix` St): `TCP_LISTEN` → listen,
/// `TCP_ESTABLISHED` → connected, anything else → unconnected. unix_diag
/// skips sockets without an inode (`sk_diag_dump()`), i.e. embryos that
/// `/proc/net/unix` shows as `SS_CONNECTING`: a listener's
/// `UNIX_DIAG_RQLEN` (queued, backlog) counts them instead.
pub fn decode_unix(payload: &[u8]) -> Result<UnixSocket, netlink_packet_core::DecodeError> {
    // The fixed `struct unix_diag_msg` through the crate (no allocation);
    // the attributes are walked in place rather than collected into the
    // crate's `UnixResponse` (a `Vec` of owned values per socket).
    let header = UnixResponseHeader::parse(payload)?;
    let sock_type = UnixType::from_kernel(u32::from(header.kind))
        .ok_or_else(|| format!("unexpected unix socket type {}", header.kind))?;
    let state = match header.state {
        10 => UnixState::Listen,
        1 => UnixState::Connected,
        _ => UnixState::Unconnected,
    };
    let mut name = None;
    let mut listen_queue = None;
    for nla in NlasIterator::new(&payload[UNIX_DIAG_MSG_LEN..]) {
        let nla = nla?;
        let value = nla.value();
        match nla.kind() {
            UNIX_DIAG_NAME => name = Some(unix_name(value)?),
            UNIX_DIAG_RQLEN => {
                let (queued, limit) = value
                    .split_first_chunk::<4>()
                    .filter(|(_, rest)| rest.len() == 4)
                    .ok_or("invalid UNIX_DIAG_RQLEN")?;
                if state == UnixState::Listen {
                    listen_queue = Some(ListenQueue {
                        queued: u32::from_ne_bytes(*queued),
                        limit: Some(u32::from_ne_bytes(limit.try_into().expect("4 bytes"))),
                        drops: None,
                    });
                }
            }
            // Not needed: checked as the crate would, without allocating.
            UNIX_DIAG_PEER => {
                parse_u32(value)?;
            }
            UNIX_DIAG_ICONS if !value.len().is_multiple_of(4) => {
                return Err("invalid UNIX_DIAG_ICONS".into());
            }
            UNIX_DIAG_ICONS => {}
            UNIX_DIAG_SHUTDOWN => {
                parse_u8(value)?;
            }
            _ => {
                UnixNla::parse(&nla)?;
            }
        }
    }
    Ok(UnixSocket {
        sock_type,
        state,
        name,
        listen_queue,
    })
}

/// Length of `struct unix_diag_msg` (include/uapi/linux/unix_diag.h).
const UNIX_DIAG_MSG_LEN: usize = 16;

/// A `UNIX_DIAG_NAME` value: a NUL-terminated path, or an abstract name
/// (a leading NUL), which /proc/net/unix and ss print with every NUL as
/// '@'. Bytes that are not UTF-8 are replaced.
fn unix_name(value: &[u8]) -> Result<UnixName, netlink_packet_core::DecodeError> {
    fn lossy(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
    match value.split_first() {
        Some((0, abstract_name)) => Ok(UnixName::Abstract(lossy(
            abstract_name
                .iter()
                .map(|&b| if b == 0 { b'@' } else { b })
                .collect(),
        ))),
        _ => {
            let path = CStr::from_bytes_with_nul(value)
                .map_err(|e| format!("pathname is not null-terminated: {e}"))?;
            Ok(UnixName::Path(lossy(path.to_bytes().to_vec())))
        }
    }
}

/// Decodes one inet_diag reply for `visit`, or counts it as malformed.
fn inet_socket(payload: &[u8], stats: &mut ReadStats, visit: &mut dyn FnMut(TcpSocket)) {
    match decode_inet(payload) {
        Ok(s) => {
            stats.records += 1;
            visit(s);
        }
        Err(e) => {
            stats.parse_errors += 1;
            tracing::debug!(error = %e, "skipping malformed inet_diag message");
        }
    }
}

/// The longest a dump may take before it fails with
/// [`SourceError::Timeout`] (a census of 100k sockets takes ~70 ms).
pub(crate) const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// A `NETLINK_SOCK_DIAG` socket, reused across polls. The socket belongs
/// to the network namespace it was created in, whichever namespace the
/// thread is in later.
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    any_family: bool,
    timeout: Duration,
}

impl SockDiag {
    /// Opens and binds the netlink socket; each dump must end within
    /// [`DUMP_TIMEOUT`].
    ///
    /// Errors: `socket(2)`/`bind(2)` failures, e.g. `EPERM`/`EACCES` under a
    /// seccomp or LSM policy, `EAFNOSUPPORT` without CONFIG_INET_DIAG.
    pub fn open() -> Result<Self, SourceError> {
        SockDiag::open_with_timeout(DUMP_TIMEOUT)
    }

    /// [`SockDiag::open`] with another time limit per dump: every
    /// `recvmsg` waits at most `timeout` (`SO_RCVTIMEO`) and the whole
    /// dump fails once `timeout` has passed since its request.
    pub(crate) fn open_with_timeout(timeout: Duration) -> Result<Self, SourceError> {
        let nl = |op| move |source| SourceError::Netlink { op, source };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(nl("socket"))?;
        socket.bind_auto().map_err(nl("bind"))?;
        socket.connect(&NlAddr::new(0, 0)).map_err(nl("connect"))?;
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(timeout))
            .map_err(nl("setsockopt(SO_RCVTIMEO)"))?;
        let mut sd = SockDiag {
            socket,
            seq: 0,
            any_family: false,
            timeout,
        };
        // An empty legacy dump (no state asked: the kernel walks nothing)
        // says whether the kernel serves it.
        sd.any_family = sd.dump_tcp_any_family(0, 0, &mut |_| {}).is_ok();
        Ok(sd)
    }

    /// True when the kernel serves [`SockDiag::dump_tcp_any_family`]
    /// (probed when the socket is opened).
    pub(crate) fn any_family(&self) -> bool {
        self.any_family
    }

    /// Dumps TCP sockets of both families whose state bit is set in
    /// `states`, in one walk of the kernel's hash tables.
    ///
    /// A `SOCK_DIAG_BY_FAMILY` request names one family, and the kernel
    /// walks the whole established hash for each, skipping the other
    /// family's sockets one by one (`inet_diag_dump_icsk()`); the legacy
    /// `TCPDIAG_GETSOCK` request (`struct inet_diag_req`) is served with
    /// `sdiag_family = AF_UNSPEC` (`inet_diag_dump_compat()`), one walk for
    /// both. Replies are the same `struct inet_diag_msg`, each with its own
    /// `idiag_family`. netlink-packet-sock-diag has no type for the legacy
    /// request, so its 60 bytes are laid out here.
    ///
    /// Errors: as [`SockDiag::dump_tcp`]; a kernel without the legacy
    /// request answers `EOPNOTSUPP`/`EINVAL` ([`SourceError::Kernel`]).
    pub(crate) fn dump_tcp_any_family(
        &mut self,
        states: u32,
        ext: u8,
        visit: &mut dyn FnMut(TcpSocket),
    ) -> Result<ReadStats, SourceError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.length = (16 + INET_DIAG_REQ_LEN) as u32;
        header.message_type = TCPDIAG_GETSOCK;
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut req = vec![0u8; 16 + INET_DIAG_REQ_LEN];
        header.emit(&mut req[..16]);
        // idiag_family (ignored: AF_UNSPEC), src_len, dst_len, ext;
        // the sockid is zero (no address or port filter) but its cookie,
        // INET_DIAG_NOCOOKIE; then idiag_states and idiag_dbs = 0.
        req[16] = AF_INET;
        req[16 + 3] = ext;
        req[16 + 4 + 40..16 + 4 + 48].fill(0xff);
        req[16 + 52..16 + 56].copy_from_slice(&states.to_ne_bytes());
        self.exchange("TCPDIAG_GETSOCK", &req, &mut |payload, stats| {
            inet_socket(payload, stats, visit)
        })
    }

    /// Dumps TCP sockets of `family` whose state bit is set in `states`
    /// (bit N = TCP state N; see [`TCP_ALL_STATES`]), with the attributes
    /// whose `idiag_ext` bits are set in `ext` (0 or [`EXT_SKMEMINFO`]).
    ///
    /// The kernel walks the listening hash before the established hash
    /// (`inet_diag_dump_icsk()`), so listeners arrive first.
    ///
    /// Errors: `send`/`recv` failures ([`SourceError::Netlink`]), an errno
    /// from the kernel ([`SourceError::Kernel`], e.g. `ENOENT` when the
    /// `inet_diag` module is not loaded), no end within the time limit
    /// ([`SourceError::Timeout`]). Malformed messages are skipped and
    /// counted in [`ReadStats::parse_errors`].
    pub(crate) fn dump_tcp(
        &mut self,
        family: Family,
        states: u32,
        ext: u8,
        visit: &mut dyn FnMut(TcpSocket),
    ) -> Result<ReadStats, SourceError> {
        let (af, socket_id) = match family {
            Family::Ipv4 => (AF_INET, SocketId::new_v4()),
            Family::Ipv6 => (AF_INET6, SocketId::new_v6()),
        };
        let req = SockDiagMessage::InetRequest(InetRequest {
            family: af,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::from_bits_retain(ext),
            states: StateFlags::from_bits_retain(states),
            socket_id,
        });
        self.dump("inet_diag", req, &mut |payload, stats| {
            inet_socket(payload, stats, visit)
        })
    }

    /// Dumps the UNIX sockets whose state bit is set in `states` (see
    /// [`UNIX_ALL_STATES`], [`UNIX_LISTEN_ONLY`]) with their names and
    /// receive-queue lengths (for a listener: queued connections and
    /// backlog).
    ///
    /// Only `UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN`: the peer's inode
    /// (`UDIAG_SHOW_PEER`, which takes the peer's lock for every socket in
    /// `unix_peer_get()`) and the inodes of a listener's queued embryos
    /// (`UDIAG_SHOW_ICONS`, which walks the queue) are not used, and
    /// asking for them made the kernel's part of the dump about a third
    /// slower (10k UNIX sockets, kernel 6.18).
    pub(crate) fn dump_unix(
        &mut self,
        states: u32,
        visit: &mut dyn FnMut(UnixSocket),
    ) -> Result<ReadStats, SourceError> {
        let req = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: UnixStateFlags::from_bits_retain(states),
            inode: 0,
            show_flags: ShowFlags::NAME | ShowFlags::RQLEN,
            cookie: [0xff; 8],
        });
        self.dump(
            "unix_diag",
            req,
            &mut |payload, stats| match decode_unix(payload) {
                Ok(s) => {
                    stats.records += 1;
                    visit(s);
                }
                Err(e) => {
                    stats.parse_errors += 1;
                    tracing::debug!(error = %e, "skipping malformed unix_diag message");
                }
            },
        )
    }

    fn dump(
        &mut self,
        request: &'static str,
        req: SockDiagMessage,
        on_socket: &mut dyn FnMut(&[u8], &mut ReadStats),
    ) -> Result<ReadStats, SourceError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, req.into());
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.exchange(request, &out, on_socket)
    }

    /// Sends the dump request `req` (sequence number `self.seq`) and reads
    /// its replies ([`SockDiag::receive`]).
    fn exchange(
        &mut self,
        request: &'static str,
        req: &[u8],
        on_socket: &mut dyn FnMut(&[u8], &mut ReadStats),
    ) -> Result<ReadStats, SourceError> {
        self.socket
            .send(req, 0)
            .map_err(|source| SourceError::Netlink { op: "send", source })?;
        self.receive(request, on_socket)
    }

    /// Reads the replies to request `self.seq` up to `NLMSG_DONE` or
    /// `NLMSG_ERROR`, within the dump's time limit.
    fn receive(
        &mut self,
        request: &'static str,
        on_socket: &mut dyn FnMut(&[u8], &mut ReadStats),
    ) -> Result<ReadStats, SourceError> {
        let seq = self.seq;
        let deadline = Instant::now() + self.timeout;
        let timeout = SourceError::Timeout {
            request,
            after: self.timeout,
        };
        let mut stats = ReadStats::default();
        RECV.with_borrow_mut(|buf| {
            loop {
                if buf.is_empty() {
                    buf.resize(RECV_BUF, 0);
                }
                if Instant::now() >= deadline {
                    return Err(timeout);
                }
                let n = {
                    let mut slice = &mut buf[..];
                    match self.socket.recv(&mut slice, 0) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timeout),
                        Err(source) => return Err(SourceError::Netlink { op: "recv", source }),
                    }
                };
                let n = n.min(buf.len());
                let mut end = None;
                let framed = walk_frames(&buf[..n], seq, |frame| match frame {
                    Frame::Socket(p) => on_socket(p, &mut stats),
                    Frame::Done(code) | Frame::Error(code) => end = Some(code),
                    Frame::Other => {}
                });
                if let Err(e) = framed {
                    // The rest of this datagram cannot be framed; the next
                    // datagram starts on a fresh header.
                    stats.parse_errors += 1;
                    tracing::debug!(error = %e, "malformed netlink frame");
                }
                match end {
                    Some(0) => return Ok(stats),
                    Some(code) => {
                        return Err(SourceError::Kernel {
                            request,
                            errno: -code,
                        });
                    }
                    None => {}
                }
            }
        })
    }
}

thread_local! {
    /// One receive buffer per thread, shared by every [`SockDiag`] it
    /// uses: a thread that polls many network namespaces in turn holds one
    /// 64 KiB buffer, not one per namespace.
    static RECV: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
#[path = "sock_diag/tests.rs"]
mod tests;
