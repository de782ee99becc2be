//! Every read of the kernel (and of nginx): I/O here, then pure parsers
//! that fixtures, fuzzers and the live kernel feed alike. Socket readers
//! stream records into a visitor and never keep the whole socket table in
//! memory. [`kernel::Kernel`] is one network namespace's set of sources.

pub mod counters;
pub mod error;
pub mod id;
pub mod kernel;
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
