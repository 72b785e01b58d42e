//! chmod, chown, utimes and truncate.
//!
//! Attributes persist as object metadata (see `attr`), so they survive remounts and are seen by
//! other machines and by s3fs. On a file that is not open, a change is stored at once with a
//! self-copy (no data is uploaded again); a directory stores its attributes in its marker
//! object, creating one for an implicit directory. On an open file with unflushed writes, the
//! change rides along with the upload at flush. `truncate` by path is stored at once;
//! `ftruncate` at the next flush. The bucket root has no object to hold attributes, so changing
//! them fails with `EPERM` rather than being accepted and lost.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::attr::{Kind, Stat};
use super::error::{FsError, FsResult};
use super::inode::{Ino, ROOT};
use super::openfile::{Base, OpenFile};
use super::{Attr, Fs};
use crate::store::ObjectStore;

/// The changes one `setattr` asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
    /// The handle, when the change came through one (`fchmod`, `ftruncate`).
    pub fh: Option<u64>,
}

impl SetAttr {
    fn touches_meta(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }

    /// Applies the attribute changes (not the size) to `st`.
    fn apply(&self, st: &mut Stat, now: SystemTime) {
        if let Some(m) = self.mode {
            st.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = self.uid {
            st.uid = u;
        }
        if let Some(g) = self.gid {
            st.gid = g;
        }
        if let Some(t) = self.atime {
            st.atime = t;
        }
        if let Some(t) = self.mtime {
            st.mtime = t;
        }
        if self.touches_meta() {
            st.ctime = now;
        }
    }
}

impl<S: ObjectStore> Fs<S> {
    pub async fn setattr(&self, ino: Ino, sa: SetAttr) -> FsResult<Attr> {
        self.check_writable()?;
        let inode = self
            .table()
            .get(ino)
            .cloned()
            .ok_or_else(FsError::not_found)?;
        if sa.size.is_some() && inode.stat.kind != Kind::File {
            return Err(FsError::new(
                if inode.is_dir() {
                    libc::EISDIR
                } else {
                    libc::EINVAL
                },
                "only regular files can be truncated",
            ));
        }
        let now = SystemTime::now();
        if let Some(of) = &inode.open {
            self.setattr_open(ino, of, sa, now).await?;
        } else if inode.stat.kind == Kind::Dir {
            self.setattr_dir(ino, sa, now).await?;
        } else if sa.size.is_some() {
            // truncate(2) by path: open, change, upload, close.
            let fh = self.open(ino, libc::O_RDWR).await?;
            let h = self.file_handle(fh)?;
            let r = self.setattr_open(ino, &h.of, sa, now).await;
            let closed = self.release(fh).await;
            r?;
            closed?;
        } else if sa.touches_meta() {
            self.setattr_object(ino, sa, now).await?;
        }
        let mut t = self.table();
        if t.get(ino).is_none() {
            return Err(FsError::not_found());
        }
        Ok(self.attr_of(&mut t, ino, false))
    }

    async fn setattr_open(
        &self,
        ino: Ino,
        of: &Arc<OpenFile>,
        sa: SetAttr,
        now: SystemTime,
    ) -> FsResult<()> {
        if let Some(len) = sa.size {
            self.truncate_open(of, len).await?;
        }
        let content_dirty = {
            let mut s = of.lock();
            let before = s.stat;
            sa.apply(&mut s.stat, now);
            if s.stat != before {
                s.meta_dirty = true;
            }
            s.dirty
        };
        // Changes by path are durable at once; through a handle they wait for the data's flush.
        if sa.fh.is_none() || !content_dirty {
            self.flush_file(ino, of).await?;
        }
        Ok(())
    }

    /// chmod/chown/utimes of a file or symlink that is not open: a self-copy.
    async fn setattr_object(&self, ino: Ino, sa: SetAttr, now: SystemTime) -> FsResult<()> {
        let needs_head = {
            let t = self.table();
            let i = t.get(ino).ok_or_else(FsError::not_found)?;
            i.user_meta.is_none() || i.etag.is_none() || !i.fresh(self.config.metadata_ttl)
        };
        if needs_head {
            if let Some(i) = self.table().get_mut(ino) {
                i.validated = None;
            }
            self.getattr(ino).await?;
        }
        let (key, mut stat, etag, meta) = {
            let t = self.table();
            let i = t.get(ino).ok_or_else(FsError::not_found)?;
            (
                i.key.clone(),
                i.stat,
                i.etag.clone().unwrap_or_default(),
                i.user_meta.clone(),
            )
        };
        sa.apply(&mut stat, now);
        let new_meta = stat.to_meta(meta.as_ref());
        let base = Base {
            key: key.clone(),
            etag,
            len: stat.size,
        };
        let etag = self.copy_with_meta(&key, &base, &new_meta).await?;
        let mut t = self.table();
        if let Some(i) = t.get_mut(ino) {
            i.stat = stat;
            i.etag = Some(etag);
            i.user_meta = Some(new_meta);
            i.validated = Some(Instant::now());
        }
        Ok(())
    }

    /// Attributes of a directory live in its marker object.
    async fn setattr_dir(&self, ino: Ino, sa: SetAttr, now: SystemTime) -> FsResult<()> {
        if !sa.touches_meta() {
            return Ok(());
        }
        let (key, mut stat, meta) = {
            let t = self.table();
            let i = t.get(ino).ok_or_else(FsError::not_found)?;
            (i.key.clone(), i.stat, i.user_meta.clone())
        };
        if ino == ROOT && key.is_empty() {
            return Err(FsError::new(
                libc::EPERM,
                "the bucket root has no object to store attributes in",
            ));
        }
        sa.apply(&mut stat, now);
        let new_meta = stat.to_meta(meta.as_ref());
        let put = self
            .store
            .put(&key, Bytes::new(), &new_meta)
            .await
            .map_err(|e| FsError::from_store(e, &key))?;
        let mut t = self.table();
        if let Some(i) = t.get_mut(ino) {
            i.stat = stat;
            i.etag = Some(put.etag);
            i.user_meta = Some(new_meta);
            i.has_marker = true;
            i.validated = Some(Instant::now());
        }
        Ok(())
    }
}
