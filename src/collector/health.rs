//! The health of every source: one executor that times each read, tracks
//! its up/down transitions, counts failures by [`ErrorReason`] and
//! malformed records, and logs once per transition (a source that stays
//! down, or keeps skipping malformed lines, does not warn on every poll).
//!
//! Families: `sockscope_source_up`, `sockscope_source_duration_seconds`,
//! `sockscope_source_errors_total{reason}` and
//! `sockscope_parse_errors_total`, all labelled `source` ([`SourceId`]).

use std::time::Instant;

use crate::metrics::Families;
use crate::source::{ErrorReason, ReadStats, SourceError, SourceId};

crate::metric_specs! {
    SOURCE_UP = "sockscope_source_up", Gauge, ["source"],
        "1 when the latest read of the source succeeded, 0 when it failed.";
    SOURCE_DURATION = "sockscope_source_duration_seconds", Gauge, ["source"],
        "Time the latest read of the source took: this poll's for sources read every poll, the latest census's for the census sources.";
    SOURCE_ERRORS = "sockscope_source_errors_total", Counter, ["source", "reason"],
        "Failed reads of the source by reason: an errno name (eperm, eacces, enoent, einval, eopnotsupp, eafnosupport, enobufs, errno_other), timeout or parse. Only reasons seen are listed.";
    PARSE_ERRORS = "sockscope_parse_errors_total", Counter, ["source"],
        "Lines or messages skipped as malformed, per source.";
}

/// The health of one source as of its latest read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceStatus {
    pub source: SourceId,
    pub up: bool,
    pub duration_seconds: f64,
    /// Malformed records skipped since the agent started.
    pub parse_errors_total: u64,
    /// Failed reads since the agent started, by reason (only the reasons
    /// seen).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "super::serialize_counts"
    )]
    pub errors_total: Vec<(&'static str, u64)>,
    /// The error of the latest read, when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    /// `None` before the first read.
    up: Option<bool>,
    parse_errors_total: u64,
    /// The latest read skipped malformed records.
    malformed: bool,
    errors_total: [u64; ErrorReason::ALL.len()],
}

/// The state that spans polls, per source.
#[derive(Debug, Default)]
pub struct Health {
    entries: [Entry; SourceId::ALL.len()],
}

impl Health {
    /// Runs one read of `source`: times `read`, records the outcome, and
    /// logs a warning when the source goes down or starts skipping
    /// malformed records (and an info line when it recovers). Returns the
    /// value when the read succeeded, and the source's status.
    pub(crate) fn execute<T>(
        &mut self,
        source: SourceId,
        read: impl FnOnce() -> Result<(T, ReadStats), SourceError>,
    ) -> (Option<T>, SourceStatus) {
        let start = Instant::now();
        let res = read();
        let duration_seconds = start.elapsed().as_secs_f64();
        let e = &mut self.entries[source.index()];
        let was_up = e.up.unwrap_or(true);
        let (value, error) = match res {
            Ok((v, stats)) => {
                e.parse_errors_total += stats.parse_errors;
                let malformed = stats.parse_errors > 0;
                if malformed && !e.malformed {
                    tracing::warn!(
                        %source,
                        skipped = stats.parse_errors,
                        "skipping malformed records (counted in sockscope_parse_errors_total; warned again only after a clean read)"
                    );
                }
                e.malformed = malformed;
                if !was_up {
                    tracing::info!(%source, "source recovered");
                }
                (Some(v), None)
            }
            Err(err) => {
                e.errors_total[err.reason().index()] += 1;
                if was_up {
                    tracing::warn!(%source, error = %err, "source failed (warned again only after it recovers)");
                }
                (None, Some(err.to_string()))
            }
        };
        e.up = Some(error.is_none());
        let status = SourceStatus {
            source,
            up: error.is_none(),
            duration_seconds,
            parse_errors_total: e.parse_errors_total,
            errors_total: ErrorReason::ALL
                .iter()
                .filter(|r| e.errors_total[r.index()] > 0)
                .map(|r| (r.label(), e.errors_total[r.index()]))
                .collect(),
            error,
        };
        (value, status)
    }
}

/// The `sockscope_source_*` and `sockscope_parse_errors_total` families.
pub fn encode(sources: &[SourceStatus], out: &mut Families) {
    for s in sources {
        let id = s.source.label();
        out.push(&SOURCE_UP, &[id], if s.up { 1.0 } else { 0.0 });
        out.push(&SOURCE_DURATION, &[id], s.duration_seconds);
        out.push(&PARSE_ERRORS, &[id], s.parse_errors_total as f64);
        for &(reason, n) in &s.errors_total {
            out.push(&SOURCE_ERRORS, &[id, reason], n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Result<((), ReadStats), SourceError> {
        Err(SourceError::Netlink {
            op: "socket",
            source: std::io::Error::from_raw_os_error(1),
        })
    }

    fn malformed(n: u64) -> Result<((), ReadStats), SourceError> {
        Ok((
            (),
            ReadStats {
                records: 3,
                parse_errors: n,
            },
        ))
    }

    #[test]
    fn counts_by_reason_and_transitions() {
        let mut h = Health::default();
        let id = SourceId::InetDiag;
        let (v, s) = h.execute(id, || Ok((7, ReadStats::default())));
        assert_eq!(v, Some(7));
        assert!(s.up && s.errors_total.is_empty());
        let (v, s) = h.execute(id, denied);
        assert_eq!(v, None);
        assert!(!s.up);
        assert_eq!(s.errors_total, vec![("eperm", 1)]);
        assert!(s.error.as_deref().unwrap().contains("socket"));
        let (_, s) = h.execute(id, denied);
        assert_eq!(s.errors_total, vec![("eperm", 2)]);
        let (_, s) = h.execute(id, || malformed(2));
        assert!(s.up);
        assert_eq!(s.parse_errors_total, 2);
        assert_eq!(s.errors_total, vec![("eperm", 2)], "failures stay counted");
        let (_, s) = h.execute(id, || malformed(1));
        assert_eq!(s.parse_errors_total, 3);

        let text = crate::metrics::encoded(|f| encode(std::slice::from_ref(&s), f));
        for line in [
            "sockscope_source_up{source=\"inet_diag\"} 1\n",
            "sockscope_parse_errors_total{source=\"inet_diag\"} 3\n",
            "sockscope_source_errors_total{source=\"inet_diag\",reason=\"eperm\"} 2\n",
            "# TYPE sockscope_source_errors_total counter\n",
            "# TYPE sockscope_source_duration_seconds gauge\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Another source has its own entry.
        let (_, other) = h.execute(SourceId::Sysctl, || Ok(((), ReadStats::default())));
        assert_eq!((other.parse_errors_total, other.errors_total.len()), (0, 0));
    }
}
