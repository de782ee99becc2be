//! Raw kernel readers. Each reader streams records into a visitor and never
//! keeps the whole socket table in memory; parsing is separated from I/O so
//! fixtures, fuzzers and the live kernel feed the same functions.

pub mod procfs;
pub mod sock_diag;
pub mod sysctl;

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

/// A source that could not be read at all (as opposed to single malformed
/// records, which are skipped and counted in [`ReadStats::parse_errors`]).
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
    /// `NLMSG_DONE`).
    #[error("sock_diag dump failed: kernel returned errno {0}")]
    Kernel(i32),
    /// A file whose whole content is unusable (e.g. a sysctl that is not a
    /// number).
    #[error("parsing {path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// The `--path.procfs` root that every `/proc` reader joins.
#[derive(Debug, Clone)]
pub struct ProcRoot(PathBuf);

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcRoot(root.into())
    }

    /// `root/rel`, e.g. `net/tcp` → `/proc/net/tcp`.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    pub fn path(&self) -> &Path {
        &self.0
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
