//! rename(2) on an object store, which has no rename: copy, then delete.
//!
//! Files: a server-side CopyObject (UploadPartCopy above 5 GiB) to the new key, which replaces
//! any object there as a whole, then a DELETE of the old key. A file with unflushed writes is
//! flushed first; a file created here and never uploaded is renamed in memory only.
//!
//! Directories: every key under the old prefix is copied, and only when all copies succeeded
//! are the old keys deleted, so a failure midway loses nothing (the copies made are removed).
//! It is not atomic: while it runs, another S3 client can see both trees, or a partial new
//! tree; the mount itself shows the rename only once it is done. Directories holding more than
//! `max_rename_objects` keys are refused with `EPERM` and a log line naming the limit.
//!
//! `RENAME_NOREPLACE` is honoured; `RENAME_EXCHANGE` and `RENAME_WHITEOUT` cannot be done
//! atomically on S3 and answer `EINVAL`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::Fs;
use super::error::{FsError, FsResult};
use super::inode::{Ino, Inode};
use super::names::{self, child_key, child_prefix};
use super::openfile::{Base, OpenFile};
use crate::store::{ListRequest, ObjectMeta, ObjectStore, Pages, StoreError};

const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
const RENAME_WHITEOUT: u32 = libc::RENAME_WHITEOUT;

