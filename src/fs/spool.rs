//! Local spool files: where written data lives between `write()` and its upload.
//!
//! Each open file that is written gets one sparse file in the spool directory. Positional
//! reads and writes (`pread`/`pwrite`) make it safe to use from several threads without a
//! seek position. Unwritten holes read as zeros, which is exactly what POSIX wants for a file
//! extended by `truncate` or by a write past its end.
//!
//! Each spool has a journal next to it (`recovery`), so data written and never uploaded
//! survives a crash of pailfs.
//!
//! Disk use is bounded by [`SpoolBudget`]: a write that would take the spool over its limit
//! waits until uploads free space, and fails with `ENOSPC` if none frees within the wait bound,
//! so the limit is never exceeded silently and a full disk is never discovered at close.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::error::{FsResult, UploadError};
use super::recovery::{Record, SpoolLog};
use crate::buffers::{DIRECT_ALIGN, POOL};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Reads this long or longer (upload parts) go around the page cache (see `read_bytes`);
/// shorter ones (a small file's whole body) read what the page cache still holds.
const DIRECT_READ_MIN: usize = 1024 * 1024;

/// One spool file. Removed from disk when dropped, unless [`Spool::keep_as`] moved it.
pub struct Spool {
    file: File,
    /// The same file opened with `O_DIRECT`, for large aligned writes (see `write_at`).
    direct: Option<File>,
    path: Mutex<Option<PathBuf>>,
    /// What the spool holds, for recovery after a crash (see `recovery`).
    log: Option<SpoolLog>,
    /// Bytes charged to the budget for this file (its high-water length).
    charged: AtomicU64,
}

impl Spool {
    pub fn create(dir: &Path) -> FsResult<Spool> {
        let name = format!(
            "spool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let direct = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .ok()
        };
        let log = match SpoolLog::create(&log_path(&path)) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!(
                    "cannot journal spool {}: {e}; a crash could not recover it",
                    path.display()
                );
                None
            }
        };
        Ok(Spool {
            file,
            direct,
            log,
            path: Mutex::new(Some(path)),
            charged: AtomicU64::new(0),
        })
    }

    /// Writes `data` at `offset`. Large writes at 4 KiB boundaries (a sequential writer's)
    /// bypass the page cache: filling the page cache of a new file costs more CPU than the
    /// rest of the write path together, and these bytes are read once, by the upload. Other
    /// writes are buffered; the kernel keeps the two views of the file coherent.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> FsResult<()> {
        if let Some(direct) = &self.direct
            && data.len() >= 64 * 1024
            && data.len() % DIRECT_ALIGN == 0
            && offset % DIRECT_ALIGN as u64 == 0
        {
            let buf = POOL.aligned_copy(data);
            if direct.write_all_at(buf.as_slice(), offset).is_ok() {
                return Ok(());
            }
        }
        self.file.write_all_at(data, offset)?;
        Ok(())
    }

    /// `len` bytes from `offset`, as shared bytes for an upload; bytes past the spool's end
    /// read as zeros. A part-sized read at a 4 KiB boundary bypasses the page cache both ways
    /// (the sequential writes that filled it did too): DMA into a pooled buffer, no copy
    /// through the page cache and no zeroing first. Direct reads see buffered writes (the
    /// kernel writes a range's dirty pages back before it reads it directly).
    pub fn read_bytes(&self, offset: u64, len: usize) -> FsResult<Bytes> {
        if let Some(direct) = &self.direct
            && len >= DIRECT_READ_MIN
            && offset % DIRECT_ALIGN as u64 == 0
            && let Ok(b) = POOL.aligned_pread(direct, offset, len)
        {
            return Ok(b);
        }
        let mut buf = POOL.zeroed(len);
        self.read_at(offset, &mut buf)?;
        Ok(POOL.freeze(buf))
    }

    /// Writes `data` at `offset` and journals it when `journal` (a file with a base object:
    /// recovery must know which bytes are new).
    pub fn write_and_note(&self, offset: u64, data: &[u8], journal: bool) -> FsResult<()> {
        self.write_at(offset, data)?;
        if journal {
            self.note(&Record::Wrote {
                off: offset,
                len: data.len() as u64,
            });
        }
        Ok(())
    }

    /// Changes the length to `len` (truncate, or extend with a hole) and journals it.
    pub fn resize(&self, len: u64) -> FsResult<()> {
        self.set_len(len)?;
        self.note(&Record::Size { len });
        Ok(())
    }

    /// Fills `buf` from `offset`; bytes past the spool file's end read as zeros.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    pub fn set_len(&self, len: u64) -> FsResult<()> {
        self.file.set_len(len)?;
        Ok(())
    }

    /// Bytes charged to the budget for this spool.
    pub fn charged(&self) -> u64 {
        self.charged.load(Ordering::SeqCst)
    }

    /// Moves the file to `dest` instead of deleting it (kept for recovery).
    pub fn keep_as(&self, dest: &Path) -> std::io::Result<()> {
        let mut p = self.path.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(src) = p.as_ref() {
            std::fs::rename(src, dest)?;
            let _ = std::fs::remove_file(log_path(src));
            *p = None;
        }
        Ok(())
    }

    /// Leaves the file and its journal on disk when dropped (shutdown with unsaved changes).
    pub fn keep(&self) {
        self.path.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Journals a change of what the spool holds.
    pub fn note(&self, rec: &Record) {
        if let Some(l) = &self.log {
            l.note(rec);
        }
    }
}

