//! Writes, flush and fsync: data goes to the spool at once and to S3 at flush.
//!
//! `write()` only touches local disk, so it is as fast as the spool's disk. A part that the
//! application has finished writing (a sequential writer moved past its end) is uploaded in the
//! background right away, so closing a large file only waits for the last part and the
//! completion. `flush` (every `close()`) and `fsync` upload whatever is left and return the
//! upload's error, if any: the application learns at `close()` that its data is not stored.
//!
//! One exception: a file created here and never written is not stored at a flush. A shell
//! redirect (`echo hi > f`) opens the file, duplicates the descriptor and closes the first
//! one before it writes; storing an empty object at that first close would show other
//! clients (and bucket notifications) an empty file, cost a second PUT, and leave a 0-byte
//! object behind if the daemon died before the write. The empty file is stored at the next
//! flush after a write, at `fsync`, or at the last close (`release`), where `touch` stores it.

use std::sync::Arc;
use std::time::SystemTime;

use super::Fs;
use super::error::{FsResult, HandleError};
use super::inode::Ino;
use super::openfile::OpenFile;
use super::recovery::{BaseRef, Record};
use super::spool::{self, Spool};
use crate::store::ObjectStore;

impl<S: ObjectStore> Fs<S> {
    /// Writes `data` at `offset` through handle `fh`.
    pub async fn write(self: &Arc<Self>, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (h, end) = self.write_target(fh, offset, data.len())?;
        let _data = h.of.data.lock().await;
        let spool = self.spool_of(&h.of)?;
        self.uploader.grow_spool(&spool, end).await?;
        spool::off_worker(|| self.write_spooled(&h.of, &spool, offset, data))
    }

    /// The handle `fh` if `len` bytes may be written at `offset` through it, and where the
    /// write ends.
    fn write_target(
        &self,
        fh: u64,
        offset: u64,
        len: usize,
    ) -> FsResult<(super::handles::FileHandle, u64)> {
        let h = self.file_handle(fh)?;
        if !h.writable {
            return Err(HandleError::NotWritable.into());
        }
        self.check_writable()?;
        if let Some(e) = h.of.failure() {
            return Err(e);
        }
        let end = offset
            .checked_add(len as u64)
            .filter(|e| *e <= self.layout().max_object_size())
            .ok_or(HandleError::TooLarge)?;
        Ok((h, end))
    }

    /// A write served at once on the calling thread (a FUSE thread, inside the runtime's
    /// context), or `None` when it must wait (the file busy, the spool budget full) or fail:
    /// the async path then does it. Most of a small file's write is the hops to the runtime
    /// and back, and the copy of the data the async path needs.
    pub fn write_now(self: &Arc<Self>, fh: u64, offset: u64, data: &[u8]) -> Option<FsResult<u32>> {
        let (h, end) = self.write_target(fh, offset, data.len()).ok()?;
        let _data = h.of.data.try_lock().ok()?;
        let spool = match self.spool_of(&h.of) {
            Ok(sp) => sp,
            Err(e) => return Some(Err(e)),
        };
        if !self.uploader.try_grow_spool(&spool, end) {
            return None;
        }
        Some(self.write_spooled(&h.of, &spool, offset, data))
    }

    /// Writes `data` at `offset` into the file's spool (its budget already grown) and starts
    /// the upload of parts the write completed. The caller holds the file's `data` lock.
    fn write_spooled(
        self: &Arc<Self>,
        of: &Arc<OpenFile>,
        spool: &Spool,
        offset: u64,
        data: &[u8],
    ) -> FsResult<u32> {
        let journal = of.lock().base.is_some();
        spool.write_and_note(offset, data, journal)?;
        let ready = of
            .lock()
            .wrote(self.layout(), offset, data.len() as u64, SystemTime::now());
        for part in ready {
            let fs = self.clone();
            let of = of.clone();
            tokio::spawn(async move { fs.upload_part_early(of, part).await });
        }
        Ok(data.len() as u32)
    }

    /// The file's spool, created on first use. The caller holds the file's `data` lock.
    pub(crate) fn spool_of(&self, of: &OpenFile) -> FsResult<Arc<Spool>> {
        let (open, size) = {
            let s = of.lock();
            if let Some(sp) = &s.spool {
                return Ok(sp.clone());
            }
            let open = Record::Open {
                key: s.key.clone(),
                base: s.base.as_ref().map(|b| BaseRef {
                    key: b.key.clone(),
                    etag: b.etag.clone(),
                    len: b.len,
                }),
                size: s.size,
            };
            (open, s.size)
        };
        let sp = spool::off_worker(|| -> FsResult<Spool> {
            let sp = self.uploader.new_spool()?;
            if size > 0 {
                sp.set_len(size)?;
            }
            sp.note(&open);
            Ok(sp)
        })?;
        let sp = Arc::new(sp);
        of.lock().spool = Some(sp.clone());
        Ok(sp)
    }

    /// `close()`: uploads pending changes and returns the upload's error. When this was the
    /// file's last handle, a failure is final: the data is set aside (see `give_up`).
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.file_handle(fh)?;
        if let Some(e) = h.of.failure() {
            // A version kept beside a conflict's winner is stored; writes after it were
            // refused with the error.
            return if e.is_kept_both() { Ok(()) } else { Err(e) };
        }
        if !h.of.is_dirty() || h.of.never_written() {
            return Ok(());
        }
        let r = {
            let _fence = self.ns.shared().await;
            self.flush_file(h.ino, &h.of).await
        };
        if let Err(e) = &r
            && self.ns.handles(h.ino) <= 1
        {
            self.give_up(h.ino, &h.of, e);
            // close() reports the failure only once the kernel forgot the file's name
            // (a new file that could not be stored disappears).
            self.kernel_delivered().await;
        }
        r
    }

    /// `fsync()`: returns once the file's content and attributes are stored in S3. A failure
    /// leaves the data in place, so the application can retry.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let h = self.file_handle(fh)?;
        if let Some(e) = h.of.failure() {
            return if e.is_kept_both() { Ok(()) } else { Err(e) };
        }
        let _fence = self.ns.shared().await;
        self.flush_file(h.ino, &h.of).await
    }

    /// Uploads `of` if dirty and tells the namespace what was stored.
    /// With `--on-conflict keep-both`, a version kept beside the winner counts as stored: the
    /// open file lets go of the name, which shows the winner from now on.
    pub(crate) async fn flush_file(&self, ino: Ino, of: &Arc<OpenFile>) -> FsResult<()> {
        match self.upload(of).await {
            Ok(Some(stored)) => {
                self.ns
                    .stored(ino, of, &stored.etag, &stored.meta, stored.stat);
            }
            Ok(None) => {}
            Err(e) if e.is_kept_both() => self.set_aside(ino, of, &e),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// `ftruncate`/`O_TRUNC` on an open file: changes the size now, uploads at flush.
    pub(crate) async fn truncate_open(&self, of: &Arc<OpenFile>, len: u64) -> FsResult<()> {
        if len > self.layout().max_object_size() {
            return Err(HandleError::TooLarge.into());
        }
        // Truncation must not race with an upload's view of what S3 holds, nor with a write
        // between its bytes and its bookkeeping.
        let _g = of.upload.write().await;
        let _data = of.data.lock().await;
        let spool = of.lock().spool.clone();
        if let Some(spool) = spool {
            spool::off_worker(|| spool.resize(len))?;
        }
        of.lock().set_size(self.layout(), len, SystemTime::now());
        Ok(())
    }
}
