//! Reads: bytes from the spool where the file was changed here, else ranged GETs pinned to the
//! ETag the file was opened at.
//!
//! Pinning (`If-Match`) is what guarantees a reader never gets half of one version and half of
//! another. If another client replaced the object since the file was opened:
//!
//! * an open file that has returned nothing from S3 yet and has no changes of its own moves to
//!   the new version (a new `open` reads what S3 holds, even when the attributes it was opened
//!   with were a moment old), and the kernel is told its cached size is stale;
//! * otherwise the read fails with `ESTALE`: the application would see two versions mixed.
//!
//! Our own uploads move the pin forward (the bytes are the same ones the reader already sees),
//! so a reader racing with a local flush waits for it to finish and retries once with the new
//! ETag rather than failing.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::Fs;
use super::error::{FsError, FsResult, HandleError};
use super::inode::Ino;
use super::openfile::{Base, OpenFile, Piece};
use super::readahead::Pattern;
use crate::store::ObjectStore;

impl<S: ObjectStore> Fs<S> {
    /// Reads up to `size` bytes at `offset` through handle `fh`.
    pub async fn read(
        self: &std::sync::Arc<Self>,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FsResult<Bytes> {
        let h = self.file_handle(fh)?;
        if let Some(e) = h.of.failure() {
            return Err(e);
        }
        let (seq, window) = h
            .reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(offset, size as u64);
        let how = Pattern {
            seq,
            window,
            state: &h.reads,
        };
        let (mut retried, mut repinned) = (false, false);
        loop {
            let old = match self.read_attempt(&h.of, offset, size as u64, &how).await? {
                Attempt::Read(data) => {
                    let n = data.len() as u64;
                    self.reader.returned(n);
                    return Ok(data);
                }
                Attempt::Stale(old) => old,
            };
            // An upload of this very file (a flush, or attributes stored at release) may have
            // replaced the object and not yet moved the pin: let it finish, then look.
            drop(h.of.upload.read().await);
            let moved = h.of.lock().base.as_ref() != Some(&old);
            if moved && !retried {
                retried = true;
                continue;
            }
            if !moved && !repinned && self.repin(h.ino, &h.of, &old).await? {
                repinned = true;
                continue;
            }
            return Err(HandleError::Replaced(old.key.clone()).into());
        }
    }

    /// One attempt at reading `len` bytes at `offset`, piece by piece as the open file's plan
    /// says: changed bytes from the spool, the others from the pinned version in S3.
    async fn read_attempt(
        self: &std::sync::Arc<Self>,
        of: &OpenFile,
        offset: u64,
        len: u64,
        how: &Pattern<'_>,
    ) -> FsResult<Attempt> {
        let (pieces, base, spool) = {
            let s = of.lock();
            (s.plan(offset, len), s.base.clone(), s.spool.clone())
        };
        if pieces.is_empty() {
            return Ok(Attempt::Read(Bytes::new()));
        }
        let mut out = BytesMut::new();
        for piece in &pieces {
            match piece {
                Piece::Spool(r) => {
                    let start = out.len();
                    out.resize(start + (r.end - r.start) as usize, 0);
                    if let Some(sp) = &spool {
                        sp.read_at(r.start, &mut out[start..])?;
                    }
                }
                Piece::Base(r) => {
                    let b = base
                        .as_ref()
                        .ok_or(HandleError::Internal("no base object"))?;
                    let Some(data) = self.read_base_piece(of, b, r.clone(), how).await? else {
                        return Ok(Attempt::Stale(b.clone()));
                    };
                    if pieces.len() == 1 {
                        return Ok(Attempt::Read(data));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
        Ok(Attempt::Read(out.freeze()))
    }

    /// The range `r` of the pinned version `b`, whole; `None` when S3 no longer holds that
    /// version (replaced or deleted). A short answer is an error, never a short read.
    async fn read_base_piece(
        self: &std::sync::Arc<Self>,
        of: &OpenFile,
        b: &Base,
        r: Range<u64>,
        how: &Pattern<'_>,
    ) -> FsResult<Option<Bytes>> {
        match self.read_base(b, r.clone(), how).await {
            Ok(data) if data.len() as u64 == r.end - r.start => {
                of.lock().served = true;
                Ok(Some(data))
            }
            Ok(data) => Err(HandleError::Short {
                key: b.key.clone(),
                got: data.len() as u64,
                want: r.end - r.start,
                at: r.start,
            }
            .into()),
            Err(e) if e.errno() == libc::ESTALE || e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What one read attempt came to.
enum Attempt {
    /// The bytes asked for.
    Read(Bytes),
    /// The pinned version is no longer in S3: the read may be retried once the pin moves.
    Stale(Base),
}

impl<S: ObjectStore> Fs<S> {
    /// Moves the open file `of` (on `ino`) from `old` to the version of its key S3 holds now,
    /// if nothing of `old` was returned, it has no changes of its own and the new version is
    /// not shorter. True when it moved.
    async fn repin(&self, ino: Ino, of: &OpenFile, old: &Base) -> FsResult<bool> {
        let fresh = {
            let s = of.lock();
            !s.served && !s.dirty && s.present.is_empty() && s.base.as_ref() == Some(old)
        };
        if !fresh {
            return Ok(false);
        }
        let m = match self.store.head(&old.key).await {
            Ok(m) => m,
            Err(crate::store::StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(FsError::from_store(e, &old.key)),
        };
        // A shorter version cannot be read through this open: the kernel fills a short answer
        // with zeros up to the size it was told at open, so the reader would get the new
        // version's bytes to the old version's length (found by the multi-host soak).
        if m.size < old.len {
            return Ok(false);
        }
        if !of.repin(old, &m, &self.config.defaults) {
            return Ok(false);
        }
        log::debug!(
            "{:?} was replaced in S3 since it was opened; reading the new version ({} bytes)",
            old.key,
            m.size
        );
        self.ns.repinned(ino, &m);
        // The kernel's cached size is the old version's: it must ask again before it stops
        // reading at the old end.
        self.kernel_forget_attr(ino);
        self.kernel_delivered().await;
        Ok(true)
    }
}
