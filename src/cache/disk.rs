//! The optional on-disk block cache (`--disk-cache-size`): blocks of object data kept in files
//! under the mount's cache directory, so a re-read after the memory cache evicted them, or
//! after a remount, costs no GET.
//!
//! Blocks are keyed exactly like the memory cache, by (key, ETag, block number): a replaced
//! object has a new ETag, so its old blocks are never served, only aged out. Each file starts
//! with its own key, ETag, block number, length and the CRC32C of its data, checked on every
//! read, so a file renamed, truncated, left half-written by a crash or altered on disk (a bad
//! sector, a stray write) is ignored (and deleted, and the block fetched again), never served. Files are
//! written to a temporary name and renamed into place. The index is rebuilt from the files at
//! mount, in their modification order, and bounded in bytes: adding a block evicts (deletes)
//! the least recently used ones. Writes happen on the blocking pool, at most `WRITERS` at
//! once; a block that finds no writer free is simply not kept (it is a cache).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::BlockKey;
use crate::buffers::POOL;

/// Files of the first format (no CRC32C) do not match, and are deleted at the next mount.
const MAGIC: &[u8; 8] = b"PAILFSB2";
/// Block files being written at once.
pub const WRITERS: usize = 4;

pub struct DiskCache {
    dir: PathBuf,
    cap: u64,
    state: Mutex<Index>,
    writers: Arc<tokio::sync::Semaphore>,
}

struct Index {
    lru: LruCache<BlockKey, u64>,
    bytes: u64,
}

fn file_name(k: &BlockKey) -> String {
    let h = crate::private::stable_hash(&[k.key.as_bytes(), k.etag.as_bytes()]);
    format!("{h}-{}", k.index)
}

fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

fn header(k: &BlockKey, len: u64, crc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(36 + k.key.len() + k.etag.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(k.key.len() as u32).to_le_bytes());
    h.extend_from_slice(k.key.as_bytes());
    h.extend_from_slice(&(k.etag.len() as u32).to_le_bytes());
    h.extend_from_slice(k.etag.as_bytes());
    h.extend_from_slice(&k.index.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Reads a block file's header: its key, data length and data CRC32C.
fn read_header(r: &mut impl Read) -> Option<(BlockKey, u64, u32)> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).ok()?;
    if &magic != MAGIC {
        return None;
    }
    let mut text = || -> Option<String> {
        let mut n = [0u8; 4];
        r.read_exact(&mut n).ok()?;
        let n = u32::from_le_bytes(n) as usize;
        if n > 4096 {
            return None;
        }
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).ok()?;
        String::from_utf8(b).ok()
    };
    let key = text()?;
    let etag = text()?;
    let mut n = [0u8; 8];
    r.read_exact(&mut n).ok()?;
    let index = u64::from_le_bytes(n);
    r.read_exact(&mut n).ok()?;
    let len = u64::from_le_bytes(n);
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc).ok()?;
    Some((
        BlockKey {
            key: Arc::from(key.as_str()),
            etag: Arc::from(etag.as_str()),
            index,
        },
        len,
        u32::from_le_bytes(crc),
    ))
}

