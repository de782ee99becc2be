//! The network namespaces of a host, as `lsns -t net` finds them: every
//! `/proc/[pid]/ns/net` (de-duplicated by inode) and every namespace bound
//! under `/run/netns` (`ip netns add`, which may hold no process at all);
//! what each is (the lowest pid in it, its `comm`, its UTS hostname, the
//! Kubernetes pod UID of its cgroup); and entering one (`setns(2)`).
//!
//! Discovery and the reads it takes are I/O; [`parse_ns_link`] and
//! [`parse_pod_uid`] are pure.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::source::{ErrorReason, SourceError};

/// The inode of a `/proc/[pid]/ns/net` link target: `net:[4026531840]`
/// (`ns_get_name()`, fs/nsfs.c). `None` for anything else.
pub(crate) fn parse_ns_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The pod UID in a `/proc/[pid]/cgroup` file, in either kubelet layout:
/// the systemd driver's `kubepods-<qos>-pod<uid>.slice` (with `_` for
/// `-`) and the cgroupfs driver's `/kubepods/<qos>/pod<uid>/`
/// (`<qos>` is absent for Guaranteed pods). `None` outside a pod.
pub(crate) fn parse_pod_uid(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        // hierarchy-ID:controller-list:cgroup-path
        let path = line.splitn(3, ':').nth(2)?;
        for part in path.split('/') {
            let uid = if let Some(slice) = part.strip_suffix(".slice") {
                slice
                    .strip_prefix("kubepods-")
                    .and_then(|r| r.rsplit_once("pod").map(|(_, uid)| uid))
                    .map(|uid| uid.replace('_', "-"))
            } else {
                part.strip_prefix("pod").map(str::to_owned)
            };
            if let Some(uid) = uid.filter(|u| is_uid(u)) {
                return Some(uid);
            }
        }
    }
    None
}

/// 8-4-4-4-12 hexadecimal digits.
fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One network namespace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The namespace's inode number, as `lsns` prints it.
    pub inode: u64,
    /// The lowest pid in it; `None` for a namespace only bound under
    /// `/run/netns`.
    pub pid: Option<u32>,
    /// Its `/run/netns` name, if it is bound there.
    pub name: Option<String>,
}

impl Found {
    /// The file to `setns(2)` into it: `/proc/PID/ns/net`, else the
    /// `/run/netns` binding.
    pub(crate) fn ns_path(&self, procfs: &Path, run_netns: &Path) -> PathBuf {
        match (self.pid, &self.name) {
            (Some(pid), _) => procfs.join(pid.to_string()).join("ns/net"),
            (None, Some(name)) => run_netns.join(name),
            (None, None) => unreachable!("a namespace is found through a pid or a name"),
        }
    }
}

/// What [`discover`] found, and the processes whose namespace it could
/// not read (a process that exited meanwhile is not counted).
#[derive(Debug, Default)]
pub struct Discovery {
    pub found: Vec<Found>,
    pub errors: Vec<DiscoveryError>,
}

/// A process whose `/proc/PID/ns/net` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryError {
    pub pid: u32,
    pub reason: ErrorReason,
}

