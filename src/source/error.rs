//! Why a source could not be read, and the small fixed set of reasons the
//! `reason` label of `sockscope_source_errors_total` takes.

use std::path::PathBuf;
use std::time::Duration;

/// A source that could not be read at all (as opposed to single malformed
/// records, which are skipped and counted in
/// [`crate::source::ReadStats::parse_errors`]). Each names the file or the
/// request that failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Opening or reading a file under `--path.procfs` failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A netlink socket call (socket, bind, send, recv) failed.
    #[error("sock_diag {op}: {source}")]
    Netlink {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The kernel ended a dump with an error (`NLMSG_ERROR`, or an errno in
    /// `NLMSG_DONE`): the positive errno.
    #[error("sock_diag {request} dump failed: {}", std::io::Error::from_raw_os_error(*.errno))]
    Kernel { request: &'static str, errno: i32 },
    /// A dump did not end within its time limit; the socket is reopened.
    #[error("sock_diag {request} dump did not end within {after:?}")]
    Timeout {
        request: &'static str,
        after: Duration,
    },
    /// A `bpf(2)` call of an event source (a map read) failed.
    #[error("bpf {op}: {source}")]
    Bpf {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A file whose whole content is unusable (e.g. a sysctl that is not a
    /// number).
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// The `reason` label of `sockscope_source_errors_total`: errno names for
/// the failures seen in practice (seccomp or LSM denials, a missing
/// file or module, an unsupported request), then `errno_other`,
/// `timeout` and `parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorReason {
    Eperm,
    Eacces,
    Enoent,
    Einval,
    Eopnotsupp,
    Eafnosupport,
    Enobufs,
    /// Any other errno.
    ErrnoOther,
    Timeout,
    Parse,
}

impl ErrorReason {
    /// Every reason, in exposition order.
    pub const ALL: [ErrorReason; 10] = [
        ErrorReason::Eperm,
        ErrorReason::Eacces,
        ErrorReason::Enoent,
        ErrorReason::Einval,
        ErrorReason::Eopnotsupp,
        ErrorReason::Eafnosupport,
        ErrorReason::Enobufs,
        ErrorReason::ErrnoOther,
        ErrorReason::Timeout,
        ErrorReason::Parse,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorReason::Eperm => "eperm",
            ErrorReason::Eacces => "eacces",
            ErrorReason::Enoent => "enoent",
            ErrorReason::Einval => "einval",
            ErrorReason::Eopnotsupp => "eopnotsupp",
            ErrorReason::Eafnosupport => "eafnosupport",
            ErrorReason::Enobufs => "enobufs",
            ErrorReason::ErrnoOther => "errno_other",
            ErrorReason::Timeout => "timeout",
            ErrorReason::Parse => "parse",
        }
    }

    /// Index into `[_; ErrorReason::ALL.len()]` tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason for a positive errno (`EAGAIN`/`EWOULDBLOCK` is a receive
    /// timeout, `SO_RCVTIMEO`).
    pub(crate) fn from_errno(errno: i32) -> ErrorReason {
        match errno {
            1 => ErrorReason::Eperm,
            13 => ErrorReason::Eacces,
            2 => ErrorReason::Enoent,
            22 => ErrorReason::Einval,
            95 => ErrorReason::Eopnotsupp,
            97 => ErrorReason::Eafnosupport,
            105 => ErrorReason::Enobufs,
            11 => ErrorReason::Timeout,
            _ => ErrorReason::ErrnoOther,
        }
    }

    fn from_io(e: &std::io::Error) -> ErrorReason {
        match (e.raw_os_error(), e.kind()) {
            (Some(errno), _) => ErrorReason::from_errno(errno),
            (None, std::io::ErrorKind::InvalidData) => ErrorReason::Parse,
            (None, std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                ErrorReason::Timeout
            }
            (None, _) => ErrorReason::ErrnoOther,
        }
    }
}

impl SourceError {
    /// Its [`ErrorReason`].
    pub fn reason(&self) -> ErrorReason {
        match self {
            SourceError::Io { source, .. }
            | SourceError::Netlink { source, .. }
            | SourceError::Bpf { source, .. } => ErrorReason::from_io(source),
            SourceError::Kernel { errno, .. } => ErrorReason::from_errno(*errno),
            SourceError::Timeout { .. } => ErrorReason::Timeout,
            SourceError::Parse { .. } => ErrorReason::Parse,
        }
    }

    /// True for a file that does not exist (`ENOENT`): an optional file
    /// such as `/proc/net/tcp6` on a kernel booted with `ipv6.disable=1`
    /// is then "no data", not a failure.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, SourceError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let io = |errno| SourceError::Io {
            path: "/proc/net/tcp6".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(io(2).reason(), ErrorReason::Enoent);
        assert!(io(2).is_not_found());
        assert!(!io(13).is_not_found());
        assert_eq!(io(13).reason(), ErrorReason::Eacces);
        assert_eq!(io(5).reason(), ErrorReason::ErrnoOther);
        let nl = SourceError::Netlink {
            op: "socket",
            source: std::io::Error::from_raw_os_error(1),
        };
        assert_eq!(nl.reason(), ErrorReason::Eperm);
        let k = SourceError::Kernel {
            request: "inet_diag",
            errno: 95,
        };
        assert_eq!(k.reason(), ErrorReason::Eopnotsupp);
        assert!(k.to_string().contains("inet_diag"), "{k}");
        let recv_timeout = SourceError::Netlink {
            op: "recv",
            source: std::io::Error::from_raw_os_error(11),
        };
        assert_eq!(recv_timeout.reason(), ErrorReason::Timeout);
        for (i, r) in ErrorReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
