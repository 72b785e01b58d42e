//! rename(2) on an object store, which has no rename: copy, then delete.
//!
//! Files: a server-side CopyObject (UploadPartCopy above 5 GiB) to the new key, which replaces
//! any object there as a whole, then a DELETE of the old key, with the file's upload lock held
//! throughout, so no upload of it lands on the old key after the copy. A file with unflushed
//! writes is flushed first; a file created here and never uploaded is renamed in memory only
//! (decided once any upload in flight finished).
//!
//! Directories: the rename holds the namespace's fence exclusively, so no upload, delete or
//! copy of anything lands under either prefix while it runs. Every key under the old prefix is
//! copied (the directory's own marker last, so an existing empty target keeps its marker until
//! everything else is copied), and only when all copies succeeded are the old keys deleted, so
//! a failure while copying loses nothing (the copies made are removed). If deleting fails
//! midway, the new tree is complete and the mount shows it, and shows what S3 still holds
//! under the old name; the rename answers `EIO`. It is not atomic for other S3 clients: while
//! it runs they can see both trees, or a partial new tree. Directories holding more than
//! `max_rename_objects` keys are refused with `EPERM` and a log line naming the limit.
//!
//! `RENAME_NOREPLACE` is honoured; `RENAME_EXCHANGE` and `RENAME_WHITEOUT` cannot be done
//! atomically on S3 and answer `EINVAL`.

use std::collections::HashMap;
use std::ffi::OsStr;

use futures::stream::{self, StreamExt};

