//! Reading object data fast: blocks from the cache, sequential read-ahead with a growing
//! window, and concurrent ranged GETs; random reads go through `random`, on the same cache
//! and the same fetches in flight.
//!
//! * Sequential detection tolerates the kernel's reordering: with async reads and read-ahead
//!   the kernel has several reads in flight and they can arrive out of order, so a read counts
//!   as sequential when it starts near where the previous ones ended, not only exactly there.
//! * The window starts at one block (the first byte comes back after one small GET) and
//!   doubles with every sequential read up to a maximum; it is fetched in chunks of up to
//!   `CHUNK_BLOCKS` blocks, several at once, like the fastest raw S3 clients.
//! * Every fetch is pinned to the ETag the file was opened at, and in-flight fetches are shared:
//!   two readers of one block wait for one GET. Bytes in flight are bounded by the read-ahead
//!   share of the memory budget (a semaphore counted in blocks).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::Fs;
use super::error::{FsError, FsResult, HandleError};
use super::inode::Ino;
use super::openfile::Base;
use crate::cache::disk::DiskCache;
use crate::cache::{BLOCK, BLOCK_SHIFT, BlockCache, BlockKey};
use crate::store::ObjectStore;

/// Largest single GET of read-ahead, in blocks.
pub const CHUNK_BLOCKS: u64 = 8;
/// Largest read-ahead window of one reader, in blocks.
pub const MAX_WINDOW_BLOCKS: u64 = 64;
/// How far before the expected offset a read still counts as sequential (reads the kernel
/// sent together arrive out of order)...
const REORDER_BEHIND: u64 = 4 * BLOCK;
/// ...and how far after it (the kernel's own read-ahead runs ahead of the reader).
const REORDER_AHEAD: u64 = 8 * BLOCK;
/// How far from where the last random read ended a read still starts a sequential run.
const START_SLACK: u64 = 256 << 10;

/// What one open file handle has been reading.
#[derive(Debug, Default)]
pub struct ReadState {
    next: Option<u64>,
    window: u64,
    /// How its random reads have been going.
    pub random: super::random::RandomReads,
}

/// How one read call goes: sequential with a read-ahead window (in blocks), or random, as
/// the handle's state learns it.
pub struct Pattern<'a> {
    pub seq: bool,
    pub window: u64,
    pub state: &'a Mutex<ReadState>,
}

impl ReadState {
    /// Whether a read at `off` would continue this handle's sequential reads. Reordering is
    /// tolerated widely within a sequential run, narrowly to start one: a random read that
    /// lands a few blocks from the previous one is still random.
    pub fn sequential(&self, off: u64) -> bool {
        match self.next {
            None => off == 0,
            Some(n) if self.window > 0 => off + REORDER_BEHIND >= n && off <= n + REORDER_AHEAD,
            Some(n) => off + START_SLACK >= n && off <= n + START_SLACK,
        }
    }

    /// Records a read and returns (sequential, window in blocks).
    pub fn observe(&mut self, off: u64, len: u64) -> (bool, u64) {
        let seq = self.sequential(off);
        self.window = if seq {
            (self.window * 2).clamp(1, MAX_WINDOW_BLOCKS)
        } else {
            0
        };
        let end = off + len;
        self.next = Some(self.next.map_or(end, |n| n.max(end)));
        if !seq {
            self.next = Some(end);
        }
        (seq, self.window)
    }
}

/// A chunk's blocks, each in its own buffer: a block kept in the cache never pins the rest of
/// its chunk in memory (the cache counts blocks, so it must own exactly what it counts).
type ChunkFuture = Shared<BoxFuture<'static, Result<Arc<[Bytes]>, FsError>>>;

/// A fetch in flight: the chunk's future and the chunk's first byte.
pub(super) type Pending = (ChunkFuture, u64);

/// Fetches in flight, by unit.
#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<BlockKey, Pending>>,
}

