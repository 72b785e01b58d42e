//! Random reads that learn: each handle's scattered reads fetch aligned units sized to how
//! they have been going, and keep them in the block cache, so nearby reads hit.
//!
//! A read a handle makes away from where its reads were going (see `ReadState`) is random.
//! One GET of exactly the bytes asked for would make every later read of the same region
//! pay again; one of the whole 1 MiB block would make a database's 4 KiB page reads 256
//! times as costly. So the unit fetched follows the pattern:
//!
//! * it starts at 64 KiB (at least the read, rounded up to a unit size); a read that lands
//!   within four of its own sizes of one of the handle's recent reads grows it fourfold, up
//!   to 1 MiB (the size a read itself gives: a growing unit must not widen what counts as
//!   near, or a small file's uniform reads would look clustered); four scattered reads in a row
//!   shrink it fourfold, down to the read's own size: a scan over a zip's central directory
//!   or a B-tree's neighbouring pages grows it, a uniform random workload shrinks it to what
//!   it reads;
//! * when the caches (memory, or the disk cache) can hold the whole object, random reads
//!   fetch whole blocks in aligned groups of `GROUP_BLOCKS`, and an object of at most
//!   `WHOLE_OBJECT` bytes is fetched whole on its first random read: every byte is fetched
//!   at most once and the object ends up cached, so the reads turn into cache hits;
//! * units are looked up at every size, in memory, in flight and on disk: a unit fetched by
//!   another reader of the file, or by read-ahead, is shared, and two readers of one file
//!   fetch in parallel. The disk cache returns only the 16 KiB pages a read needs.
//!
//! Every fetch is pinned to the handle's ETag like the rest of the read path.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::Fs;
use super::error::{FsResult, HandleError};
use super::openfile::Base;
use super::readahead::{ReadState, joined, unit_key, unit_of};
use crate::cache::disk::PAGE;
use crate::cache::{BLOCK, BLOCK_SHIFT, BlockKey, UNIT_SHIFTS};
use crate::store::ObjectStore;

/// The unit a handle's random reads start with (log2): 64 KiB.
const FIRST_SHIFT: u8 = 16;
/// The smallest unit (log2): 4 KiB.
const MIN_SHIFT: u8 = 12;
/// Recent random reads remembered per handle.
const RECENT: usize = 8;
/// Scattered reads in a row that shrink the unit.
const SCATTERED: u8 = 4;
/// Blocks fetched at once by random reads of an object the caches can hold.
pub const GROUP_BLOCKS: u64 = 4;
/// Disk cache reads up to this size are made on the I/O thread, without a hop.
const INLINE_DISK_READ: u64 = 256 << 10;
/// Objects up to this size are fetched whole on their first random read (when they fit).
pub const WHOLE_OBJECT: u64 = 4 * BLOCK;

/// What a random read fetches on a miss: units of `1 << shift` bytes covering `span`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub shift: u8,
    pub span: Range<u64>,
}

/// How one handle's random reads have been going.
#[derive(Debug, Default)]
pub struct RandomReads {
    /// The unit (log2), 0 before the first random read.
    shift: u8,
    recent: [u64; RECENT],
    seen: usize,
    scattered: u8,
}

/// The smallest unit size (log2) holding `len` bytes.
fn shift_for(len: u64) -> u8 {
    let bits = (64 - len.max(1).saturating_sub(1).leading_zeros()) as u8;
    let s = UNIT_SHIFTS
        .iter()
        .rev()
        .copied()
        .find(|&s| s >= bits)
        .unwrap_or(BLOCK_SHIFT);
    s.max(MIN_SHIFT)
}

fn aligned(r: &Range<u64>, unit: u64, len: u64) -> Range<u64> {
    (r.start / unit * unit)..r.end.div_ceil(unit).saturating_mul(unit).min(len)
}