impl<S: ObjectStore> Fs<S> {
    pub async fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        if flags & (RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
            log::info!(
                "rename with RENAME_EXCHANGE/RENAME_WHITEOUT cannot be atomic on S3 (EINVAL)"
            );
            return Err(FsError::new(
                libc::EINVAL,
                "exchange/whiteout renames are not supported",
            ));
        }
        let name = names::name_from_os(name)?;
        let newname = names::name_from_os(newname)?;
        let (parent, newparent) = (self.canon(parent), self.canon(newparent));
        let src = self.child_inode(parent, name).await?;
        let name = src.name.clone();
        let name = name.as_str();
        // Case-insensitive mode: the target may be another spelling of the source itself (a
        // rename that only changes case), or of an existing entry, which it replaces.
        let mut case_only = false;
        if self.config.case_insensitive {
            let existing = self.ci_existing(newparent, newname).await?;
            if parent == newparent && existing.as_deref() == Some(name) {
                case_only = newname != name;
                if !case_only {
                    return Ok(());
                }
            } else if let Some(other) = existing.filter(|o| o != newname) {
                self.ci_check_create(newparent, newname, "rename").await?;
                log::debug!("rename onto {newname:?} replaces {other:?}");
            }
        }
        let dst = if case_only {
            None
        } else {
            match self.child_inode(newparent, newname).await {
                Ok(d) => Some(d),
                Err(e) if e.errno == libc::ENOENT => None,
                Err(e) => return Err(e),
            }
        };
        if let Some(d) = &dst {
            if d.ino == src.ino {
                return Ok(());
            }
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::new(libc::EEXIST, format!("{newname:?} exists")));
            }
            match (src.is_dir(), d.is_dir()) {
                (true, false) => {
                    return Err(FsError::new(libc::ENOTDIR, "target is not a directory"));
                }
                (false, true) => return Err(FsError::new(libc::EISDIR, "target is a directory")),
                (true, true) if !self.dir_is_empty(d.ino, &d.key).await? => {
                    return Err(FsError::new(libc::ENOTEMPTY, "target directory not empty"));
                }
                _ => {}
            }
        }
        let new_dir_key = self.parent_dir_key(newparent)?;
        // A file replaced by the rename lives on through its open handles, unlinked: it must
        // not be uploaded over the renamed file when they close.
        let replaced = dst.as_ref().and_then(|d| d.open.clone());
        let _replaced_guard = match &replaced {
            Some(of) => Some(of.upload.write().await),
            None => None,
        };
        if src.is_dir() {
            let new_prefix = child_prefix(&new_dir_key, newname);
            if new_prefix.starts_with(&src.key) {
                return Err(FsError::new(
                    libc::EINVAL,
                    "cannot move a directory into itself",
                ));
            }
            self.rename_dir(&src, &new_prefix).await?;
            self.finish_rename(src.ino, parent, name, newparent, newname, new_prefix);
        } else {
            let new_key = child_key(&new_dir_key, newname);
            self.rename_file(&src, &new_key).await?;
            self.finish_rename(src.ino, parent, name, newparent, newname, new_key);
        }
        if let Some(of) = &replaced {
            of.lock().mark_unlinked();
        }
        if let Some(d) = &dst {
            if !src.remote && d.remote && d.name == newname && !d.is_dir() {
                // A file not uploaded yet replaced an object: the object goes now, as the
                // name no longer shows it (the new content follows at close).
                self.store
                    .delete(&d.key)
                    .await
                    .map_err(|e| FsError::from_store(e, &d.key))?;
            }
            if d.name != newname {
                // A target of another spelling keeps its own key and name: remove both.
                if d.remote {
                    let _ = self.store.delete(&d.key).await;
                }
                {
                    let mut t = self.table();
                    if t.child(newparent, &d.name).map(|c| c.ino) == Some(d.ino) {
                        t.unlink(newparent, &d.name);
                    }
                }
                self.name_removed(newparent, &d.name, d.ino);
            } else {
                self.ci_drop_aliases(d.ino);
            }
        }
        Ok(())
    }

    fn finish_rename(
        &self,
        ino: Ino,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
        key: String,
    ) {
        let mut t = self.table();
        t.relink(ino, newparent, newname, key);
        if let Some(i) = t.get_mut(ino) {
            i.validated = Some(Instant::now());
        }
        drop(t);
        self.negative_remove(newparent, newname);
        self.negative_insert(parent, name);
        self.name_removed(parent, name, ino);
        let kind = self
            .table()
            .get(ino)
            .map(|i| i.stat.kind)
            .unwrap_or(super::attr::Kind::File);
        self.name_added(newparent, newname, kind);
        // rename(2) may update the moved inode's ctime; Linux file systems do.
        if let Some(i) = self.table().get_mut(ino) {
            i.stat.ctime = std::time::SystemTime::now();
        }
    }

    async fn rename_file(&self, src: &Inode, new_key: &str) -> FsResult<()> {
        if !src.remote {
            // Never uploaded: only the key it will be uploaded to changes.
            if let Some(of) = &src.open {
                let _g = of.upload.write().await;
                of.rekey(new_key);
            }
            return Ok(());
        }
        if let Some(of) = &src.open
            && of.is_dirty()
        {
            self.flush_file(src.ino, of).await?;
        }
        let (etag, size, meta) = {
            let t = self.table();
            let i = t.get(src.ino).ok_or_else(FsError::not_found)?;
            let etag = match &i.open {
                Some(of) => of.etag(),
                None => i.etag.clone(),
            };
            (etag, i.stat.size, i.user_meta.clone())
        };
        let new_etag = self
            .copy_object(&src.key, new_key, etag.as_deref(), size, meta.as_ref())
            .await?;
        if let Some(of) = &src.open {
            let _g = of.upload.write().await;
            of.moved(&src.key, new_key, &new_etag);
        }
        self.store
            .delete(&src.key)
            .await
            .map_err(|e| FsError::from_store(e, &src.key))?;
        if let Some(i) = self.table().get_mut(src.ino) {
            i.etag = Some(new_etag);
        }
        Ok(())
    }

    /// Copies one object of any size, keeping its metadata; returns the new ETag.
    async fn copy_object(
        &self,
        src: &str,
        dst: &str,
        etag: Option<&str>,
        size: u64,
        meta: Option<&crate::store::UserMeta>,
    ) -> FsResult<String> {
        if size <= self.config.max_single_copy {
            return self
                .store
                .copy(src, dst, None, etag)
                .await
                .map(|p| p.etag)
                .map_err(|e| FsError::from_store(e, src));
        }
        let head;
        let (etag, meta) = match (etag, meta) {
            (Some(e), Some(m)) => (e.to_string(), m.clone()),
            _ => {
                head = self
                    .store
                    .head(src)
                    .await
                    .map_err(|e| FsError::from_store(e, src))?;
                (
                    head.etag.clone(),
                    head.user_meta.clone().unwrap_or_default(),
                )
            }
        };
        let base = Base {
            key: src.to_string(),
            etag,
            len: size,
        };
        self.multipart_copy(src, dst, &base, &meta).await
    }

    /// Copies every key under `src.key` to `new_prefix`, then deletes the originals.
    async fn rename_dir(&self, src: &Inode, new_prefix: &str) -> FsResult<()> {
        let old_prefix = src.key.clone();
        // Open files below with unflushed data go first, so S3 holds what is copied.
        let open: Vec<(Ino, Arc<OpenFile>)> = {
            let t = self.table();
            let mut v = Vec::new();
            self.collect_open_below(&t, src.ino, &mut v);
            v
        };
        for (ino, of) in &open {
            if of.is_dirty() && self.table().get(*ino).is_some_and(|i| i.remote) {
                self.flush_file(*ino, of).await?;
            }
        }
        let keys = self.list_all(&old_prefix).await?;
        let limit = self.config.max_rename_objects;
        if keys.len() as u64 > limit {
            log::warn!(
                "rename of {old_prefix:?} refused: {} objects exceed --max-rename-objects={limit}",
                keys.len()
            );
            return Err(FsError::new(
                libc::EPERM,
                format!(
                    "directory holds {} objects, more than --max-rename-objects={limit}",
                    keys.len()
                ),
            ));
        }
        let copies: Vec<_> = keys
            .iter()
            .map(|o| self.copy_under(o, &old_prefix, new_prefix))
            .collect();
        let results: Vec<FsResult<(String, String, String)>> =
            stream::iter(copies).buffer_unordered(16).collect().await;
        let mut copied = Vec::with_capacity(results.len());
        let mut failure = None;
        for r in results {
            match r {
                Ok(c) => copied.push(c),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            log::warn!(
                "rename of {old_prefix:?} failed midway ({}); removing the copies made",
                e.message
            );
            for (_, dst, _) in &copied {
                if let Err(de) = self.store.delete(dst).await {
                    log::warn!("could not remove partial copy {dst:?}: {de}");
                }
            }
            return Err(e);
        }
        let moved: HashMap<&str, (&str, &str)> = copied
            .iter()
            .map(|(s, d, e)| (s.as_str(), (d.as_str(), e.as_str())))
            .collect();
        {
            // Cached inodes below keep their identity; their objects now have new ETags.
            let mut t = self.table();
            for i in t.iter_mut() {
                if let Some((_, etag)) = moved.get(i.key.as_str()) {
                    i.etag = Some(etag.to_string());
                }
            }
        }
        for (_, of) in &open {
            let _g = of.upload.write().await;
            let base_key = of.lock().base.as_ref().map(|b| b.key.clone());
            if let Some((dst, etag)) = base_key.as_deref().and_then(|k| moved.get(k)) {
                let old = base_key.clone().unwrap_or_default();
                of.moved(&old, dst, etag);
            }
        }
        let deletes: Vec<_> = keys.iter().map(|o| self.delete_key(&o.key)).collect();
        let results: Vec<Result<(), (String, StoreError)>> =
            stream::iter(deletes).buffer_unordered(16).collect().await;
        if let Some(Err((key, e))) = results.into_iter().find(|r| r.is_err()) {
            return Err(FsError::from_store(e, &key));
        }
        Ok(())
    }

    async fn copy_under(
        &self,
        o: &ObjectMeta,
        old_prefix: &str,
        new_prefix: &str,
    ) -> FsResult<(String, String, String)> {
        let dst = format!("{new_prefix}{}", &o.key[old_prefix.len()..]);
        let etag = self
            .copy_object(&o.key, &dst, Some(&o.etag), o.size, None)
            .await?;
        Ok((o.key.clone(), dst, etag))
    }

    async fn delete_key(&self, key: &str) -> Result<(), (String, StoreError)> {
        self.store
            .delete(key)
            .await
            .map_err(|e| (key.to_string(), e))
    }

    fn collect_open_below(
        &self,
        t: &super::inode::InodeTable,
        dir: Ino,
        out: &mut Vec<(Ino, Arc<OpenFile>)>,
    ) {
        for c in t.children_of(dir) {
            if let Some(of) = &c.open {
                out.push((c.ino, of.clone()));
            }
            if c.is_dir() {
                self.collect_open_below(t, c.ino, out);
            }
        }
    }

    /// Every object under `prefix` (no delimiter), all pages.
    pub(crate) async fn list_all(&self, prefix: &str) -> FsResult<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pages = Pages::new(ListRequest::flat(prefix));
        while let Some(page) = pages
            .next(&*self.store)
            .await
            .map_err(|e| FsError::from_store(e, prefix))?
        {
            out.extend(page.objects);
            if out.len() as u64 > self.config.max_rename_objects {
                break;
            }
        }
        Ok(out)
    }
}