impl InFlight {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockKey, Pending>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pieces of one read as one buffer (the piece itself when there is one).
pub(super) fn joined(mut pieces: Vec<Bytes>) -> Bytes {
    if pieces.len() == 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for p in &pieces {
        out.extend_from_slice(p);
    }
    out.freeze()
}

/// The unit `key` out of the units its chunk's fetch returned.
pub(super) async fn unit_of(key: &BlockKey, (fut, chunk_start): Pending) -> FsResult<Bytes> {
    let units = fut.await?;
    let idx = ((key.start() - chunk_start) >> key.shift) as usize;
    Ok(units.get(idx).cloned().unwrap_or_default())
}

/// The reader's state: blocks cached in memory (and on disk), fetches in flight, the
/// read-ahead budget, and per directory the last file opened for reading (see `siblings`).
pub struct Reader {
    block_cache: BlockCache,
    disk_cache: Option<Arc<DiskCache>>,
    inflight: InFlight,
    /// Read-ahead in flight, in blocks.
    read_slots: Arc<tokio::sync::Semaphore>,
    read_cursors: Mutex<lru::LruCache<Ino, String>>,
    /// Object bytes fetched from S3 for reads, and bytes returned to readers: their ratio is
    /// the read amplification `pailfs stats` reports.
    fetched: AtomicU64,
    returned: AtomicU64,
}

impl Reader {
    pub fn new(
        shares: &crate::cache::MemoryShares,
        disk: Option<(std::path::PathBuf, u64)>,
    ) -> FsResult<Self> {
        let disk_cache = match disk {
            Some((dir, cap)) => Some(Arc::new(DiskCache::open(&dir, cap).map_err(|e| {
                FsError::local(format!("cannot open the disk cache {}", dir.display()), e)
            })?)),
            None => None,
        };
        let slots = (shares.read_ahead / BLOCK).max(CHUNK_BLOCKS) as usize;
        Ok(Reader {
            block_cache: BlockCache::new(shares.cache),
            disk_cache,
            inflight: InFlight::default(),
            read_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            read_cursors: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(super::siblings::CURSORS).expect("non-zero"),
            )),
            fetched: AtomicU64::new(0),
            returned: AtomicU64::new(0),
        })
    }

    pub fn block_cache(&self) -> &BlockCache {
        &self.block_cache
    }

    /// The disk cache, when the mount has one.
    pub(super) fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk_cache.as_ref()
    }

    /// The fetch in flight of unit `k`, if any.
    pub(super) fn pending(&self, k: &BlockKey) -> Option<Pending> {
        self.inflight.lock().get(k).cloned()
    }

    /// A fetch in flight of a unit of any size holding byte `p` of `key` at `etag`.
    pub(super) fn in_flight_at(
        &self,
        key: &Arc<str>,
        etag: &Arc<str>,
        p: u64,
    ) -> Option<(BlockKey, Pending)> {
        let m = self.inflight.lock();
        crate::cache::UNIT_SHIFTS.iter().find_map(|&s| {
            let k = BlockKey::unit_at(key, etag, s, p);
            m.get(&k).cloned().map(|pending| (k, pending))
        })
    }

    /// Counts `n` bytes returned to a reader.
    pub(super) fn returned(&self, n: u64) {
        self.returned.fetch_add(n, Ordering::Relaxed);
    }

    /// (object bytes fetched for reads, bytes returned to readers) since the mount.
    pub fn amplification(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.returned.load(Ordering::Relaxed),
        )
    }

    /// The most of one object the caches can keep: random reads of an object within it
    /// fetch whole blocks, which then stay (see `random`).
    pub(super) fn room(&self) -> u64 {
        let disk = self.disk_cache.as_ref().map_or(0, |d| d.cap());
        self.block_cache.cap().max(disk) / 2
    }

    /// `name` in `dir` is opened for reading: the name opened before it there, if any.
    pub fn note_open(&self, dir: Ino, name: &str) -> Option<String> {
        let mut c = self.read_cursors.lock().unwrap_or_else(|e| e.into_inner());
        c.put(dir, name.to_string())
    }
}

fn block_key(b: &Base, index: u64) -> BlockKey {
    unit_key(b, BLOCK_SHIFT, index)
}

