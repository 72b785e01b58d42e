//! Open files as the namespace sees them: which inode an [`OpenFile`] belongs to, how many
//! handles hold it, and what the inode learns when the last one goes.

use std::sync::Arc;

use super::Namespace;
use super::table::Ino;
use crate::fs::attr::Kind;
use crate::fs::error::{FsError, FsResult, NsError};
use crate::fs::openfile::OpenFile;
use crate::fs::spool::Spool;
use crate::store::ObjectMeta;

/// What `open` got from the namespace.
pub struct Opened {
    pub of: Arc<OpenFile>,
    /// The kernel may keep its cached pages: they hold this same version.
    pub keep_cache: bool,
    /// Where the file is, for reading ahead across a directory's files.
    pub at: (Ino, String),
    /// The open state was made for this handle (no other was open).
    pub created: bool,
}

impl Namespace {
    /// Before opening `ino`: `EISDIR`/`ELOOP` for what cannot be opened, and whether its
    /// version must be checked with S3 first: always, unless the file is open here already or
    /// metadata never expires, so a new open reads what another host closed before it.
    pub fn open_check(&self, ino: Ino) -> FsResult<bool> {
        let now = self.clock.now();
        let st = self.lock();
        let i = st.table.get(ino).ok_or_else(FsError::not_found)?;
        match i.stat.kind {
            Kind::Dir => return Err(NsError::IsADirectory.into()),
            Kind::Symlink => return Err(NsError::IsASymlink.into()),
            Kind::File => {}
            _ => return Err(NsError::SpecialFile.into()),
        }
        Ok(i.open.is_none() && i.remote && (i.etag.is_none() || !i.fresh(now, self.cfg.open_ttl)))
    }

    /// Attaches a handle to `ino`: its open state, shared by every handle and made for the
    /// first one from the object the inode stands for.
    pub fn attach(&self, ino: Ino, truncate: bool) -> FsResult<Opened> {
        let mut st = self.lock();
        let i = st.table.get_mut(ino).ok_or_else(FsError::not_found)?;
        // Pages the kernel cached are still good when the object is the same version.
        let keep_cache = i.etag.is_some() && i.page_cache_etag == i.etag && !truncate;
        // After a truncate the pages will hold data no stored version has (yet).
        i.page_cache_etag = if truncate { None } else { i.etag.clone() };
        let (of, created) = match &i.open {
            Some(of) => (of.clone(), false),
            None => {
                let of = Arc::new(OpenFile::for_object(
                    i.key.clone(),
                    i.stat,
                    i.etag.clone().unwrap_or_default(),
                    i.user_meta.as_ref(),
                ));
                i.open = Some(of.clone());
                (of, true)
            }
        };
        i.handles += 1;
        Ok(Opened {
            of,
            keep_cache,
            at: (i.parent, i.name.clone()),
            created,
        })
    }

    /// The number of handles open on `ino`.
    pub fn handles(&self, ino: Ino) -> u32 {
        self.lock().table.get(ino).map_or(0, |i| i.handles)
    }

    /// A reference to the open state of `ino` goes; the number left.
    pub fn unref(&self, ino: Ino) -> u32 {
        let mut st = self.lock();
        let Some(i) = st.table.get_mut(ino) else {
            return 0;
        };
        i.handles = i.handles.saturating_sub(1);
        i.handles
    }

    /// Detaches the open state `of` from `ino` when no reference to it is left: the inode
    /// keeps its final attributes, and the spool is returned for the caller to release.
    pub fn detach_if_unused(&self, ino: Ino, of: &Arc<OpenFile>) -> Option<Arc<Spool>> {
        let mut st = self.lock();
        let i = st.table.get_mut(ino)?;
        let mut spool = None;
        if i.handles == 0 && i.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, of)) {
            i.stat = of.stat();
            i.open = None;
            spool = of.lock().spool.take();
        }
        st.table.maybe_drop(ino);
        spool
    }

    /// The upload of `of` failed for good: the inode forgets the open state, so the next open
    /// sees what S3 holds. A file that never reached S3 disappears: its name is returned,
    /// for the kernel to forget.
    pub fn gave_up(&self, ino: Ino, of: &Arc<OpenFile>) -> Option<(Ino, String)> {
        let mut st = self.lock();
        let s = st.next_stamp();
        let i = st.table.get_mut(ino)?;
        if i.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, of)) {
            i.open = None;
        }
        i.validated = None;
        i.modified = None;
        i.changed = s;
        // The kernel's pages hold the data that failed to upload.
        i.page_cache_etag = None;
        if i.remote || !i.linked {
            return None;
        }
        let (p, n) = (i.parent, i.name.clone());
        st.table.unlink(p, &n);
        if let Some(l) = st.listings.get_mut(&p) {
            l.remove(&n);
        }
        Some((p, n))
    }

    /// A reader moved the open file of `ino` to the version `meta` another client stored
    /// (no data of the old one was returned yet).
    pub fn repinned(&self, ino: Ino, meta: &ObjectMeta) {
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(i) = st.table.get_mut(ino) {
            if i.etag.as_deref() != Some(meta.etag.as_str()) {
                i.target = None;
            }
            i.etag = Some(meta.etag.clone());
            i.modified = Some(meta.last_modified);
            i.stat.size = meta.size;
            i.stat.mtime = meta.last_modified;
            if let Some(m) = &meta.user_meta {
                i.stat.apply_meta(m, &self.cfg.defaults);
                i.user_meta = Some(m.clone());
            }
            i.validated = Some(now);
            i.page_cache_etag = None;
        }
    }
}
