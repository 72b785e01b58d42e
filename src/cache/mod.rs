//! Caches bounded in bytes: blocks of object data, keyed so an overwrite can never serve old
//! bytes, and the memory budget that bounds everything held in RAM.
//!
//! Blocks are keyed by (key, ETag, unit size, unit number): a new version of an object has a
//! new ETag, so its blocks are new entries and the old ones simply age out. Sequential reads
//! cache whole 1 MiB blocks; random reads cache smaller aligned units (4 KiB to 256 KiB, see
//! `fs::random`), so the cache holds what was read, not the megabyte around it. A lookup asks
//! for the unit holding one byte, largest unit size first (`cover`). The cache never holds more
//! than its byte bound; inserting evicts the least recently used blocks first.

pub mod attrs;
pub mod disk;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;

/// The size of a cached block: sequential reads are fetched and cached in whole blocks.
pub const BLOCK: u64 = 1 << BLOCK_SHIFT;
/// log2 of [`BLOCK`].
pub const BLOCK_SHIFT: u8 = 20;
/// The unit sizes (log2) the cache holds, largest first: blocks, and the aligned units random
/// reads fetch. Few sizes keep a lookup to a few probes.
pub const UNIT_SHIFTS: [u8; 5] = [20, 18, 16, 14, 12];

/// One cached unit: `1 << shift` bytes (fewer at the object's end) starting at byte
/// `index << shift` of the version `etag` of `key`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub key: Arc<str>,
    pub etag: Arc<str>,
    pub index: u64,
    pub shift: u8,
}

impl BlockKey {
    /// The 1 MiB block `index` of `key` at `etag`.
    pub fn block(key: Arc<str>, etag: Arc<str>, index: u64) -> Self {
        BlockKey {
            key,
            etag,
            index,
            shift: BLOCK_SHIFT,
        }
    }

    /// The unit of `1 << shift` bytes holding byte `at`.
    pub fn unit_at(key: &Arc<str>, etag: &Arc<str>, shift: u8, at: u64) -> Self {
        BlockKey {
            key: key.clone(),
            etag: etag.clone(),
            index: at >> shift,
            shift,
        }
    }

    /// The unit's first byte in the object.
    pub fn start(&self) -> u64 {
        self.index << self.shift
    }
}

struct Inner {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
}

