//! Reads: bytes from the spool where the file was changed here, else ranged GETs pinned to the
//! ETag the file was opened at.
//!
//! Pinning (`If-Match`) is what guarantees a reader never gets half of one version and half of
//! another: if another client replaces the object while it is open, the next read that needs
//! S3 fails with `ESTALE` instead. Our own uploads move the pin forward (the bytes are the same
//! ones the reader already sees), so a reader racing with a local flush waits for it to finish
//! and retries once with the new ETag rather than failing.

use bytes::{Bytes, BytesMut};

use super::Fs;
use super::error::{FsError, FsResult};
use super::openfile::Piece;
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
        let mut retried = false;
        loop {
            let (pieces, base, spool) = {
                let s = h.of.lock();
                (s.plan(offset, size as u64), s.base.clone(), s.spool.clone())
            };
            if pieces.is_empty() {
                return Ok(Bytes::new());
            }
            let mut out = BytesMut::new();
            let mut stale = None;
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
                            .ok_or_else(|| FsError::new(libc::EIO, "no base object"))?;
                        match self.read_base(b, r.clone(), seq, window).await {
                            Ok(data) if data.len() as u64 == r.end - r.start => {
                                if pieces.len() == 1 {
                                    return Ok(data);
                                }
                                out.extend_from_slice(&data);
                            }
                            Ok(data) => {
                                return Err(FsError::new(
                                    libc::EIO,
                                    format!(
                                        "{:?} is shorter than expected ({} bytes at {})",
                                        b.key,
                                        data.len(),
                                        r.start
                                    ),
                                ));
                            }
                            Err(e) if e.errno == libc::ESTALE || e.errno == libc::ENOENT => {
                                stale = Some(b.clone());
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            let Some(old) = stale else {
                return Ok(out.freeze());
            };
            // An upload of this very file (a flush, or attributes stored at release) may have
            // replaced the object and not yet moved the pin: let it finish, then look.
            drop(h.of.upload.read().await);
            let moved = h.of.lock().base.as_ref() != Some(&old);
            if moved && !retried {
                retried = true;
                continue;
            }
            return Err(FsError::new(
                libc::ESTALE,
                format!(
                    "{:?} was replaced or deleted in S3 while open; reopen it to read the new version",
                    old.key
                ),
            ));
        }
    }
}