/// Spool files made ahead of need: creating a file and its journal costs a new small file more
/// than its write (an `open(O_CREAT)` here takes 100 µs), so a first write takes one
/// ready-made and the next is made in the background. A ready spool is empty and its journal
/// has no record: after a crash, recovery discards such a pair (nothing was written to it).
pub struct SpoolPool {
    dir: PathBuf,
    ready: Mutex<Vec<Spool>>,
    filling: std::sync::atomic::AtomicBool,
}

/// Spool files kept ready.
const READY: usize = 4;

impl SpoolPool {
    pub fn new(dir: PathBuf) -> std::sync::Arc<Self> {
        std::sync::Arc::new(SpoolPool {
            dir,
            ready: Mutex::new(Vec::new()),
            filling: Default::default(),
        })
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<Spool>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, empty spool: a ready one, or one made now.
    pub fn take(self: &std::sync::Arc<Self>) -> FsResult<Spool> {
        let ready = self.ready().pop();
        self.refill();
        match ready {
            Some(sp) => Ok(sp),
            None => Spool::create(&self.dir),
        }
    }

    /// Makes spools until `READY` wait, on the blocking pool (if there is a runtime).
    fn refill(self: &std::sync::Arc<Self>) {
        if self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.filling.store(false, Ordering::Release);
            return;
        };
        let me = self.clone();
        rt.spawn_blocking(move || {
            while me.ready().len() < READY {
                match Spool::create(&me.dir) {
                    Ok(sp) => me.ready().push(sp),
                    Err(_) => break,
                }
            }
            me.filling.store(false, Ordering::Release);
        });
    }
}

/// Runs `io`, a local disk operation that may block (a spool write, a journal append), without
/// holding up the async worker it is called on: on a multi-thread runtime the worker's other
/// tasks move to another thread meanwhile (`block_in_place`); on a current-thread runtime
/// (unit tests) it just runs.
pub fn off_worker<R>(io: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(io),
        _ => io(),
    }
}

fn log_path(spool: &Path) -> PathBuf {
    let mut s = spool.as_os_str().to_owned();
    s.push(".log");
    PathBuf::from(s)
}

impl Drop for Spool {
    fn drop(&mut self) {
        let p = self.path.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = p.as_ref() {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(log_path(path));
        }
    }
}