/// Every network namespace under `procfs` (`/proc/[pid]/ns/net`) and
/// `run_netns` (`ip netns add` bindings), sorted by inode.
///
/// Reading another user's `/proc/PID/ns/net` needs `CAP_SYS_PTRACE`
/// (`EACCES` otherwise, counted in [`Discovery::errors`]); a missing
/// `run_netns` directory is no binding.
pub(crate) fn discover(procfs: &Path, run_netns: &Path) -> Discovery {
    let mut by_inode: BTreeMap<u64, Found> = BTreeMap::new();
    let mut errors = Vec::new();
    if let Ok(dir) = std::fs::read_dir(procfs) {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            match std::fs::read_link(e.path().join("ns/net")) {
                Ok(target) => {
                    if let Some(inode) = target.to_str().and_then(parse_ns_link) {
                        let f = by_inode.entry(inode).or_insert(Found {
                            inode,
                            pid: Some(pid),
                            name: None,
                        });
                        f.pid = Some(f.pid.map_or(pid, |p| p.min(pid)));
                    }
                }
                // The process exited (or is a kernel thread without one).
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => errors.push(DiscoveryError {
                    pid,
                    reason: err_reason(&err),
                }),
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(run_netns) {
        for e in dir.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // The binding is a bind mount of the nsfs inode.
            if let Ok(st) = rustix::fs::stat(e.path()) {
                let f = by_inode.entry(st.st_ino).or_insert(Found {
                    inode: st.st_ino,
                    pid: None,
                    name: None,
                });
                f.name = Some(name);
            }
        }
    }
    Discovery {
        found: by_inode.into_values().collect(),
        errors,
    }
}

fn err_reason(e: &std::io::Error) -> ErrorReason {
    e.raw_os_error()
        .map_or(ErrorReason::ErrnoOther, ErrorReason::from_errno)
}

/// The inode of the namespace `procfs/self/ns/net` names (the agent's).
///
/// # Errors
/// When the link cannot be read.
pub(crate) fn own_inode(procfs: &Path) -> Result<u64, SourceError> {
    let path = procfs.join("self/ns/net");
    let target = std::fs::read_link(&path).map_err(|source| SourceError::Io {
        path: path.clone(),
        source,
    })?;
    target
        .to_str()
        .and_then(parse_ns_link)
        .ok_or(SourceError::Parse {
            path,
            what: format!("not a net namespace link: {target:?}"),
        })
}

/// What a process in the namespace says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessInfo {
    /// `/proc/PID/comm`.
    pub comm: String,
    /// The pod UID of `/proc/PID/cgroup` ([`parse_pod_uid`]), empty
    /// elsewhere.
    pub pod_uid: String,
}

/// Reads `comm` and the pod UID of `pid`; empty strings for what cannot
/// be read (the process may have exited).
pub(crate) fn process_info(procfs: &Path, pid: u32) -> ProcessInfo {
    let dir = procfs.join(pid.to_string());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    ProcessInfo {
        comm: read("comm").trim_end().to_owned(),
        pod_uid: parse_pod_uid(&read("cgroup")).unwrap_or_default(),
    }
}

/// An open namespace file (`/proc/PID/ns/net`, a `/run/netns` binding,
/// `/proc/PID/ns/uts`): the namespace itself, whatever happens to the
/// process it was opened through, for as long as it is open (it keeps the
/// namespace alive).
#[derive(Debug)]
pub struct NsFile {
    file: File,
    path: PathBuf,
}

impl NsFile {
    /// Opens `path`.
    ///
    /// # Errors
    /// `ENOENT`: the process exited; `EACCES`: another user's process
    /// without `CAP_SYS_PTRACE`.
    pub fn open(path: &Path) -> Result<NsFile, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(NsFile {
            file,
            path: path.to_owned(),
        })
    }

    /// An already open namespace file; `path` is what errors name.
    pub(crate) fn from_file(file: File, path: PathBuf) -> NsFile {
        NsFile { file, path }
    }

    /// Moves the calling thread into this namespace (`setns(2)`; `kind`
    /// says which, and the kernel checks the file is one). After joining a
    /// network namespace the thread's `/proc/thread-self/net` and
    /// `/proc/sys/net` are that namespace's, and sock_diag sockets it
    /// creates belong to it; after a UTS namespace,
    /// `/proc/sys/kernel/hostname` is its hostname.
    ///
    /// # Errors
    /// `EPERM` without `CAP_SYS_ADMIN`; `EINVAL` when the file is another
    /// kind of namespace.
    pub fn join(&self, kind: rustix::thread::LinkNameSpaceType) -> Result<(), SourceError> {
        rustix::thread::move_into_link_name_space(self.file.as_fd(), Some(kind)).map_err(|e| {
            SourceError::Io {
                path: self.path.clone(),
                source: e.into(),
            }
        })
    }
}

/// True when the process has `CAP_SYS_ADMIN` (for `setns`) and
/// `CAP_SYS_PTRACE` (to open other users' `/proc/PID/ns/net`) in its
/// effective set.
pub fn privileged() -> bool {
    use rustix::thread::CapabilitySet as C;
    rustix::thread::capabilities(None)
        .is_ok_and(|c| c.effective.contains(C::SYS_ADMIN | C::SYS_PTRACE))
}

#[cfg(test)]
#[path = "netns/tests.rs"]
mod tests;