impl RandomReads {
    /// Records a random read of `r` in an object of `len` bytes, when the caches can keep
    /// `room` bytes of one object, and says what to fetch if it misses.
    pub fn plan(&mut self, r: Range<u64>, len: u64, room: u64) -> Fetch {
        let least = shift_for(r.end - r.start);
        let near = self.recent[..self.seen.min(RECENT)]
            .iter()
            .any(|&o| o.abs_diff(r.start) < 4 << least);
        self.recent[self.seen % RECENT] = r.start;
        self.seen += 1;
        if len <= room {
            let span = match len <= WHOLE_OBJECT {
                true => 0..len,
                false => aligned(&r, GROUP_BLOCKS * BLOCK, len),
            };
            return Fetch {
                shift: BLOCK_SHIFT,
                span,
            };
        }
        self.shift = match (self.shift, near) {
            (0, _) => FIRST_SHIFT.max(least),
            (s, true) => {
                self.scattered = 0;
                (s + 2).min(BLOCK_SHIFT)
            }
            (s, false) => {
                self.scattered += 1;
                if self.scattered < SCATTERED {
                    s.max(least)
                } else {
                    self.scattered = 0;
                    s.saturating_sub(2).max(least)
                }
            }
        };
        Fetch {
            shift: self.shift,
            span: aligned(&r, 1 << self.shift, len),
        }
    }
}

/// The part of `want` that `data` (starting at byte `start`) holds from `want.start` on;
/// `None` when it does not hold `want.start`.
fn piece_of(start: u64, data: &Bytes, want: Range<u64>) -> Option<Bytes> {
    let to = want.end.min(start + data.len() as u64);
    (start <= want.start && to > want.start)
        .then(|| data.slice((want.start - start) as usize..(to - start) as usize))
}

/// The block holding byte `want.start`, its first byte, and the part of `want` in it (in the
/// block's own offsets).
fn in_block(key: &Arc<str>, etag: &Arc<str>, want: &Range<u64>) -> (BlockKey, u64, Range<u64>) {
    let block = BlockKey::unit_at(key, etag, BLOCK_SHIFT, want.start);
    let base = block.start();
    let r = (want.start - base)..(want.end.min(base + BLOCK) - base);
    (block, base, r)
}

impl<S: ObjectStore> Fs<S> {
    /// A random read served at once from the caches, on the calling thread, or `None` when
    /// it needs the async path (a sequential read, changed bytes, a byte not cached, a failed
    /// handle): the hop to the I/O runtime and back is most of a cached read's cost.
    pub fn read_cached(&self, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        let h = self.file_handle(fh).ok()?;
        if h.of.failure().is_some() {
            return None;
        }
        let mut reads = h.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.sequential(offset) {
            return None;
        }
        let b = {
            let s = h.of.lock();
            match (s.plan(offset, size as u64).as_slice(), &s.base) {
                ([super::openfile::Piece::Base(r)], Some(b)) if r.start < r.end => {
                    Some((r.clone(), b.clone()))
                }
                _ => None,
            }
        };
        let (r, b) = b?;
        let (key, etag): (Arc<str>, Arc<str>) =
            (Arc::from(b.key.as_str()), Arc::from(b.etag.as_str()));
        let mut pieces = Vec::new();
        let mut p = r.start;
        while p < r.end {
            let (start, data) = self
                .reader
                .block_cache()
                .cover(&key, &etag, p)
                .or_else(|| self.disk_pages(&key, &etag, p..r.end))?;
            let piece = piece_of(start, &data, p..r.end)?;
            p += piece.len() as u64;
            pieces.push(piece);
        }
        reads.observe(offset, size as u64);
        reads.random.plan(r.clone(), b.len, self.reader.room());
        drop(reads);
        h.of.lock().served = true;
        let data = joined(pieces);
        self.reader.returned(data.len() as u64);
        Some(data)
    }