/// An LRU of data blocks bounded in bytes.
pub struct BlockCache {
    inner: Mutex<Inner>,
    cap: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl BlockCache {
    pub fn new(cap: u64) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            cap,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, k: &BlockKey) -> Option<Bytes> {
        let r = self.lock().lru.get(k).cloned();
        match r {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    /// The cached unit of any size holding byte `at` of `key` at `etag`, largest first:
    /// (its first byte, its bytes). Counts one hit or one miss.
    pub fn cover(&self, key: &Arc<str>, etag: &Arc<str>, at: u64) -> Option<(u64, Bytes)> {
        let found = {
            let mut g = self.lock();
            UNIT_SHIFTS.iter().find_map(|&s| {
                let k = BlockKey::unit_at(key, etag, s, at);
                let data = g.lru.get(&k)?.clone();
                // A unit at the object's end may be short: it must reach `at`.
                (k.start() + data.len() as u64 > at).then_some((k.start(), data))
            })
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// True when the block is cached (without counting a hit or a miss).
    pub fn contains(&self, k: &BlockKey) -> bool {
        self.lock().lru.contains(k)
    }

    pub fn put(&self, k: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len > self.cap {
            return;
        }
        let mut g = self.lock();
        if let Some(old) = g.lru.put(k, data) {
            g.bytes -= old.len() as u64;
        }
        g.bytes += len;
        while g.bytes > self.cap {
            match g.lru.pop_lru() {
                Some((_, v)) => g.bytes -= v.len() as u64,
                None => break,
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// How a memory limit is shared between the three users of RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryShares {
    /// Cached blocks.
    pub cache: u64,
    /// Read-ahead in flight.
    pub read_ahead: u64,
    /// Parts being uploaded.
    pub uploads: u64,
    /// Idle buffers kept for reuse (see `crate::buffers`).
    pub pool: u64,
    /// What the namespace knows: cached listings and the inode table (see `fs::namespace`).
    pub names: u64,
}

/// Memory the process needs besides its data buffers: code, the S3 client and its
/// connections, FUSE request buffers, and replies in flight (one block each, at most
/// `MAX_BACKGROUND` plus the worker threads). Measured idle RSS is about 20 MiB.
pub const OVERHEAD: u64 = 40 << 20;

impl MemoryShares {
    /// Splits what `limit` leaves after [`OVERHEAD`], an eighth for idle reusable buffers and
    /// an eighth for names (listings and inodes): half for the cache (read-ahead waits there
    /// until it is read), a quarter each for reads in flight and uploads, each at least what
    /// one request needs. So the whole process stays within `limit`.
    pub fn split(limit: u64, part_size: u64) -> Self {
        let pool = limit / 8;
        let names = limit / 8;
        let data = limit
            .saturating_sub(OVERHEAD)
            .saturating_sub(pool)
            .saturating_sub(names);
        let cache = (data / 2).max(BLOCK);
        let read_ahead = (data / 4).max(8 * BLOCK);
        let uploads = (data - data / 2 - data / 4).max(part_size);
        MemoryShares {
            cache,
            read_ahead,
            uploads,
            pool,
            names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u64) -> BlockKey {
        BlockKey::block(Arc::from("k"), Arc::from("e"), i)
    }

    #[test]
    fn stays_within_its_byte_bound_evicting_the_oldest() {
        let c = BlockCache::new(10);
        c.put(k(1), Bytes::from(vec![0; 4]));
        c.put(k(2), Bytes::from(vec![0; 4]));
        assert!(c.get(&k(1)).is_some()); // 1 is now the most recently used
        c.put(k(3), Bytes::from(vec![0; 4]));
        assert_eq!(c.bytes(), 8);
        assert!(c.get(&k(2)).is_none(), "the least recently used went");
        assert!(c.get(&k(1)).is_some() && c.get(&k(3)).is_some());
        c.put(k(4), Bytes::from(vec![0; 11]));
        assert!(
            c.get(&k(4)).is_none(),
            "a block larger than the cache is not kept"
        );
        assert!(c.bytes() <= 10);
        assert_eq!((c.hits(), c.misses()), (3, 2));
    }

    #[test]
    fn another_etag_is_another_block() {
        let c = BlockCache::new(100);
        c.put(k(0), Bytes::from_static(b"old"));
        let newer = BlockKey {
            etag: Arc::from("e2"),
            ..k(0)
        };
        assert!(c.get(&newer).is_none());
    }

    #[test]
    fn cover_finds_the_unit_of_any_size_holding_a_byte() {
        let c = BlockCache::new(10 << 20);
        let (key, etag): (Arc<str>, Arc<str>) = (Arc::from("k"), Arc::from("e"));
        // A 16 KiB unit at 48 KiB, and the whole block 2.
        c.put(
            BlockKey::unit_at(&key, &etag, 14, 48 << 10),
            Bytes::from(vec![1; 16 << 10]),
        );
        c.put(k(2), Bytes::from(vec![2; 1 << 20]));
        assert_eq!(
            c.cover(&key, &etag, (48 << 10) + 5).map(|(s, d)| (s, d[0])),
            Some((48 << 10, 1))
        );
        assert_eq!(
            c.cover(&key, &etag, (2 << 20) + 7).map(|(s, d)| (s, d[0])),
            Some((2 << 20, 2))
        );
        assert!(
            c.cover(&key, &etag, 64 << 10).is_none(),
            "the next 16 KiB is not cached"
        );
        assert!(
            c.cover(&key, &Arc::from("e2"), (48 << 10) + 5).is_none(),
            "another version"
        );
        // A short last unit does not cover bytes past its end.
        c.put(
            BlockKey::unit_at(&key, &etag, 16, 5 << 20),
            Bytes::from(vec![3; 100]),
        );
        assert!(c.cover(&key, &etag, (5 << 20) + 99).is_some());
        assert!(c.cover(&key, &etag, (5 << 20) + 100).is_none());
    }

    #[test]
    fn shares_add_up_to_the_limit() {
        let s = MemoryShares::split(256 << 20, 8 << 20);
        assert_eq!(
            s.cache + s.read_ahead + s.uploads + s.pool + s.names + OVERHEAD,
            256 << 20
        );
    }
}
