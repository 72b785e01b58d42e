//! Caches bounded in bytes: blocks of object data, keyed so an overwrite can never serve old
//! bytes, and the memory budget that bounds everything held in RAM.
//!
//! Blocks are keyed by (key, ETag, block number): a new version of an object has a new ETag,
//! so its blocks are new entries and the old ones simply age out. The cache never holds more
//! than its byte bound; inserting evicts the least recently used blocks first.

pub mod disk;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lru::LruCache;

/// The size of a cached block. Reads are served and fetched in whole blocks.
pub const BLOCK: u64 = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub key: Arc<str>,
    pub etag: Arc<str>,
    pub index: u64,
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
        BlockKey {
            key: Arc::from("k"),
            etag: Arc::from("e"),
            index: i,
        }
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
    fn shares_add_up_to_the_limit() {
        let s = MemoryShares::split(256 << 20, 8 << 20);
        assert_eq!(
            s.cache + s.read_ahead + s.uploads + s.pool + s.names + OVERHEAD,
            256 << 20
        );
    }
}
