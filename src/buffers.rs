//! Reusing large data buffers: cached blocks (1 MiB) and upload parts (8 MiB and up).
//!
//! Every buffer from 256 KiB up is its own mapping (see `run::keep_malloc_honest`), so a fresh
//! one costs a page fault and a zeroed page for every 4 KiB written into it, and freeing it
//! unmaps it again. Profiles of a 1 GiB copy showed a third of the daemon's CPU time in those
//! faults. Buffers handed out here go back to a small pool when the last `Bytes` pointing into
//! them is dropped (a part once uploaded, a block once evicted), and the next fetch or part
//! reuses them; so do the copies of FUSE write requests. The pool keeps at most an eighth of
//! `--memory-limit` (32 MiB by default) idle, counted in the share the limit sets aside for
//! the process itself; buffers in use are counted where they are used, as before.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Buffers smaller than this come from the ordinary heap (no mapping of their own).
const MIN_POOLED: usize = 256 * 1024;
/// Most bytes the process-wide pool keeps idle, unless `set_max_idle` says otherwise.
pub const MAX_IDLE: usize = 32 * 1024 * 1024;

/// Idle buffers, bounded in bytes.
pub struct Pool {
    inner: Mutex<Idle>,
    max_idle: AtomicUsize,
}

struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// The pool every data buffer of the process comes from.
pub static POOL: Pool = Pool::new(MAX_IDLE);

impl Pool {
    pub const fn new(max_idle: usize) -> Pool {
        Pool {
            inner: Mutex::new(Idle {
                buffers: Vec::new(),
                bytes: 0,
            }),
            max_idle: AtomicUsize::new(max_idle),
        }
    }

    /// Bounds the idle bytes (the mount sets it from `--memory-limit`).
    pub fn set_max_idle(&self, bytes: usize) {
        self.max_idle.store(bytes, Ordering::Relaxed);
        let mut p = self.idle();
        while p.bytes > bytes {
            let Some(v) = p.buffers.pop() else { break };
            p.bytes -= v.capacity();
        }
    }

    /// Gives a buffer that was only needed for a while back to the pool.
    pub fn recycle(&self, v: Vec<u8>) {
        if v.capacity() >= MIN_POOLED {
            self.give_back(v);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for `cap` bytes, reused when one of a suitable size is idle.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        if cap >= MIN_POOLED {
            let mut p = self.idle();
            // The smallest idle buffer that fits, and not one much too big (the cache counts
            // a block by its length).
            let best = p
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= cap && v.capacity() <= cap + cap / 4)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut v = p.buffers.remove(i);
                p.bytes -= v.capacity();
                v.clear();
                return v;
            }
        }
        Vec::with_capacity(cap)
    }

    /// A buffer of `len` zero bytes (reused when possible), for reading a file region into.
    pub fn zeroed(&self, len: usize) -> Vec<u8> {
        let mut v = self.take(len);
        v.resize(len, 0);
        v
    }

    /// Shares `v` as `Bytes`; its memory comes back here when the last reference is dropped.
    pub fn freeze(&'static self, v: Vec<u8>) -> Bytes {
        if v.capacity() >= MIN_POOLED {
            Bytes::from_owner(Pooled(v, self))
        } else {
            Bytes::from(v)
        }
    }

    /// Bytes currently idle.
    pub fn idle_bytes(&self) -> usize {
        self.idle().bytes
    }

    /// Keeps `v` for reuse, making room by freeing the buffers idle longest: the pool
    /// follows the sizes in use now (write copies, blocks, parts).
    fn give_back(&self, v: Vec<u8>) {
        let max = self.max_idle.load(Ordering::Relaxed);
        if v.capacity() > max {
            return;
        }
        let mut p = self.idle();
        while p.bytes + v.capacity() > max && !p.buffers.is_empty() {
            let old = p.buffers.remove(0);
            p.bytes -= old.capacity();
        }
        p.bytes += v.capacity();
        p.buffers.push(v);
    }
}

/// Where `O_DIRECT` wants buffers, offsets and lengths to fall: a 4 KiB boundary.
pub const DIRECT_ALIGN: usize = 4096;

/// A pooled buffer whose bytes start at a [`DIRECT_ALIGN`] boundary, for `O_DIRECT` I/O: the
/// kernel moves them by DMA, with no copy through the page cache. Kept in the pool like any
/// other buffer, so its pages stay mapped between uses (a fresh one faults in every 4 KiB).
pub struct Aligned {
    v: Vec<u8>,
    off: usize,
    pool: &'static Pool,
}