    /// Bytes `r` (within the object) of `b`, read at random by a handle in `state`.
    pub(super) async fn read_random(
        self: &Arc<Self>,
        b: &Base,
        r: Range<u64>,
        state: &Mutex<ReadState>,
    ) -> FsResult<Bytes> {
        let fetch = state.lock().unwrap_or_else(|e| e.into_inner()).random.plan(
            r.clone(),
            b.len,
            self.reader.room(),
        );
        log::trace!("random read {:?} {:?}, fetching {fetch:?}", b.key, r);
        let (key, etag): (Arc<str>, Arc<str>) =
            (Arc::from(b.key.as_str()), Arc::from(b.etag.as_str()));
        let mut pieces = Vec::new();
        let mut p = r.start;
        while p < r.end {
            let (start, data) = self
                .unit_holding(b, (&key, &etag), p..r.end, &fetch)
                .await?;
            let piece = piece_of(start, &data, p..r.end).ok_or_else(|| HandleError::Short {
                key: b.key.clone(),
                got: data.len() as u64,
                want: r.end - p,
                at: p,
            })?;
            p += piece.len() as u64;
            pieces.push(piece);
        }
        Ok(joined(pieces))
    }

    /// The cached bytes holding the first byte `p` of `want` in `b`, as (their first byte,
    /// the bytes): from memory, a fetch in flight, the disk cache (the pages up to the end of
    /// `want`), or a new fetch as `fetch` says.
    async fn unit_holding(
        self: &Arc<Self>,
        b: &Base,
        (key, etag): (&Arc<str>, &Arc<str>),
        want: Range<u64>,
        fetch: &Fetch,
    ) -> FsResult<(u64, Bytes)> {
        let p = want.start;
        if let Some(hit) = self.reader.block_cache().cover(key, etag, p) {
            return Ok(hit);
        }
        if let Some((k, pending)) = self.reader.in_flight_at(key, etag, p) {
            return Ok((k.start(), unit_of(&k, pending).await?));
        }
        if let Some(found) = self.read_disk_pages(key, etag, want.clone()).await {
            return Ok(found);
        }
        let shift = fetch.shift;
        let units =
            (fetch.span.start.min(p) >> shift)..fetch.span.end.max(p + 1).div_ceil(1 << shift);
        let chunk = (units.end - units.start).max(1);
        self.start_unit_fetches(b, shift, units, chunk);
        let k = unit_key(b, shift, p >> shift);
        let pending = self.reader.pending(&k);
        match pending {
            Some(pending) => Ok((k.start(), unit_of(&k, pending).await?)),
            // Done already (or the unit was cached meanwhile): it is in the cache, unless
            // evicted at once; then fetch exactly this unit, waiting for it.
            None => match self.reader.block_cache().cover(key, etag, p) {
                Some(hit) => Ok(hit),
                None => {
                    let one = Fetch {
                        shift,
                        span: aligned(&(p..p + 1), 1 << shift, b.len),
                    };
                    Box::pin(self.unit_holding(b, (key, etag), want, &one)).await
                }
            },
        }
    }

    /// The pages of `want` (up to the end of its first block) from the disk cache, kept in
    /// memory too as 16 KiB units.
    async fn read_disk_pages(
        &self,
        key: &Arc<str>,
        etag: &Arc<str>,
        want: Range<u64>,
    ) -> Option<(u64, Bytes)> {
        let disk = self.reader.disk()?.clone();
        let (block, base, r) = in_block(key, etag, &want);
        if !disk.contains(&block) {
            return None;
        }
        // A few pages, most likely in the kernel's page cache, are read here: a hop to the
        // blocking pool would cost more than the read.
        if r.end - r.start <= INLINE_DISK_READ {
            return self.disk_pages(key, etag, want);
        }
        let (from, data) = tokio::task::spawn_blocking(move || disk.get_range(&block, r))
            .await
            .ok()??;
        self.keep_pages(key, etag, base + from, &data);
        Some((base + from, data))
    }