pub(super) fn unit_key(b: &Base, shift: u8, index: u64) -> BlockKey {
    BlockKey {
        key: Arc::from(b.key.as_str()),
        etag: Arc::from(b.etag.as_str()),
        index,
        shift,
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Bytes `r` of the object `b`, through the block cache and read-ahead.
    pub(crate) async fn read_base(
        self: &Arc<Self>,
        b: &Base,
        r: Range<u64>,
        how: &Pattern<'_>,
    ) -> FsResult<Bytes> {
        let end = r.end.min(b.len);
        if r.start >= end {
            return Ok(Bytes::new());
        }
        if !how.seq {
            return self.read_random(b, r.start..end, how.state).await;
        }
        let (first, last) = (r.start / BLOCK, (end - 1) / BLOCK);
        let blocks = b.len.div_ceil(BLOCK);
        // Read-ahead waits in the cache until it is read: never fetch more than half of it.
        let window = how
            .window
            .min((self.reader.block_cache.cap() / BLOCK / 2).max(1));
        let chunk = window.clamp(1, CHUNK_BLOCKS);
        self.start_fetches(b, first, last + 1, chunk);
        self.start_fetches(b, last + 1, (last + 1 + window).min(blocks), chunk);
        // Gather first, copy after: a request waiting for its blocks holds no buffer of its own.
        let mut pieces = Vec::with_capacity((last - first + 1) as usize);
        for i in first..=last {
            let data = self.block(b, i).await?;
            let block_start = i * BLOCK;
            let from = r.start.max(block_start) - block_start;
            let to = end.min(block_start + data.len() as u64) - block_start;
            if from > to || to > data.len() as u64 {
                return Err(HandleError::Short {
                    key: b.key.clone(),
                    got: data.len() as u64,
                    want: to.max(from),
                    at: block_start,
                }
                .into());
            }
            pieces.push(data.slice(from as usize..to as usize));
        }
        Ok(joined(pieces))
    }

    /// Bytes `r` of the object in unit-sized buffers of their own (see `ChunkFuture`).
    async fn get_units(&self, b: &Base, r: Range<u64>, unit: u64) -> FsResult<Arc<[Bytes]>> {
        let want = r.end - r.start;
        let blocks = self
            .store
            .get_range_split(&b.key, r.clone(), Some(&b.etag), unit)
            .await
            .map_err(|e| FsError::from_store(e, &b.key))?;
        let got: u64 = blocks.iter().map(|p| p.len() as u64).sum();
        self.reader.fetched.fetch_add(got, Ordering::Relaxed);
        if got != want || blocks.iter().rev().skip(1).any(|p| p.len() as u64 != unit) {
            return Err(HandleError::Short {
                key: b.key.clone(),
                got,
                want,
                at: r.start,
            }
            .into());
        }
        Ok(Arc::from(blocks))
    }

    /// One block, from the cache or its fetch in flight (starting one if neither).
    async fn block(self: &Arc<Self>, b: &Base, i: u64) -> FsResult<Bytes> {
        let k = block_key(b, i);
        if let Some(d) = self.reader.block_cache.get(&k) {
            return Ok(d);
        }
        let pending = self.reader.inflight.lock().get(&k).cloned();
        let (fut, chunk_start) = match pending {
            Some(p) => p,
            None => {
                self.start_fetches(b, i, i + 1, 1);
                match self.reader.inflight.lock().get(&k).cloned() {
                    Some(p) => p,
                    // Finished between the two looks: it is in the cache now.
                    None => {
                        return self
                            .reader
                            .block_cache
                            .get(&k)
                            .ok_or_else(|| HandleError::Internal("block vanished").into());
                    }
                }
            }
        };
        unit_of(&k, (fut, chunk_start)).await
    }

    /// Starts GETs for the blocks of `[from, to)` that are neither cached nor in flight, in
    /// chunks of at most `chunk` blocks. Checking and registering happen under one lock, so
    /// two readers never fetch the same block twice.
    pub(super) fn start_fetches(self: &Arc<Self>, b: &Base, from: u64, to: u64, chunk: u64) {
        self.start_unit_fetches(b, BLOCK_SHIFT, from..to, chunk);
    }

    /// `start_fetches` for units of `1 << shift` bytes.
    pub(super) fn start_unit_fetches(
        self: &Arc<Self>,
        b: &Base,
        shift: u8,
        units: Range<u64>,
        chunk: u64,
    ) {
        let mut m = self.reader.inflight.lock();
        let free = |m: &HashMap<BlockKey, Pending>, i: u64| {
            let k = unit_key(b, shift, i);
            !m.contains_key(&k) && !self.reader.block_cache.contains(&k)
        };
        let mut i = units.start;
        while i < units.end {
            if !free(&m, i) {
                i += 1;
                continue;
            }
            let mut n = 1;
            while n < chunk && i + n < units.end && free(&m, i + n) {
                n += 1;
            }
            let fut = self.spawn_fetch(b, shift, i, n);
            for j in 0..n {
                m.insert(unit_key(b, shift, i + j), (fut.clone(), i << shift));
            }
            i += n;
        }
    }

    /// Blocks `first..first + n` from the disk cache, if it has them all.
    async fn read_disk_blocks(&self, b: &Base, first: u64, n: u64) -> Option<Arc<[Bytes]>> {
        let disk = self.reader.disk_cache.clone()?;
        let keys: Vec<BlockKey> = (first..first + n).map(|i| block_key(b, i)).collect();
        if !keys.iter().all(|k| disk.contains(k)) {
            return None;
        }
        let blocks = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|k| disk.get(k))
                .collect::<Option<Vec<Bytes>>>()
        })
        .await
        .ok()??;
        Some(Arc::from(blocks))
    }

    /// Spawns the GET of units `first..first + n` of `1 << shift` bytes (blocks from the
    /// disk cache when it has them all); the caller registers it as in flight.
    fn spawn_fetch(self: &Arc<Self>, b: &Base, shift: u8, first: u64, n: u64) -> ChunkFuture {
        let start = first << shift;
        let end = ((first + n) << shift).min(b.len);
        log::trace!("fetch {:?} {start}..{end} in units of 2^{shift}", b.key);
        let fs = self.clone();
        let base = b.clone();
        let task = tokio::spawn(async move {
            let permits = fs
                .reader
                .read_slots
                .clone()
                .acquire_many_owned((end - start).div_ceil(BLOCK) as u32)
                .await
                .map_err(|_| HandleError::Internal("shutting down"))?;
            let on_disk = match shift {
                BLOCK_SHIFT => fs.read_disk_blocks(&base, first, n).await,
                _ => None,
            };
            let r = match on_disk {
                Some(blocks) => Ok(blocks),
                None => {
                    let r = fs.get_units(&base, start..end, 1 << shift).await;
                    if let (Ok(blocks), Some(disk)) = (&r, &fs.reader.disk_cache) {
                        for (j, block) in blocks.iter().enumerate() {
                            disk.put(unit_key(&base, shift, first + j as u64), block.clone());
                        }
                    }
                    r
                }
            };
            if let Ok(blocks) = &r {
                for (j, block) in blocks.iter().enumerate() {
                    fs.reader
                        .block_cache
                        .put(unit_key(&base, shift, first + j as u64), block.clone());
                }
            }
            let mut m = fs.reader.inflight.lock();
            for j in 0..n {
                m.remove(&unit_key(&base, shift, first + j));
            }
            drop(m);
            drop(permits);
            r
        });
        async move {
            task.await
                .unwrap_or_else(|_| Err(HandleError::Internal("read-ahead task failed").into()))
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = BLOCK;

    #[test]
    fn the_window_grows_with_sequential_reads_and_tolerates_reordering() {
        let mut s = ReadState::default();
        assert_eq!(s.observe(0, M), (true, 1));
        assert_eq!(s.observe(M, M), (true, 2));
        // The kernel sent the read at 3M before the one at 2M.
        assert_eq!(s.observe(3 * M, M), (true, 4));
        assert_eq!(s.observe(2 * M, M), (true, 8));
        for _ in 0..10 {
            let n = s.next.unwrap();
            s.observe(n, M);
        }
        assert_eq!(s.window, MAX_WINDOW_BLOCKS);
        // A jump far away is random, and resets the window.
        assert_eq!(s.observe(900 * M, 4096), (false, 0));
        assert_eq!(s.observe(900 * M + 4096, 4096), (true, 1));
    }

    #[test]
    fn a_first_read_elsewhere_than_the_start_is_random() {
        let mut s = ReadState::default();
        assert!(!s.observe(123 * M, 4096).0);
    }
}