use super::Fs;
use super::dirops::same_open;
use super::error::{FsError, FsResult, NsError};
use super::inode::Ino;
use super::names::{self, child_key, child_prefix};
use super::namespace::{Inode, Move, Removed};
use super::openfile::Base;
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
            return Err(crate::unsupported!(
                "exchange and whiteout renames",
                libc::EINVAL,
                "S3 cannot swap or hide two keys atomically"
            ));
        }
        let name = names::name_from_os(name)?;
        let newname = names::name_from_os(newname)?;
        let (parent, newparent) = (self.ns.canon(parent), self.ns.canon(newparent));
        // A directory rename excludes every other change to S3 while it runs.
        if self.child_inode(parent, name).await?.is_dir() {
            let _fence = self.ns.exclusive().await;
            self.rename_fenced(parent, name, newparent, newname, flags)
                .await
        } else {
            let _fence = self.ns.shared().await;
            self.rename_fenced(parent, name, newparent, newname, flags)
                .await
        }
    }

    /// The rename proper, under the fence `rename` took.
    async fn rename_fenced(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
        flags: u32,
    ) -> FsResult<()> {
        let src = self.child_inode(parent, name).await?;
        let name = src.name.clone();
        let name = name.as_str();
        let dst = match self
            .rename_dest(&src, parent, newparent, newname, flags)
            .await?
        {
            Dest::Same => return Ok(()),
            Dest::Free => None,
            Dest::Replaces(d) => Some(*d),
        };
        let new_dir_key = self.ns.dir_key(newparent)?;
        // A file replaced by the rename lives on through its open handles, unlinked: it must
        // not be uploaded over the renamed file when they close.
        let replaced = dst.as_ref().and_then(|d| d.open.clone());
        let _replaced_guard = match &replaced {
            Some(of) => Some(of.upload.write().await),
            None => None,
        };
        let to = Target {
            from: (parent, name),
            to: (newparent, newname),
        };
        names::fits(&if src.is_dir() {
            child_prefix(&new_dir_key, newname)
        } else {
            child_key(&new_dir_key, newname)
        })?;
        let result = if src.is_dir() {
            let new_prefix = child_prefix(&new_dir_key, newname);
            if new_prefix.starts_with(&src.key) {
                return Err(NsError::IntoItself.into());
            }
            self.rename_dir(&src, &new_prefix, &to).await
        } else {
            // An object a file not uploaded yet replaces goes at once, as the name no longer
            // shows it (the new content follows at close).
            let replaced_key = dst
                .as_ref()
                .filter(|d| d.remote && d.name == newname && !d.is_dir())
                .map(|d| d.key.as_str());
            self.rename_file(&src, &child_key(&new_dir_key, newname), replaced_key, &to)
                .await
        };
        if let Some(of) = &replaced
            && result.is_ok()
        {
            of.lock().mark_unlinked();
        }
        result?;
        if let Some(d) = &dst {
            self.drop_replaced(d, newparent, newname).await?;
        }
        Ok(())
    }

    /// What renaming `src` (a child of `parent`) to `newname` in `newparent` lands on, after
    /// the checks of rename(2): `RENAME_NOREPLACE`, a directory onto a file or the reverse,
    /// a directory onto a non-empty one.
    async fn rename_dest(
        &self,
        src: &Inode,
        parent: Ino,
        newparent: Ino,
        newname: &str,
        flags: u32,
    ) -> FsResult<Dest> {
        if self.config.case_insensitive
            && let Some(dest) = self
                .ci_rename_dest(parent, &src.name, newparent, newname)
                .await?
        {
            return Ok(dest);
        }
        let d = match self.child_inode(newparent, newname).await {
            Ok(d) => d,
            Err(e) if e.errno() == libc::ENOENT => return Ok(Dest::Free),
            Err(e) => return Err(e),
        };
        if d.ino == src.ino {
            return Ok(Dest::Same);
        }
        if flags & RENAME_NOREPLACE != 0 {
            return Err(NsError::Exists(newname.to_string()).into());
        }
        match (src.is_dir(), d.is_dir()) {
            (true, false) => {
                return Err(NsError::NotADirectory.into());
            }
            (false, true) => return Err(NsError::IsADirectory.into()),
            (true, true) if !self.dir_is_empty(d.ino, &d.key).await? => {
                return Err(NsError::NotEmpty.into());
            }
            _ => {}
        }
        Ok(Dest::Replaces(Box::new(d)))
    }

    /// Case-insensitive mode: the target may be another spelling of the source itself (a
    /// rename that only changes case), or of an existing entry, which it replaces. `Some`
    /// when the target is the source itself.
    async fn ci_rename_dest(
        &self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> FsResult<Option<Dest>> {
        let existing = self.ci_existing(newparent, newname).await?;
        if parent == newparent && existing.as_deref() == Some(name) {
            // Only the case changes: the new spelling is free; the same spelling is a no-op.
            return Ok(Some(if newname != name {
                Dest::Free
            } else {
                Dest::Same
            }));
        }
        if let Some(other) = existing.filter(|o| o != newname) {
            self.ci_check_create(newparent, newname, "rename").await?;
            log::debug!("rename onto {newname:?} replaces {other:?}");
        }
        Ok(None)
    }

    /// After a rename onto an existing entry `d`: what is left of it goes.
    async fn drop_replaced(&self, d: &Inode, newparent: Ino, newname: &str) -> FsResult<()> {
        if d.name != newname {
            // A target of another spelling keeps its own key and name: remove both.
            if d.remote {
                let _ = self.store.delete(&d.key).await;
            }
            let removed = self.ns.removed(newparent, &d.name, d.ino);
            self.forget_names(removed);
        } else {
            let removed = Removed {
                aliases: self.ns.drop_aliases_of(d.ino),
            };
            self.forget_names(removed);
        }
        Ok(())
    }

    /// Renames a file or symlink: copy, then delete, under its upload lock. `replaced_key` is
    /// the object the rename replaces, deleted first when the file is not in S3 yet.
    async fn rename_file(
        &self,
        src: &Inode,
        new_key: &str,
        replaced_key: Option<&str>,
        to: &Target<'_>,
    ) -> FsResult<()> {
        let mut open = src.open.clone();
        let (now, _guard) = loop {
            let guard = match &open {
                Some(of) => Some(of.upload.write().await),
                None => None,
            };
            let now = self.current(src)?;
            if same_open(&now.open, &open) {
                break (now, guard);
            }
            drop(guard);
            open = now.open.clone();
        };
        if !now.remote {
            // Never uploaded: only the key it will be uploaded to changes.
            if let Some(k) = replaced_key {
                self.store
                    .delete(k)
                    .await
                    .map_err(|e| FsError::from_store(e, k))?;
            }
            self.finish_move(now.ino, to, None, true, HashMap::new());
            return Ok(());
        }
        if let Some(of) = &now.open
            && of.is_dirty()
            && let Some(stored) = self.upload_held(of).await?
        {
            self.ns
                .stored(now.ino, of, &stored.etag, &stored.meta, stored.stat);
        }
        let i = self.ns.get(now.ino).ok_or_else(FsError::not_found)?;
        let etag = match &i.open {
            Some(of) => of.etag(),
            None => i.etag.clone(),
        };
        let new_etag = self
            .copy_object(
                &i.key,
                new_key,
                etag.as_deref(),
                i.stat.size,
                i.user_meta.as_ref(),
            )
            .await?;
        if let Some(of) = &i.open {
            of.moved(&i.key, new_key, &new_etag);
        }
        let deleted = self
            .store
            .delete(&i.key)
            .await
            .map_err(|e| FsError::from_store(e, &i.key));
        self.finish_move(i.ino, to, Some(new_etag), deleted.is_ok(), HashMap::new());
        deleted
    }

    /// Tells the namespace what the rename did, and the kernel which names to forget.
    fn finish_move(
        &self,
        ino: Ino,
        to: &Target<'_>,
        etag: Option<String>,
        complete: bool,
        copied: HashMap<String, String>,
    ) {
        let removed = self.ns.moved(Move {
            ino,
            from: to.from,
            to: to.to,
            etag,
            complete,
            copied,
        });
        self.forget_names(removed);
        if !complete {
            // What is left under the old name is for S3 to say, the kernel included.
            self.kernel_forget_name(to.from.0, to.from.1);
        }
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
        let retype = crate::store::content_type::changes(src, dst);
        if size <= self.config.max_single_copy && !retype {
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
                // The version asked for, when known: a newer one fails the copy's condition.
                (
                    etag.map_or_else(|| head.etag.clone(), str::to_string),
                    head.user_meta.clone().unwrap_or_default(),
                )
            }
        };
        if size <= self.config.max_single_copy {
            // The new name implies another Content-Type: the copy rewrites the metadata.
            return self
                .store
                .copy(src, dst, Some(&meta), Some(&etag))
                .await
                .map(|p| p.etag)
                .map_err(|e| FsError::from_store(e, src));
        }
        let base = Base {
            key: src.to_string(),
            etag,
            len: size,
        };
        self.multipart_copy(src, dst, &base, &meta).await
    }

    /// Copies every key under `src.key` to `new_prefix`, then deletes the originals. The
    /// caller holds the fence exclusively.
    async fn rename_dir(&self, src: &Inode, new_prefix: &str, to: &Target<'_>) -> FsResult<()> {
        let old_prefix = src.key.clone();
        // Open files below: their parts in flight finish first, and none uploads until the
        // rename is done; one with unsaved changes is stored first, so S3 holds what is copied.
        let open = self.ns.open_below(src.ino);
        let mut guards = Vec::with_capacity(open.len());
        for (_, of) in &open {
            guards.push(of.upload.write().await);
        }
        for (ino, of) in &open {
            if of.is_dirty()
                && self.ns.get(*ino).is_some_and(|i| i.remote)
                && let Some(stored) = self.upload_held(of).await?
            {
                self.ns
                    .stored(*ino, of, &stored.etag, &stored.meta, stored.stat);
            }
        }
        let keys = self.list_all(&old_prefix).await?;
        // Every key below must still fit under the new name, or nothing moves: those in S3,
        // and those of files created below and not uploaded yet.
        let unsaved = open
            .iter()
            .filter_map(|(ino, _)| self.ns.get(*ino).map(|i| i.key.len()));
        if let Some(longest) = keys.iter().map(|o| o.key.len()).chain(unsaved).max() {
            names::fits_len(longest - old_prefix.len() + new_prefix.len())?;
        }
        let limit = self.config.max_rename_objects;
        if keys.len() as u64 > limit {
            log::warn!(
                "rename of {old_prefix:?} refused: {} objects exceed --max-rename-objects={limit}",
                keys.len()
            );
            return Err(NsError::TooManyObjects {
                count: keys.len() as u64,
                limit,
            }
            .into());
        }
        let copied = self.copy_tree(&keys, &old_prefix, new_prefix).await?;
        // Open files below now read from the copies.
        for (_, of) in &open {
            let base_key = of.lock().base.as_ref().map(|b| b.key.clone());
            if let Some(old) = base_key
                && let Some((dst, etag)) = copied.get(&old)
            {
                of.moved(&old, dst, etag);
            }
        }
        let deletes: Vec<_> = keys.iter().map(|o| self.delete_key(&o.key)).collect();
        let results: Vec<Result<(), (String, StoreError)>> =
            stream::iter(deletes).buffer_unordered(16).collect().await;
        let failed = results.into_iter().find_map(|r| r.err());
        let etags: HashMap<String, String> = copied
            .into_iter()
            .map(|(old, (_, etag))| (old, etag))
            .collect();
        self.finish_move(src.ino, to, None, failed.is_none(), etags);
        drop(guards);
        match failed {
            Some((key, e)) => {
                log::warn!(
                    "rename of {old_prefix:?} to {new_prefix:?}: the copy is complete, but {key:?} could not be deleted ({e}); both names show what S3 holds"
                );
                Err(FsError::from_store(e, &key))
            }
            None => Ok(()),
        }
    }

    /// Copies `keys` from under `old_prefix` to `new_prefix`, the directory's own marker last;
    /// returns old key -> (new key, new ETag). On a failure the copies made are removed.
    async fn copy_tree(
        &self,
        keys: &[ObjectMeta],
        old_prefix: &str,
        new_prefix: &str,
    ) -> FsResult<HashMap<String, (String, String)>> {
        let (markers, others): (Vec<&ObjectMeta>, Vec<&ObjectMeta>) =
            keys.iter().partition(|o| o.key == old_prefix);
        let mut copied = Vec::with_capacity(keys.len());
        let mut failure = None;
        for batch in [others, markers] {
            let copies: Vec<_> = batch
                .into_iter()
                .map(|o| self.copy_under(o, old_prefix, new_prefix))
                .collect();
            let results: Vec<FsResult<(String, String, String)>> =
                stream::iter(copies).buffer_unordered(16).collect().await;
            for r in results {
                match r {
                    Ok(c) => copied.push(c),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if failure.is_some() {
                break;
            }
        }
        if let Some(e) = failure {
            log::warn!("rename of {old_prefix:?} failed midway ({e}); removing the copies made");
            for (_, dst, _) in &copied {
                if let Err(de) = self.store.delete(dst).await {
                    log::warn!("could not remove partial copy {dst:?}: {de}");
                }
            }
            return Err(e);
        }
        Ok(copied.into_iter().map(|(s, d, e)| (s, (d, e))).collect())
    }

    async fn copy_under(
        &self,
        o: &ObjectMeta,
        old_prefix: &str,
        new_prefix: &str,
    ) -> FsResult<(String, String, String)> {
        let rest = o.key.strip_prefix(old_prefix).ok_or_else(|| {
            FsError::from(NsError::OutsidePrefix {
                prefix: old_prefix.to_string(),
                key: o.key.clone(),
            })
        })?;
        let dst = format!("{new_prefix}{rest}");
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

/// What a rename lands on.
enum Dest {
    /// The source itself: nothing to do.
    Same,
    /// No entry (or the source's own entry under another spelling, in case-insensitive mode).
    Free,
    /// An existing entry, which the rename replaces.
    Replaces(Box<Inode>),
}

/// Where a rename moves an entry from and to: (directory, name) each.
struct Target<'a> {
    from: (Ino, &'a str),
    to: (Ino, &'a str),
}
