//! chmod, chown, utimes and truncate.
//!
//! Attributes persist as object metadata (see `attr`), so they survive remounts and are seen by
//! other machines and by s3fs. On a file that is not open, a change is stored at once with a
//! self-copy (no data is uploaded again); a directory stores its attributes in its marker
//! object, creating one for an implicit directory. On an open file with unflushed writes, the
//! change rides along with the upload at flush (see `modify_meta`). A truncation of a file that
//! is not open is stored at once; of an open file (`ftruncate`, `open(O_TRUNC)`, truncate(2) of
//! a file open elsewhere) at its next flush. The bucket root has no object to hold attributes, so changing
//! them fails with `EPERM` rather than being accepted and lost.

use std::time::SystemTime;

use bytes::Bytes;

use std::sync::Arc;

use super::attr::{Kind, Stat};
use super::error::{AttrError, FsError, FsResult, NsError};
use super::inode::{Ino, ROOT};
use super::openfile::OpenFile;
use super::{Attr, Fs};
use crate::store::{ObjectStore, UserMeta};

/// The changes one `setattr` asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
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
    /// `chmod`, `chown`, `truncate`, `utimens`; answers the new attributes under the number
    /// the kernel asked with (see `getattr`).
    pub async fn setattr(&self, asked: Ino, sa: SetAttr) -> FsResult<Attr> {
        self.check_writable()?;
        let ino = self.ns.canon(asked);
        let _fence = self.ns.shared().await;
        let inode = self.ns.get(ino).ok_or_else(FsError::not_found)?;
        if sa.size.is_some() && inode.stat.kind != Kind::File {
            return Err(if inode.is_dir() {
                FsError::from(NsError::IsADirectory)
            } else {
                NsError::NotARegularFile.into()
            });
        }
        let now = SystemTime::now();
        match sa.size {
            Some(len) => {
                self.change_file(ino, Change::Size(len), |st, _| {
                    sa.apply(st, now);
                    Ok(())
                })
                .await?
            }
            None if sa.touches_meta() => {
                self.modify_meta(ino, |st, _| {
                    sa.apply(st, now);
                    Ok(())
                })
                .await?
            }
            None => {}
        }
        let mut attr = self.ns.attr(ino, false)?;
        attr.ino = asked;
        Ok(attr)
    }

    /// Changes an inode's attributes and/or stored metadata with `f`, and stores the result:
    /// in the marker object for a directory; for a file, with its pending upload when it is
    /// open with unflushed data, else at once (a self-copy: the data is not uploaded again).
    /// The caller holds the rename fence.
    ///
    /// The kernel sends `fchmod`, `fchown` and `futimens` without the file handle, exactly as
    /// it sends `chmod` by path, so the two cannot be told apart: a change to a file whose
    /// data is not uploaded yet always rides along with that upload (`tar -x` sets times,
    /// owner and mode on each file before closing it: one PUT, not four requests).
    pub(crate) async fn modify_meta(
        &self,
        ino: Ino,
        f: impl Fn(&mut Stat, &mut UserMeta) -> FsResult<()>,
    ) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.ns.canon(ino);
        if self.ns.get(ino).ok_or_else(FsError::not_found)?.is_dir() {
            return self.modify_dir_meta(ino, f).await;
        }
        self.change_file(ino, Change::Meta, f).await
    }

    /// Applies a change to file `ino` through a handle of its own, held while the change is
    /// made and stored, so the file's open state cannot be detached by a release meanwhile
    /// (a change made to state being detached would be stored nowhere). The change is stored
    /// now when no other handle is open, or, for attributes only, when the file has no
    /// unflushed data; otherwise it rides along with the file's next upload.
    async fn change_file(
        &self,
        ino: Ino,
        change: Change,
        f: impl Fn(&mut Stat, &mut UserMeta) -> FsResult<()>,
    ) -> FsResult<()> {
        self.ensure_meta(ino).await?;
        let opened = self.ns.attach(ino, false)?;
        let of = opened.of;
        let r = self.apply_change(ino, &of, change, &f).await;
        if r.is_err() && opened.created {
            // Nobody else has the change: it is not stored later either.
            self.drop_handle_ref(ino, &of);
            return r;
        }
        let released = self.let_go(ino, &of, false).await;
        r.and(released)
    }

    async fn apply_change(
        &self,
        ino: Ino,
        of: &Arc<OpenFile>,
        change: Change,
        f: &impl Fn(&mut Stat, &mut UserMeta) -> FsResult<()>,
    ) -> FsResult<()> {
        if let Change::Size(len) = change {
            self.truncate_open(of, len).await?;
        }
        let content_dirty = {
            let mut s = of.lock();
            let (mut st, mut meta) = (s.stat, s.foreign_meta.clone());
            f(&mut st, &mut meta)?;
            check_meta_size(&st.to_meta(Some(&meta)))?;
            if st != s.stat || meta != s.foreign_meta {
                s.stat = st;
                s.foreign_meta = meta;
                s.meta_dirty = true;
                s.meta_version += 1;
            }
            s.dirty
        };
        let alone = self.ns.handles(ino) <= 1;
        let now = match change {
            Change::Size(_) => alone,
            Change::Meta => alone || !content_dirty,
        };
        if now {
            self.flush_file(ino, of).await?;
        }
        Ok(())
    }

    /// Makes sure the inode's stored metadata was read (a HEAD when missing or stale).
    pub(crate) async fn ensure_meta(&self, ino: Ino) -> FsResult<()> {
        if self.ns.needs_meta(ino)? {
            self.ns.expire(ino);
            self.head_checked_attr(ino).await?;
        }
        Ok(())
    }

    /// Attributes of a directory live in its marker object (created for implicit ones). What
    /// else the marker holds (another tool's metadata) is kept.
    async fn modify_dir_meta(
        &self,
        ino: Ino,
        f: impl Fn(&mut Stat, &mut UserMeta) -> FsResult<()>,
    ) -> FsResult<()> {
        let i = self.ns.get(ino).ok_or_else(FsError::not_found)?;
        if ino == ROOT && i.key.is_empty() {
            return Err(NsError::RootHasNoObject.into());
        }
        let (mut stat, mut meta) = (i.stat, i.user_meta.clone());
        if meta.is_none() || self.ns.needs_meta(ino)? {
            // A directory known from a listing: its marker, if any, may hold metadata.
            meta = match self.store.head(&i.key).await {
                Ok(m) => {
                    if let Some(um) = &m.user_meta {
                        stat.apply_meta(um, &self.config.defaults);
                    }
                    m.user_meta
                }
                Err(crate::store::StoreError::NotFound) => None,
                Err(e) => return Err(FsError::from_store(e, &i.key)),
            };
        }
        let mut meta = meta.unwrap_or_default();
        f(&mut stat, &mut meta)?;
        let new_meta = stat.to_meta(Some(&meta));
        check_meta_size(&new_meta)?;
        let put = self
            .store
            .put(&i.key, Bytes::new(), &new_meta)
            .await
            .map_err(|e| FsError::from_store(e, &i.key))?;
        self.ns.meta_stored(ino, stat, put.etag, new_meta);
        Ok(())
    }
}

/// What `change_file` changes besides attributes.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Attributes and metadata only.
    Meta,
    /// The size too (truncate).
    Size(u64),
}

/// S3 allows 2 KiB of user metadata per object (names and values together).
pub const MAX_META_BYTES: usize = 2048;

fn check_meta_size(m: &UserMeta) -> FsResult<()> {
    let total: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_META_BYTES {
        return Err(AttrError::TooBig {
            total,
            max: MAX_META_BYTES,
        }
        .into());
    }
    Ok(())
}
