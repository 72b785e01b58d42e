//! Where multipart part boundaries fall in a file, fixed by part index alone.
//!
//! Boundaries must not move while a file is being written, because parts are uploaded while
//! the application is still writing and a part rewritten later is uploaded again under the same
//! number. So the layout depends only on the index: the first 1,000 parts have the base size,
//! the next 1,000 twice that, and so on, capped at S3's 5 GiB. With the default 8 MiB base the
//! 10,000 parts S3 allows hold about 8 TB, so a 5 TiB object (S3's maximum) always fits, and
//! small and medium files still get small parts that upload early and in parallel.

use crate::store::{MAX_PARTS, MIN_PART_SIZE};

const PARTS_PER_TIER: u64 = 1000;
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The part layout for one upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLayout {
    base: u64,
}

impl PartLayout {
    /// A layout whose first parts are `base` bytes (at least S3's 5 MiB minimum).
    pub fn new(base: u64) -> Self {
        PartLayout {
            base: base.clamp(MIN_PART_SIZE, MAX_PART_SIZE),
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size of part `i` (0-based).
    pub fn size(&self, i: u64) -> u64 {
        let tier = (i / PARTS_PER_TIER).min(62) as u32;
        self.base.saturating_mul(1u64 << tier).min(MAX_PART_SIZE)
    }

    /// Start offset of part `i`.
    pub fn start(&self, i: u64) -> u64 {
        let mut off = 0u64;
        let mut idx = 0u64;
        while idx < i {
            let tier_end = ((idx / PARTS_PER_TIER) + 1) * PARTS_PER_TIER;
            let n = tier_end.min(i) - idx;
            off = off.saturating_add(n.saturating_mul(self.size(idx)));
            idx += n;
        }
        off
    }

    /// Byte range of part `i`, not clipped to the file size.
    pub fn range(&self, i: u64) -> std::ops::Range<u64> {
        let s = self.start(i);
        s..s.saturating_add(self.size(i))
    }

    /// The part holding byte `offset`.
    pub fn index_of(&self, offset: u64) -> u64 {
        let mut idx = 0u64;
        let mut start = 0u64;
        loop {
            let size = self.size(idx);
            let tier_bytes = size.saturating_mul(PARTS_PER_TIER - idx % PARTS_PER_TIER);
            if offset < start.saturating_add(tier_bytes) {
                return idx + (offset - start) / size;
            }
            start = start.saturating_add(tier_bytes);
            idx = (idx / PARTS_PER_TIER + 1) * PARTS_PER_TIER;
        }
    }

    /// How many parts a file of `size` bytes has (a 0-byte file has none).
    pub fn count(&self, size: u64) -> u64 {
        if size == 0 {
            0
        } else {
            self.index_of(size - 1) + 1
        }
    }

    /// The largest object this layout can upload within S3's part limit.
    pub fn max_object_size(&self) -> u64 {
        self.start(MAX_PARTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn five_tib_fits_in_ten_thousand_parts() {
        let l = PartLayout::new(8 * MIB);
        let five_tib = 5 * 1024 * 1024 * MIB;
        assert!(l.max_object_size() >= five_tib);
        assert!(l.count(five_tib) <= MAX_PARTS);
        for i in 0..MAX_PARTS {
            assert!(l.size(i) >= MIN_PART_SIZE && l.size(i) <= MAX_PART_SIZE);
        }
    }

    #[test]
    fn boundaries_are_consistent() {
        let l = PartLayout::new(8 * MIB);
        for i in [0u64, 1, 2, 999, 1000, 1001, 1999, 2000, 5432, 9999] {
            let r = l.range(i);
            assert_eq!(l.index_of(r.start), i);
            assert_eq!(l.index_of(r.end - 1), i);
            assert_eq!(l.index_of(r.end), i + 1);
            assert_eq!(l.range(i + 1).start, r.end);
        }
        assert_eq!(l.count(0), 0);
        assert_eq!(l.count(1), 1);
        assert_eq!(l.count(8 * MIB), 1);
        assert_eq!(l.count(8 * MIB + 1), 2);
        assert_eq!(l.size(1000), 16 * MIB);
    }

    #[test]
    fn base_is_clamped_to_s3_limits() {
        assert_eq!(PartLayout::new(1).base(), MIN_PART_SIZE);
    }
}