    /// `read_disk_pages` on the calling thread: the pages of `want` up to the end of its first
    /// block, if the disk cache has them.
    fn disk_pages(
        &self,
        key: &Arc<str>,
        etag: &Arc<str>,
        want: Range<u64>,
    ) -> Option<(u64, Bytes)> {
        let disk = self.reader.disk()?;
        let (block, base, r) = in_block(key, etag, &want);
        let (from, data) = disk.get_range(&block, r)?;
        self.keep_pages(key, etag, base + from, &data);
        Some((base + from, data))
    }

    /// Pages read from the disk cache, kept in memory as 16 KiB units from byte `at`.
    fn keep_pages(&self, key: &Arc<str>, etag: &Arc<str>, at: u64, data: &Bytes) {
        let page_shift = PAGE.trailing_zeros() as u8;
        for (i, page) in data.chunks(PAGE as usize).enumerate() {
            let unit = BlockKey::unit_at(key, etag, page_shift, at + i as u64 * PAGE);
            self.reader.block_cache().put(unit, data.slice_ref(page));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const GIB: u64 = 1 << 30;

    #[test]
    fn unit_sizes_round_up_to_the_sizes_the_cache_holds() {
        assert_eq!(shift_for(1), 12);
        assert_eq!(shift_for(4 * K), 12);
        assert_eq!(shift_for(4 * K + 1), 14);
        assert_eq!(shift_for(256 * K), 18);
        assert_eq!(shift_for(300 * K), 20);
        assert_eq!(shift_for(BLOCK), 20);
    }

    #[test]
    fn scattered_reads_shrink_the_unit_to_the_read_and_clustered_reads_grow_it() {
        let mut r = RandomReads::default();
        let small_room = 64 << 20;
        let first = r.plan(500 << 20..(500 << 20) + 4 * K, GIB, small_room);
        assert_eq!(first.shift, 16);
        assert_eq!(first.span, (500 << 20)..(500 << 20) + 64 * K);
        // Uniform random reads over a big object: down to 4 KiB, exactly the read.
        let mut at = 7u64;
        for _ in 0..20 {
            at = at
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                % (GIB / (4 * K));
            r.plan(at * 4 * K..at * 4 * K + 4 * K, GIB, small_room);
        }
        let f = r.plan(100 << 20..(100 << 20) + 4 * K, GIB, small_room);
        assert_eq!(f.shift, 12);
        assert_eq!(f.span.end - f.span.start, 4 * K);
        // Reads near each other: up to a whole block.
        for i in 0..4 {
            r.plan(
                (100 << 20) + i * 8 * K..(100 << 20) + i * 8 * K + 4 * K,
                GIB,
                small_room,
            );
        }
        assert_eq!(
            r.plan(100 << 20..(100 << 20) + 4 * K, GIB, small_room)
                .shift,
            20
        );
    }

    #[test]
    fn an_object_the_caches_hold_is_fetched_in_groups_of_blocks_or_whole() {
        let mut r = RandomReads::default();
        let f = r.plan(9 * BLOCK + 5..9 * BLOCK + 9, 100 * BLOCK, 200 * BLOCK);
        assert_eq!((f.shift, f.span), (20, 8 * BLOCK..12 * BLOCK));
        let f = r.plan(99 * BLOCK..99 * BLOCK + 1, 99 * BLOCK + 10, 200 * BLOCK);
        assert_eq!(f.span, 96 * BLOCK..99 * BLOCK + 10, "clipped to the object");
        let f = r.plan(3 * BLOCK..3 * BLOCK + 4, 3 * BLOCK + 4, 200 * BLOCK);
        assert_eq!(f.span, 0..3 * BLOCK + 4, "a small object whole");
    }

    #[test]
    fn a_large_read_fetches_units_at_least_its_size() {
        let mut r = RandomReads::default();
        let f = r.plan(GIB / 2..GIB / 2 + 256 * K, GIB, 64 << 20);
        assert_eq!((f.shift, f.span.end - f.span.start), (18, 256 * K));
    }
}
