//! Reading object data fast: blocks from the cache, sequential read-ahead with a growing
//! window, concurrent ranged GETs, and direct GETs for random reads.
//!
//! * Sequential detection tolerates the kernel's reordering: with async reads and read-ahead
//!   the kernel has several reads in flight and they can arrive out of order, so a read counts
//!   as sequential when it starts near where the previous ones ended, not only exactly there.
//! * The window starts at one block (the first byte comes back after one small GET) and
//!   doubles with every sequential read up to a maximum; it is fetched in chunks of up to
//!   `CHUNK_BLOCKS` blocks, several at once, like the fastest raw S3 clients.
//! * A random read of a block not cached is one GET of exactly the bytes asked for, never a
//!   whole block: 4 KiB random reads must not turn into 1 MiB downloads.
//! * Every fetch is pinned to the ETag the file was opened at, and in-flight fetches are shared:
//!   two readers of one block wait for one GET. Bytes in flight are bounded by the read-ahead
//!   share of the memory budget (a semaphore counted in blocks).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::Fs;
use super::error::{FsError, FsResult, HandleError};
use super::inode::Ino;
use super::openfile::Base;
use crate::cache::disk::DiskCache;
use crate::cache::{BLOCK, BlockCache, BlockKey};
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

/// What one open file handle has been reading.
#[derive(Debug, Default)]
pub struct ReadState {
    next: Option<u64>,
    window: u64,
}

impl ReadState {
    /// Records a read and returns (sequential, window in blocks).
    pub fn observe(&mut self, off: u64, len: u64) -> (bool, u64) {
        let seq = match self.next {
            None => off == 0,
            Some(n) => off + REORDER_BEHIND >= n && off <= n + REORDER_AHEAD,
        };
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

/// Fetches in flight, by block: the chunk's future and the chunk's first byte.
#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<BlockKey, (ChunkFuture, u64)>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockKey, (ChunkFuture, u64)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        })
    }

    pub fn block_cache(&self) -> &BlockCache {
        &self.block_cache
    }

    /// `name` in `dir` is opened for reading: the name opened before it there, if any.
    pub fn note_open(&self, dir: Ino, name: &str) -> Option<String> {
        let mut c = self.read_cursors.lock().unwrap_or_else(|e| e.into_inner());
        c.put(dir, name.to_string())
    }
}