/// The bound on spool disk use, shared by all open files.
pub struct SpoolBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: tokio::sync::Notify,
    wait: Duration,
}

impl SpoolBudget {
    /// `grow` without waiting: false when the budget has no room now.
    pub fn try_grow(&self, spool: &Spool, new_len: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let have = spool.charged.load(Ordering::SeqCst);
        if new_len <= have {
            return true;
        }
        let extra = new_len - have;
        if *used + extra > self.limit {
            return false;
        }
        *used += extra;
        spool.charged.store(new_len, Ordering::SeqCst);
        true
    }

    pub fn new(limit: u64, wait: Duration) -> Self {
        SpoolBudget {
            limit,
            used: Mutex::new(0),
            freed: tokio::sync::Notify::new(),
            wait,
        }
    }

    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `spool` for growing to `new_len` bytes, waiting for room if needed.
    pub async fn grow(&self, spool: &Spool, new_len: u64) -> FsResult<()> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let notified = self.freed.notified();
            if self.try_grow(spool, new_len) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(UploadError::SpoolFull {
                    used: self.used(),
                    limit: self.limit,
                }
                .into());
            }
        }
    }

    /// Returns everything `spool` was charged.
    pub fn release(&self, spool: &Spool) {
        let had = spool.charged.swap(0, Ordering::SeqCst);
        if had > 0 {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            *used = used.saturating_sub(had);
            self.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_read_as_zeros_and_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let s = Spool::create(dir.path()).unwrap();
            s.write_at(10, b"abc").unwrap();
            let mut buf = [9u8; 16];
            s.read_at(8, &mut buf).unwrap();
            assert_eq!(&buf[..7], &[0, 0, b'a', b'b', b'c', 0, 0]);
            path = s.path.lock().unwrap().clone().unwrap();
            assert!(path.exists());
        }
        assert!(!path.exists());
    }

    /// A part read around the page cache holds exactly what was written: direct (aligned,
    /// large) and buffered (small, unaligned, still dirty in the page cache) writes alike,
    /// zeros in holes and past the end, and a length that is not a multiple of 4 KiB.
    #[test]
    fn a_part_read_around_the_page_cache_is_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::create(dir.path()).unwrap();
        assert!(s.direct.is_some(), "the test directory takes O_DIRECT");
        let big: Vec<u8> = (0..(2 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        s.write_at(0, &big[..1 << 20]).unwrap();
        s.write_at(1 << 20, &big[1 << 20..]).unwrap();
        // Buffered: small and unaligned, over the direct data and past it.
        s.write_at(4097, b"buffered").unwrap();
        s.write_at((2 << 20) + 100, b"tail").unwrap();
        let mut want = big.clone();
        want[4097..4105].copy_from_slice(b"buffered");
        want.resize((2 << 20) + 104, 0);
        want[(2 << 20) + 100..].copy_from_slice(b"tail");
        let len = (2 << 20) + 5000;
        want.resize(len, 0);
        let got = s.read_bytes(0, len).unwrap();
        assert_eq!(got.len(), len);
        assert!(
            got[..] == want[..],
            "direct read differs from what was written"
        );
        let second = s.read_bytes(1 << 20, 1 << 20).unwrap();
        assert!(second[..] == want[1 << 20..2 << 20]);
        // A short read takes the buffered path and agrees.
        assert_eq!(&s.read_bytes(4096, 16).unwrap()[..], &want[4096..4112]);
    }

    #[tokio::test]
    async fn budget_blocks_then_fails_with_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(100, Duration::from_millis(50));
        let a = Spool::create(dir.path()).unwrap();
        let b = Spool::create(dir.path()).unwrap();
        budget.grow(&a, 80).await.unwrap();
        let err = budget.grow(&b, 30).await.unwrap_err();
        assert_eq!(err.errno(), libc::ENOSPC);
        budget.release(&a);
        budget.grow(&b, 30).await.unwrap();
        assert_eq!(budget.used(), 30);
    }
}
