//! The optional on-disk block cache (`--disk-cache-size`): blocks of object data kept in files
//! under the mount's cache directory, so a re-read after the memory cache evicted them, or
//! after a remount, costs no GET.
//!
//! Blocks are keyed exactly like the memory cache, by (key, ETag, block number): a replaced
//! object has a new ETag, so its old blocks are never served, only aged out. Only whole 1 MiB
//! blocks are kept on disk. Each file starts with its own key, ETag, block number, length and
//! a CRC32C of every 16 KiB page of its data, so a random read takes only the pages it needs
//! (`get_range`) and still checks every byte it serves: a file renamed, truncated, left
//! half-written by a crash or altered on disk (a bad sector, a stray write) is ignored (and
//! deleted, and the block fetched again), never served. Files are
//! written to a temporary name and renamed into place. The index is rebuilt from the files at
//! mount, in their modification order, and bounded in bytes: adding a block evicts (deletes)
//! the least recently used ones. Writes happen on the blocking pool, at most `WRITERS` at
//! once; a block that finds no writer free is simply not kept (it is a cache).

use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::{BLOCK_SHIFT, BlockKey};
use crate::buffers::POOL;

/// Files of earlier formats (no CRC32C, one CRC32C per block) do not match, and are deleted
/// at the next mount.
const MAGIC: &[u8; 8] = b"PAILFSB3";
/// The span of data each stored CRC32C covers: the least a ranged read takes from disk.
pub const PAGE: u64 = 16 << 10;
/// Block files kept open for ranged reads.
const OPEN_FILES: usize = 64;
/// Block files being written at once.
pub const WRITERS: usize = 4;

pub struct DiskCache {
    dir: PathBuf,
    cap: u64,
    state: Mutex<Index>,
    /// Block files kept open for ranged reads: opening one costs more than reading a page.
    /// Never held with `state`.
    open_files: Mutex<LruCache<BlockKey, Arc<std::fs::File>>>,
    writers: Arc<tokio::sync::Semaphore>,
}

struct Index {
    lru: LruCache<BlockKey, Stored>,
    bytes: u64,
}

/// What the index knows of a block file: its data's length and the CRC32C of each page (so a
/// ranged read needs one `pread` and no look at the header).
#[derive(Clone)]
struct Stored {
    len: u64,
    crcs: Arc<[u32]>,
}

impl Stored {
    /// Where the data starts in the file of block `k`.
    fn data_offset(&self, k: &BlockKey) -> u64 {
        (8 + 4 + k.key.len() + 4 + k.etag.len() + 8 + 8 + 4 * self.crcs.len()) as u64
    }
}

fn file_name(k: &BlockKey) -> String {
    let h = crate::private::stable_hash(&[k.key.as_bytes(), k.etag.as_bytes()]);
    format!("{h}-{}", k.index)
}

fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// The CRC32C of each page of `data`.
fn page_crcs(data: &[u8]) -> Vec<u32> {
    data.chunks(PAGE as usize).map(crc32c).collect()
}

