//! A set of disjoint byte ranges: which parts of an open file the local spool holds.
//!
//! An open file's bytes come from three places: the spool (written or already fetched), the
//! S3 object it was opened from (not yet fetched), and zeros (past the old end, never written).
//! This set records the first kind, so reads and uploads know what must still come from S3.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges, keyed by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds `r`, merging with overlapping or adjacent ranges.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // The range that starts at or before `start` may touch us.
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.map.remove(&s);
        }
        // Ranges starting inside [start, end] are swallowed.
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in inside {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Drops everything at or after `len`.
    pub fn truncate(&mut self, len: u64) {
        let cut: Vec<(u64, u64)> = self
            .map
            .range(..)
            .filter(|(_, e)| **e > len)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, _) in cut {
            self.map.remove(&s);
            if s < len {
                self.map.insert(s, len);
            }
        }
    }

    /// True when all of `r` is in the set (an empty range always is).
    pub fn covers(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return true;
        }
        match self.map.range(..=r.start).next_back() {
            Some((_, &e)) => e >= r.end,
            None => false,
        }
    }

    /// True when some byte of `r` is in the set.
    pub fn overlaps(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return false;
        }
        if let Some((_, &e)) = self.map.range(..=r.start).next_back()
            && e > r.start
        {
            return true;
        }
        self.map.range(r.start..r.end).next().is_some()
    }

    /// The sub-ranges of `r` that are not in the set, in order.
    pub fn gaps(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if r.start >= r.end {
            return out;
        }
        let mut pos = r.start;
        if let Some((_, &e)) = self.map.range(..=r.start).next_back()
            && e > pos
        {
            pos = e;
        }
        for (&s, &e) in self.map.range(r.start..r.end) {
            if s > pos {
                out.push(pos..s.min(r.end));
            }
            pos = pos.max(e);
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(s, e)| *s..*e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_and_gaps() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..25, 30..40]);
        assert_eq!(s.gaps(0..50), vec![0..10, 25..30, 40..50]);
        assert!(s.covers(12..25));
        assert!(!s.covers(12..26));
        assert!(s.overlaps(24..31));
        assert!(!s.overlaps(25..30));
        s.truncate(35);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10..25, 30..35]);
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..64, 0u64..16, any::<bool>()), 1..30),
                            q in (0u64..64, 0u64..64)) {
            let mut set = RangeSet::new();
            let mut bits = [false; 128];
            for (start, len, trunc) in ops {
                if trunc {
                    set.truncate(start);
                    for b in bits.iter_mut().skip(start as usize) { *b = false; }
                } else {
                    set.insert(start..start + len);
                    for b in bits.iter_mut().skip(start as usize).take(len as usize) { *b = true; }
                }
            }
            let (a, b) = (q.0.min(q.1), q.0.max(q.1));
            let covered = (a..b).all(|i| bits[i as usize]);
            let any = (a..b).any(|i| bits[i as usize]);
            prop_assert_eq!(set.covers(a..b), covered);
            prop_assert_eq!(set.overlaps(a..b), any);
            let gap_bytes: Vec<u64> = set.gaps(a..b).into_iter().flatten().collect();
            let expect: Vec<u64> = (a..b).filter(|i| !bits[*i as usize]).collect();
            prop_assert_eq!(gap_bytes, expect);
            prop_assert!(set.gaps(b..a).is_empty());
            // Ranges stay disjoint and non-adjacent.
            let v: Vec<_> = set.iter().collect();
            for w in v.windows(2) { prop_assert!(w[0].end < w[1].start); }
        }
    }
}