impl Aligned {
    pub fn as_slice(&self) -> &[u8] {
        &self.v[self.off..]
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        self.pool.recycle(std::mem::take(&mut self.v));
    }
}

impl Pool {
    /// An empty buffer with room for `len` bytes after its first 4 KiB boundary, always
    /// from the pool (even below the pooled size) and the offset of that boundary.
    fn take_aligned(&self, len: usize) -> (Vec<u8>, usize) {
        let v = self.take((len + DIRECT_ALIGN).max(MIN_POOLED));
        let off = v.as_ptr().align_offset(DIRECT_ALIGN);
        (v, off)
    }

    /// A copy of `data` starting at a 4 KiB boundary.
    pub fn aligned_copy(&'static self, data: &[u8]) -> Aligned {
        let (mut v, off) = self.take_aligned(data.len());
        v.resize(off, 0);
        v.extend_from_slice(data);
        Aligned { v, off, pool: self }
    }

    /// `len` bytes of `file` at `offset` (a 4 KiB boundary), read with `O_DIRECT` when `file`
    /// was opened so, into a buffer nobody zeroes first; bytes past the file's end read as
    /// zeros.
    pub fn aligned_pread(
        &'static self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> std::io::Result<Bytes> {
        use std::os::fd::AsRawFd;
        let padded = len.next_multiple_of(DIRECT_ALIGN);
        let (mut v, off) = self.take_aligned(padded);
        let base = v.as_mut_ptr();
        let mut done = 0usize;
        while done < padded {
            // SAFETY: the buffer's capacity holds `off + padded` bytes and the kernel writes at
            // most `padded - done` bytes at `off + done`.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    base.add(off + done).cast(),
                    padded - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += n as usize;
            // The end of the file (a short read, not a multiple of the block size).
            if n == 0 || done % DIRECT_ALIGN != 0 {
                break;
            }
        }
        // SAFETY: `[off, off + done)` was written by the kernel; the rest up to `off + len`
        // and the bytes before `off` are zeroed here before they are marked initialized.
        unsafe {
            std::ptr::write_bytes(base, 0, off);
            if done < len {
                std::ptr::write_bytes(base.add(off + done), 0, len - done);
            }
            v.set_len(off + len);
        }
        Ok(self.freeze(v).slice(off..off + len))
    }
}

struct Pooled(Vec<u8>, &'static Pool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.1.give_back(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_the_idle_pool_is_bounded() {
        const MIB: usize = 1 << 20;
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(8 * MIB)));
        let mut v = pool.take(MIB);
        v.extend_from_slice(&[7u8; MIB]);
        let ptr = v.as_ptr();
        let b = pool.freeze(v);
        let slice = b.slice(10..20);
        drop(b);
        assert_eq!(&slice[..], &[7u8; 10], "a slice keeps the buffer alive");
        assert_eq!(pool.idle_bytes(), 0);
        drop(slice);
        assert_eq!(pool.idle_bytes(), MIB, "the last reference gives it back");
        let again = pool.zeroed(MIB - 5);
        assert_eq!(again.as_ptr(), ptr, "the same memory is handed out again");
        assert!(again.iter().all(|&x| x == 0), "and it comes back zeroed");
        assert_eq!(pool.idle_bytes(), 0);
        drop(again);
        // Small buffers are not pooled.
        drop(pool.freeze(vec![1u8; 1024]));
        assert_eq!(pool.idle_bytes(), 0);
        // Never more than the bound idle.
        let many: Vec<Bytes> = (0..20).map(|_| pool.freeze(pool.zeroed(MIB))).collect();
        drop(many);
        assert_eq!(pool.idle_bytes(), 8 * MIB);
        // A request much smaller than any idle buffer gets a fresh one, not a 1 MiB one.
        let small = pool.take(300 * 1024);
        assert!(small.capacity() < MIB);
        assert_eq!(pool.idle_bytes(), 8 * MIB);
        // A buffer used for a while and handed back directly.
        let cap = small.capacity();
        pool.recycle(small);
        assert_eq!(
            pool.idle_bytes(),
            7 * MIB + cap,
            "the buffer idle longest made room"
        );
        pool.set_max_idle(2 * MIB);
        assert!(
            pool.idle_bytes() <= 2 * MIB,
            "a lower bound frees the excess"
        );
        let w = pool.take(MIB);
        assert!(pool.idle_bytes() <= MIB);
        pool.recycle(w);
        assert!(pool.idle_bytes() <= 2 * MIB);
        assert!(pool.idle_bytes() >= MIB);
    }
}