fn header(k: &BlockKey, len: u64, crcs: &[u32]) -> Vec<u8> {
    let mut h = Vec::with_capacity(32 + k.key.len() + k.etag.len() + 4 * crcs.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(k.key.len() as u32).to_le_bytes());
    h.extend_from_slice(k.key.as_bytes());
    h.extend_from_slice(&(k.etag.len() as u32).to_le_bytes());
    h.extend_from_slice(k.etag.as_bytes());
    h.extend_from_slice(&k.index.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    for c in crcs {
        h.extend_from_slice(&c.to_le_bytes());
    }
    h
}

/// Reads a block file's header: its key, data length and the CRC32C of each page.
fn read_header(r: &mut impl Read) -> Option<(BlockKey, u64, Vec<u32>)> {
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
    if len > super::BLOCK {
        return None;
    }
    let mut crcs = Vec::with_capacity(len.div_ceil(PAGE) as usize);
    for _ in 0..len.div_ceil(PAGE) {
        let mut crc = [0u8; 4];
        r.read_exact(&mut crc).ok()?;
        crcs.push(u32::from_le_bytes(crc));
    }
    let k = BlockKey::block(Arc::from(key.as_str()), Arc::from(etag.as_str()), index);
    Some((k, len, crcs))
}

/// Pages of block `k` holding bytes `r` from its file `f`, each checked against the CRC32C
/// the index holds: (the first page's offset in the block, the bytes).
fn read_pages(
    f: &std::fs::File,
    k: &BlockKey,
    stored: &Stored,
    r: Range<u64>,
) -> Option<(u64, Bytes)> {
    let (first, last) = (r.start / PAGE, r.end.min(stored.len).div_ceil(PAGE));
    let (from, to) = (first * PAGE, (last * PAGE).min(stored.len));
    let mut buf = POOL.zeroed((to - from) as usize);
    f.read_exact_at(&mut buf, stored.data_offset(k) + from)
        .ok()?;
    let pages = buf
        .chunks(PAGE as usize)
        .zip(&stored.crcs[first as usize..]);
    for (i, (page, crc)) in pages.enumerate() {
        if crc32c(page) != *crc {
            log::warn!(
                "disk cache block {} of {:?} failed its CRC32C check at page {}: deleted, read from S3 again",
                k.index,
                k.key,
                first as usize + i
            );
            return None;
        }
    }
    Some((from, POOL.freeze(buf)))
}

impl DiskCache {
    /// Opens (creating) the cache in `dir`, indexing the blocks a previous mount left.
    pub fn open(dir: &Path, cap: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let path = e.path();
            let valid = std::fs::File::open(&path).ok().and_then(|mut f| {
                let (k, len, crcs) = read_header(&mut f)?;
                let meta = f.metadata().ok()?;
                let hdr = header(&k, len, &crcs).len() as u64;
                (meta.len() == hdr + len && path.file_name()?.to_str()? == file_name(&k))
                    .then(|| (meta.modified().ok(), k, len, crcs))
            });
            match valid {
                Some(v) => found.push(v),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(t, _, _, _)| *t);
        let c = DiskCache {
            dir: dir.to_path_buf(),
            cap,
            state: Mutex::new(Index {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            writers: Arc::new(tokio::sync::Semaphore::new(WRITERS)),
            open_files: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(OPEN_FILES).expect("non-zero"),
            )),
        };
        for (_, k, len, crcs) in found {
            c.admit(k, len, crcs.into());
        }
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a stored block and deletes the least recently used ones beyond the cap.
    fn admit(&self, k: BlockKey, len: u64, crcs: Arc<[u32]>) {
        let mut evicted = Vec::new();
        {
            let mut s = self.lock();
            if let Some(old) = s.lru.put(k, Stored { len, crcs }) {
                s.bytes -= old.len;
            }
            s.bytes += len;
            while s.bytes > self.cap {
                let Some((k, old)) = s.lru.pop_lru() else {
                    break;
                };
                s.bytes -= old.len;
                evicted.push(k);
            }
        }
        for k in evicted {
            self.close(&k);
            let _ = std::fs::remove_file(self.dir.join(file_name(&k)));
        }
    }

    fn open_files(&self) -> std::sync::MutexGuard<'_, LruCache<BlockKey, Arc<std::fs::File>>> {
        self.open_files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block `k`'s file, open (kept open for the next read).
    fn file(&self, k: &BlockKey) -> Option<Arc<std::fs::File>> {
        if let Some(f) = self.open_files().get(k) {
            return Some(f.clone());
        }
        let f = Arc::new(std::fs::File::open(self.dir.join(file_name(k))).ok()?);
        self.open_files().put(k.clone(), f.clone());
        Some(f)
    }

    fn close(&self, k: &BlockKey) {
        self.open_files().pop(k);
    }

    /// Whether the block is on disk (as far as the index knows).
    pub fn contains(&self, k: &BlockKey) -> bool {
        self.lock().lru.contains(k)
    }

    /// The most bytes of blocks kept.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes of blocks on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The block, if it is on disk and its file checks out (blocking: call off the runtime).
    pub fn get(&self, k: &BlockKey) -> Option<Bytes> {
        self.get_range(k, 0..super::BLOCK).map(|(_, data)| data)
    }

    /// The pages of the block holding bytes `r` of it (clipped to its length), if it is on
    /// disk and those pages check out: (the first page's offset in the block, the bytes).
    /// Blocking: call off the runtime, or for a few pages of a file likely in the page cache.
    pub fn get_range(&self, k: &BlockKey, r: Range<u64>) -> Option<(u64, Bytes)> {
        let stored = self.lock().lru.get(k)?.clone();
        if r.start >= stored.len.min(r.end) {
            return None;
        }
        let data = self.file(k).and_then(|f| read_pages(&f, k, &stored, r));
        if data.is_none() {
            let mut s = self.lock();
            if let Some(old) = s.lru.pop(k) {
                s.bytes -= old.len;
            }
            drop(s);
            self.close(k);
            let _ = std::fs::remove_file(self.dir.join(file_name(k)));
        }
        data
    }

    /// Keeps a block, in the background, if a writer is free.
    pub fn put(self: &Arc<Self>, k: BlockKey, data: Bytes) {
        if data.is_empty()
            || data.len() as u64 > self.cap.min(super::BLOCK)
            || k.shift != BLOCK_SHIFT
            || self.contains(&k)
        {
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
            let crcs = page_crcs(&data);
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = crate::private::create_file(&tmp)?;
                f.write_all(&header(&k, data.len() as u64, &crcs))?;
                f.write_all(&data)?;
                std::fs::rename(&tmp, me.dir.join(&name))
            };
            match write() {
                Ok(()) => me.admit(k, data.len() as u64, crcs.into()),
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
        BlockKey::block(Arc::from(key), Arc::from(etag), index)
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

    /// A ranged read takes only the pages it needs, and checks each of them: a page altered
    /// on disk fails the read of that page, even when the pages read before were fine.
    #[tokio::test]
    async fn a_ranged_read_takes_and_checks_only_its_pages() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(DiskCache::open(dir.path(), 4 << 20).unwrap());
        let data: Vec<u8> = (0..super::super::BLOCK).map(|i| (i / PAGE) as u8).collect();
        let key = k("f", "\"e\"", 0);
        c.put(key.clone(), Bytes::from(data));
        settle(&c, super::super::BLOCK).await;
        let (from, got) = c.get_range(&key, 3 * PAGE + 10..3 * PAGE + 20).unwrap();
        assert_eq!((from, got.len() as u64), (3 * PAGE, PAGE));
        assert!(got.iter().all(|&b| b == 3));
        let (from, got) = c.get_range(&key, 5 * PAGE - 1..6 * PAGE + 1).unwrap();
        assert_eq!((from, got.len() as u64), (4 * PAGE, 3 * PAGE));
        // Alter one byte of page 9: page 8 still reads, page 9 fails and the block goes.
        let path = dir.path().join(file_name(&key));
        let hdr = std::fs::metadata(&path).unwrap().len() - super::super::BLOCK;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(hdr + 9 * PAGE + 5) as usize] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert!(c.get_range(&key, 8 * PAGE..8 * PAGE + 1).is_some());
        assert!(c.get_range(&key, 9 * PAGE..9 * PAGE + 1).is_none());
        assert!(!path.exists());
    }
}