fn block_key(b: &Base, index: u64) -> BlockKey {
    BlockKey {
        key: Arc::from(b.key.as_str()),
        etag: Arc::from(b.etag.as_str()),
        index,
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Bytes `r` of the object `b`, through the block cache and read-ahead.
    pub(crate) async fn read_base(
        self: &Arc<Self>,
        b: &Base,
        r: Range<u64>,
        seq: bool,
        window: u64,
    ) -> FsResult<Bytes> {
        let end = r.end.min(b.len);
        if r.start >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = (r.start / BLOCK, (end - 1) / BLOCK);
        let available = |i: u64| {
            let k = block_key(b, i);
            self.reader.block_cache.contains(&k)
                || self.reader.inflight.lock().contains_key(&k)
                || self
                    .reader
                    .disk_cache
                    .as_ref()
                    .is_some_and(|d| d.contains(&k))
        };
        if !seq && !(first..=last).all(available) {
            // Random read: exactly the bytes asked for, not cached.
            log::trace!("random read {:?} {}..{}", b.key, r.start, end);
            let _permits = self
                .reader
                .read_slots
                .acquire_many((end - r.start).div_ceil(BLOCK) as u32)
                .await
                .map_err(|_| HandleError::Internal("shutting down"))?;
            return self.get_exact(b, r.start..end).await;
        }
        let blocks = b.len.div_ceil(BLOCK);
        // Read-ahead waits in the cache until it is read: never fetch more than half of it.
        let window = window.min((self.reader.block_cache.cap() / BLOCK / 2).max(1));
        let chunk = if seq {
            window.clamp(1, CHUNK_BLOCKS)
        } else {
            1
        };
        self.start_fetches(b, first, last + 1, chunk);
        if seq {
            let ahead_end = (last + 1 + window).min(blocks);
            self.start_fetches(b, last + 1, ahead_end, chunk);
        }
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
        if pieces.len() == 1 {
            return Ok(pieces.pop().unwrap_or_default());
        }
        let mut out = BytesMut::with_capacity((end - r.start) as usize);
        for p in &pieces {
            out.extend_from_slice(p);
        }
        Ok(out.freeze())
    }

    async fn get_exact(&self, b: &Base, r: Range<u64>) -> FsResult<Bytes> {
        let want = r.end - r.start;
        let data = self
            .store
            .get_range(&b.key, r.clone(), Some(&b.etag))
            .await
            .map_err(|e| FsError::from_store(e, &b.key))?;
        if data.len() as u64 != want {
            return Err(HandleError::Short {
                key: b.key.clone(),
                got: data.len() as u64,
                want,
                at: r.start,
            }
            .into());
        }
        Ok(data)
    }

    /// Bytes `r` of the object in block-sized buffers of their own (see `ChunkFuture`).
    async fn get_blocks(&self, b: &Base, r: Range<u64>) -> FsResult<Arc<[Bytes]>> {
        let want = r.end - r.start;
        let blocks = self
            .store
            .get_range_split(&b.key, r.clone(), Some(&b.etag), BLOCK)
            .await
            .map_err(|e| FsError::from_store(e, &b.key))?;
        let got: u64 = blocks.iter().map(|p| p.len() as u64).sum();
        if got != want || blocks.iter().rev().skip(1).any(|p| p.len() as u64 != BLOCK) {
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
        let blocks = fut.await?;
        let idx = ((i * BLOCK - chunk_start) / BLOCK) as usize;
        Ok(blocks.get(idx).cloned().unwrap_or_default())
    }

    /// Starts GETs for the blocks of `[from, to)` that are neither cached nor in flight, in
    /// chunks of at most `chunk` blocks. Checking and registering happen under one lock, so
    /// two readers never fetch the same block twice.
    pub(super) fn start_fetches(self: &Arc<Self>, b: &Base, from: u64, to: u64, chunk: u64) {
        let mut m = self.reader.inflight.lock();
        let free = |m: &HashMap<BlockKey, (ChunkFuture, u64)>, i: u64| {
            let k = block_key(b, i);
            !m.contains_key(&k) && !self.reader.block_cache.contains(&k)
        };
        let mut i = from;
        while i < to {
            if !free(&m, i) {
                i += 1;
                continue;
            }
            let mut n = 1;
            while n < chunk && i + n < to && free(&m, i + n) {
                n += 1;
            }
            let fut = self.spawn_fetch(b, i, n);
            for j in 0..n {
                m.insert(block_key(b, i + j), (fut.clone(), i * BLOCK));
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

    /// Spawns the GET of blocks `first..first + n`; the caller registers it as in flight.
    fn spawn_fetch(self: &Arc<Self>, b: &Base, first: u64, n: u64) -> ChunkFuture {
        let start = first * BLOCK;
        let end = ((first + n) * BLOCK).min(b.len);
        log::trace!("fetch {:?} blocks {first}..{}", b.key, first + n);
        let fs = self.clone();
        let base = b.clone();
        let task = tokio::spawn(async move {
            let permits = fs
                .reader
                .read_slots
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .map_err(|_| HandleError::Internal("shutting down"))?;
            let r = match fs.read_disk_blocks(&base, first, n).await {
                Some(blocks) => Ok(blocks),
                None => {
                    let r = fs.get_blocks(&base, start..end).await;
                    if let (Ok(blocks), Some(disk)) = (&r, &fs.reader.disk_cache) {
                        for (j, block) in blocks.iter().enumerate() {
                            disk.put(block_key(&base, first + j as u64), block.clone());
                        }
                    }
                    r
                }
            };
            if let Ok(blocks) = &r {
                for (j, block) in blocks.iter().enumerate() {
                    fs.reader
                        .block_cache
                        .put(block_key(&base, first + j as u64), block.clone());
                }
            }
            let mut m = fs.reader.inflight.lock();
            for j in 0..n {
                m.remove(&block_key(&base, first + j));
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