impl DiskCache {
    /// Opens (creating) the cache in `dir`, indexing the blocks a previous mount left.
    pub fn open(dir: &Path, cap: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let path = e.path();
            let valid = std::fs::File::open(&path).ok().and_then(|mut f| {
                let (k, len, crc) = read_header(&mut f)?;
                let meta = f.metadata().ok()?;
                let hdr = header(&k, len, crc).len() as u64;
                (meta.len() == hdr + len && path.file_name()?.to_str()? == file_name(&k))
                    .then(|| (meta.modified().ok(), k, len))
            });
            match valid {
                Some(v) => found.push(v),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(t, _, _)| *t);
        let c = DiskCache {
            dir: dir.to_path_buf(),
            cap,
            state: Mutex::new(Index {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            writers: Arc::new(tokio::sync::Semaphore::new(WRITERS)),
        };
        for (_, k, len) in found {
            c.admit(k, len);
        }
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a stored block and deletes the least recently used ones beyond the cap.
    fn admit(&self, k: BlockKey, len: u64) {
        let mut evicted = Vec::new();
        {
            let mut s = self.lock();
            if let Some(old) = s.lru.put(k, len) {
                s.bytes -= old;
            }
            s.bytes += len;
            while s.bytes > self.cap {
                let Some((k, l)) = s.lru.pop_lru() else { break };
                s.bytes -= l;
                evicted.push(k);
            }
        }
        for k in evicted {
            let _ = std::fs::remove_file(self.dir.join(file_name(&k)));
        }
    }

    /// Whether the block is on disk (as far as the index knows).
    pub fn contains(&self, k: &BlockKey) -> bool {
        self.lock().lru.contains(k)
    }

    /// Bytes of blocks on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The block, if it is on disk and its file checks out (blocking: call off the runtime).
    pub fn get(&self, k: &BlockKey) -> Option<Bytes> {
        let len = *self.lock().lru.get(k)?;
        let path = self.dir.join(file_name(k));
        let read = || -> Option<Bytes> {
            let mut f = std::io::BufReader::new(std::fs::File::open(&path).ok()?);
            let (found, flen, crc) = read_header(&mut f)?;
            if found != *k || flen != len {
                return None;
            }
            let mut buf = POOL.zeroed(len as usize);
            f.read_exact(&mut buf).ok()?;
            if crc32c(&buf) != crc {
                log::warn!(
                    "disk cache block {} of {:?} failed its CRC32C check: deleted, read from S3 again",
                    k.index,
                    k.key
                );
                return None;
            }
            Some(POOL.freeze(buf))
        };
        let data = read();
        if data.is_none() {
            let mut s = self.lock();
            if let Some(l) = s.lru.pop(k) {
                s.bytes -= l;
            }
            drop(s);
            let _ = std::fs::remove_file(&path);
        }
        data
    }

    /// Keeps a block, in the background, if a writer is free.
    pub fn put(self: &Arc<Self>, k: BlockKey, data: Bytes) {
        if data.is_empty() || data.len() as u64 > self.cap || self.contains(&k) {
            return;
        }
        let Ok(permit) = self.writers.clone().try_acquire_owned() else {
            return;
        };
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let name = file_name(&k);
            let tmp = me.dir.join(format!(".{name}.tmp"));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = crate::private::create_file(&tmp)?;
                f.write_all(&header(&k, data.len() as u64, crc32c(&data)))?;
                f.write_all(&data)?;
                std::fs::rename(&tmp, me.dir.join(&name))
            };
            match write() {
                Ok(()) => me.admit(k, data.len() as u64),
                Err(e) => {
                    log::debug!("block not kept on disk: {e}");
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(key: &str, etag: &str, index: u64) -> BlockKey {
        BlockKey {
            key: Arc::from(key),
            etag: Arc::from(etag),
            index,
        }
    }

    async fn settle(c: &DiskCache, bytes: u64) {
        for _ in 0..200 {
            if c.bytes() == bytes {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("disk cache holds {} bytes, not {bytes}", c.bytes());
    }

    #[tokio::test]
    async fn blocks_survive_a_reopen_are_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(DiskCache::open(dir.path(), 10).unwrap());
        c.put(k("a/b\nc", "\"e1\"", 0), Bytes::from_static(b"hello"));
        settle(&c, 5).await;
        c.put(k("a/b\nc", "\"e1\"", 1), Bytes::from_static(b"world"));
        settle(&c, 10).await;
        assert_eq!(
            c.get(&k("a/b\nc", "\"e1\"", 0)).unwrap(),
            Bytes::from_static(b"hello")
        );
        // Another version of the object is another block.
        assert!(c.get(&k("a/b\nc", "\"e2\"", 0)).is_none());
        // Over the cap: the least recently used block (1) goes, file and all.
        c.put(k("x", "\"e\"", 0), Bytes::from_static(b"12345"));
        for _ in 0..200 {
            if c.contains(&k("x", "\"e\"", 0)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(c.bytes(), 10);
        assert!(c.get(&k("a/b\nc", "\"e1\"", 1)).is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        drop(c);
        // A remount finds them; a damaged file is dropped, not served.
        let damaged = dir.path().join(file_name(&k("x", "\"e\"", 0)));
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes.pop();
        std::fs::write(&damaged, bytes).unwrap();
        std::fs::write(dir.path().join("junk"), b"not a block").unwrap();
        let c = DiskCache::open(dir.path(), 10).unwrap();
        assert_eq!(c.bytes(), 5);
        assert_eq!(
            c.get(&k("a/b\nc", "\"e1\"", 0)).unwrap(),
            Bytes::from_static(b"hello")
        );
        assert!(c.get(&k("x", "\"e\"", 0)).is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A byte changed on disk, length and header intact: the CRC32C catches it, the block is
    /// not served and its file goes.
    #[tokio::test]
    async fn a_block_altered_on_disk_fails_its_crc_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(DiskCache::open(dir.path(), 100).unwrap());
        let key = k("f", "\"e\"", 3);
        c.put(key.clone(), Bytes::from_static(b"precious data"));
        settle(&c, 13).await;
        let path = dir.path().join(file_name(&key));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        assert!(c.get(&key).is_none());
        assert!(!path.exists());
        assert_eq!(c.bytes(), 0);
    }
}
