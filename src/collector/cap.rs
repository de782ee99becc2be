//! Counters under a top-N cap.
//!
//! Per-listener and per-pool series are capped (`--listen.max-listeners`,
//! `--ephemeral.top-destinations`): the rows beyond the cap are summed into
//! one aggregate row (`listener="other"`, `destination="other"`). Summing
//! the rows' *totals* would make the aggregate's counters go backwards
//! whenever a row moves out of it (or a row that had grown large joins it
//! and later leaves). [`OtherCounters`] instead adds to the aggregate, at
//! every poll, only what each row beyond the cap *grew by* since the
//! previous poll, so every exported counter is monotonic:
//! - a kept row exports its own total (which keeps growing while it is in
//!   the aggregate, so a row that comes back has not gone backwards);
//! - the aggregate exports its own running sum.
//!
//! While a row is beyond the cap its growth is in the aggregate, and once
//! back its total includes that growth too: `sum()` over both double
//! counts that span, `rate()` of each series is right.

use std::collections::HashMap;
use std::hash::Hash;

/// The aggregate row's `N` counters, and each row's totals at the
/// previous [`OtherCounters::fold`].
#[derive(Debug, Clone)]
pub struct OtherCounters<K, const N: usize> {
    last: HashMap<K, [f64; N]>,
    other: [f64; N],
}

impl<K, const N: usize> Default for OtherCounters<K, N> {
    fn default() -> Self {
        OtherCounters {
            last: HashMap::new(),
            other: [0.0; N],
        }
    }
}

impl<K: Hash + Eq, const N: usize> OtherCounters<K, N> {
    /// Takes every row before the cap — its key, its counters' totals and
    /// whether the cap keeps it — and returns the aggregate's totals: what
    /// they were, plus the growth of each row not kept since the previous
    /// call. A row seen for the first time adds its whole total; a row
    /// whose total went down (its counter restarted) adds its new total.
    /// Rows absent from `rows` are forgotten.
    pub fn fold(&mut self, rows: impl IntoIterator<Item = (K, [f64; N], bool)>) -> [f64; N] {
        let mut next = HashMap::with_capacity(self.last.len());
        for (key, totals, kept) in rows {
            if !kept {
                let before = self.last.get(&key);
                for (i, &now) in totals.iter().enumerate() {
                    let was = before.map_or(0.0, |b| b[i]);
                    self.other[i] += if now >= was { now - was } else { now };
                }
            }
            next.insert(key, totals);
        }
        self.last = next;
        self.other
    }

    /// The aggregate's totals as of the latest [`OtherCounters::fold`].
    #[cfg(test)]
    pub(crate) fn totals(&self) -> [f64; N] {
        self.other
    }

    /// Rows remembered (every row of the latest fold).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row that moves into the aggregate and out again: every series
    /// keeps growing, never goes back.
    #[test]
    fn rows_moving_across_the_cap_keep_every_counter_monotonic() {
        let mut o = OtherCounters::<&str, 1>::default();
        // a kept, b beyond the cap.
        assert_eq!(o.fold([("a", [10.0], true), ("b", [3.0], false)]), [3.0]);
        // b grows by 2 while beyond; a moves beyond after growing to 15.
        assert_eq!(o.fold([("a", [15.0], false), ("b", [5.0], false)]), [10.0]);
        // a comes back (kept at 16); b restarts at 1 (a new socket).
        assert_eq!(o.fold([("a", [16.0], true), ("b", [1.0], false)]), [11.0]);
        // b gone; c new beyond the cap adds its whole total.
        assert_eq!(o.fold([("a", [17.0], true), ("c", [4.0], false)]), [15.0]);
        assert_eq!(o.len(), 2);
        // A summed-totals aggregate would have gone 3 → 20 → 6 → 4.
    }

    #[test]
    fn nothing_beyond_the_cap_adds_nothing() {
        let mut o = OtherCounters::<u8, 2>::default();
        assert_eq!(o.fold([(1, [1.0, 2.0], true)]), [0.0, 0.0]);
        assert_eq!(o.totals(), [0.0, 0.0]);
    }
}
