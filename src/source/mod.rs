//! Every read of the kernel (and of nginx): I/O here, then pure parsers
//! that fixtures, fuzzers and the live kernel feed alike. Socket readers
//! stream records into a visitor and never keep the whole socket table in
//! memory. [`kernel::Kernel`] is one network namespace's set of sources.

pub(crate) mod chain;
pub mod counters;
pub(crate) mod ebpf;
pub mod error;
pub mod id;
pub mod kernel;
pub mod netns;
pub mod procfs;
pub mod sock_diag;
pub mod stub_status;
pub mod sysctl;

pub use error::{ErrorReason, SourceError};
pub use id::SourceId;

use std::path::{Path, PathBuf};

/// Result of reading one source: how many records were delivered and how
/// many lines/messages were skipped as malformed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub records: u64,
    pub parse_errors: u64,
}

impl ReadStats {
    /// Adds another read's figures to this one.
    pub fn add(&mut self, other: ReadStats) {
        self.records += other.records;
        self.parse_errors += other.parse_errors;
    }
}

/// The `--path.procfs` root that every `/proc` reader joins, and where its
/// `net/` directory is: `root/net` for the process's own namespace (the
/// `/proc/net` → `self/net` link), `root/thread-self/net` for a thread that
/// entered another network namespace with `setns(2)` (`/proc/self/net` is
/// the thread group leader's).
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
    net: PathBuf,
}

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let net = root.join("net");
        ProcRoot { root, net }
    }

    /// The view of the calling thread's network namespace:
    /// `root/thread-self/net` (and `root/sys/net`, which follows the
    /// reading thread's namespace).
    pub(crate) fn thread_namespace(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let net = root.join("thread-self/net");
        ProcRoot { root, net }
    }

    /// `root/rel`, e.g. `sys/net/core/somaxconn`; `net/…` is under the
    /// namespace's `net/` directory (`net/tcp` → `/proc/net/tcp`).
    pub fn join(&self, rel: &str) -> PathBuf {
        match rel.strip_prefix("net/") {
            Some(rest) => self.net.join(rest),
            None => self.root.join(rel),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens `root/rel` for buffered reading.
    pub fn open(&self, rel: &str) -> Result<std::io::BufReader<std::fs::File>, SourceError> {
        let path = self.join(rel);
        std::fs::File::open(&path)
            .map(|f| std::io::BufReader::with_capacity(64 * 1024, f))
            .map_err(|source| SourceError::Io { path, source })
    }

    /// Reads `root/rel` whole into a string.
    pub fn read_to_string(&self, rel: &str) -> Result<String, SourceError> {
        let path = self.join(rel);
        std::fs::read_to_string(&path).map_err(|source| SourceError::Io { path, source })
    }
}
