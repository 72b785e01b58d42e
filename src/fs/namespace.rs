//! Names: lookup, getattr, mkdir, rmdir, unlink, symlink and readlink.
//!
//! A name `n` in a directory with prefix `p` is a directory when anything exists under
//! `p + n + "/"` (a marker object or any key below: "implicit" directories have no marker),
//! and a file or symlink when the object `p + n` exists. Both can exist at once in S3; the
//! directory shadows the file, as in every S3 filesystem, so the tree stays a tree. Lookup asks
//! both questions in parallel (a HEAD and a one-key LIST), so a miss costs one round trip.
//!
//! Answers are trusted for `metadata_ttl`; a miss is remembered as long (negative cache), so
//! `cp` into a new directory does not ask S3 about every name twice. Names created or removed
//! here update these caches at once, so the mount always sees its own changes.

use std::ffi::OsStr;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::attr::{Kind, Stat, kind_from_meta};
use super::error::{FsError, FsResult};
use super::inode::{Ino, Inode, ROOT};
use super::listing::Listed;
use super::names::{self, child_key, child_prefix};
use super::{Attr, Fs};
use crate::store::{ListRequest, ObjectMeta, ObjectStore, StoreError};

/// What S3 says is at a name.
pub(crate) enum Found {
    Dir { marker: Option<ObjectMeta> },
    File(ObjectMeta),
    Nothing,
}

impl<S: ObjectStore> Fs<S> {
    /// Looks `name` up in `parent` and counts one kernel lookup on the result.
    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let name = names::name_from_os(name)?;
        let parent = self.canon(parent);
        self.resolve(parent, name, true).await
    }

    /// Gives back `n` kernel lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.table().forget(ino, n);
    }

    /// Counts one kernel lookup (for entries returned by readdirplus).
    pub fn add_lookup(&self, ino: Ino) {
        if let Some(i) = self.table().get_mut(ino) {
            i.lookups += 1;
        }
    }

    pub(crate) fn parent_dir_key(&self, parent: Ino) -> FsResult<String> {
        let t = self.table();
        let p = t.get(parent).ok_or_else(FsError::not_found)?;
        if !p.is_dir() {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        Ok(p.key.clone())
    }

    /// Finds `name` in `parent` (ignoring case in case-insensitive mode).
    pub(crate) async fn resolve(&self, parent: Ino, name: &str, count: bool) -> FsResult<Attr> {
        if self.config.case_insensitive {
            self.ci_resolve(parent, name, count).await
        } else {
            self.resolve_exact(parent, name, count).await
        }
    }

    /// Finds exactly `name` in `parent`, from the cache when fresh, else from S3.
    pub(crate) async fn resolve_exact(
        &self,
        parent: Ino,
        name: &str,
        count: bool,
    ) -> FsResult<Attr> {
        let ttl = self.config.metadata_ttl;
        let dir_key = {
            let mut t = self.table();
            let p = t.get(parent).ok_or_else(FsError::not_found)?;
            if !p.is_dir() {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"));
            }
            let dir_key = p.key.clone();
            if let Some(c) = t.child(parent, name)
                && (self.is_local(&t, c) || c.fresh(ttl))
            {
                let ino = c.ino;
                return Ok(self.attr_of(&mut t, ino, count));
            }
            dir_key
        };
        if self.negative_hit(parent, name) {
            return Err(FsError::not_found());
        }
        let found = match self.listed(parent, name) {
            // A fresh whole listing of the directory answers without asking S3 again where
            // it can: absent names, directories, and (with --fast-listing) files.
            Some(None) => Found::Nothing,
            Some(Some(Listed::Dir(_))) if self.config.fast_listing => Found::Dir { marker: None },
            Some(Some(Listed::File(_, meta))) if self.config.fast_listing => Found::File(meta),
            // Metadata fetched in the background for the listing (see `prefetch_meta`).
            Some(Some(Listed::File(_, meta))) if meta.user_meta.is_some() => Found::File(meta),
            Some(Some(Listed::File(_, meta))) => {
                self.prefetch_meta(parent);
                match self.store.head(&meta.key).await {
                    Ok(m) => Found::File(m),
                    Err(StoreError::NotFound) => Found::Nothing,
                    Err(e) => return Err(FsError::from_store(e, &meta.key)),
                }
            }
            _ => {
                self.note_probe(parent);
                self.probe(&dir_key, name).await?
            }
        };
        self.record(parent, name, &dir_key, found, count)
    }

    /// What a fresh cached listing of `parent` says about `name`: `None` when there is no
    /// such listing, `Some(None)` when the name is not in it.
    fn listed(&self, parent: Ino, name: &str) -> Option<Option<Listed>> {
        let ttl = self.config.metadata_ttl;
        let cache = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        let l = super::listing::lock(cache.peek(&parent)?);
        if !l.is_fresh(ttl) {
            return None;
        }
        Some(l.names.get(name).cloned())
    }

    /// Asks S3 what `name` is in the directory `dir_key`: HEAD and LIST in parallel.
    pub(crate) async fn probe(&self, dir_key: &str, name: &str) -> FsResult<Found> {
        let key = child_key(dir_key, name);
        let prefix = child_prefix(dir_key, name);
        let mut req = ListRequest::dir(&prefix);
        req.max_keys = 1;
        let (head, list) = tokio::join!(self.store.head(&key), self.store.list(&req));
        let list = list.map_err(|e| FsError::from_store(e, &prefix))?;
        if !list.objects.is_empty() || !list.prefixes.is_empty() {
            let marker = match list.objects.first() {
                Some(o) if o.key == prefix => match self.store.head(&prefix).await {
                    Ok(m) => Some(m),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(FsError::from_store(e, &prefix)),
                },
                _ => None,
            };
            if let Ok(file) = &head {
                log::debug!("directory {prefix:?} shadows the object {:?}", file.key);
            }
            return Ok(Found::Dir { marker });
        }
        match head {
            Ok(meta) => Ok(Found::File(meta)),
            Err(StoreError::NotFound) => Ok(Found::Nothing),
            Err(e) => Err(FsError::from_store(e, &key)),
        }
    }

    /// Stores what S3 said about `name` in the table and returns its attributes.
    pub(crate) fn record(
        &self,
        parent: Ino,
        name: &str,
        dir_key: &str,
        found: Found,
        count: bool,
    ) -> FsResult<Attr> {
        let d = &self.config.defaults;
        let (kind, key, stat, etag, meta, marker) = match found {
            Found::Nothing => {
                let t = self.table();
                // A file created here meanwhile wins over the miss.
                if let Some(c) = t.child(parent, name)
                    && self.is_local(&t, c)
                {
                    drop(t);
                    return self.resolve_local(parent, name, count);
                }
                drop(t);
                self.negative_insert(parent, name);
                return Err(FsError::not_found());
            }
            Found::Dir { marker } => {
                let stat = match &marker {
                    Some(m) => {
                        Stat::from_object(Kind::Dir, 0, m.last_modified, m.user_meta.as_ref(), d)
                    }
                    None => Stat::new(Kind::Dir, d, self.started()),
                };
                let etag = marker.as_ref().map(|m| m.etag.clone());
                let meta = marker.as_ref().and_then(|m| m.user_meta.clone());
                (
                    Kind::Dir,
                    child_prefix(dir_key, name),
                    stat,
                    etag,
                    meta,
                    marker.is_some(),
                )
            }
            Found::File(m) => {
                let kind = m
                    .user_meta
                    .as_ref()
                    .and_then(kind_from_meta)
                    .filter(|k| *k == Kind::Symlink)
                    .unwrap_or(Kind::File);
                let stat =
                    Stat::from_object(kind, m.size, m.last_modified, m.user_meta.as_ref(), d);
                (
                    kind,
                    m.key.clone(),
                    stat,
                    Some(m.etag.clone()),
                    m.user_meta.clone(),
                    false,
                )
            }
        };
        let mut t = self.table();
        if t.get(parent).is_none() {
            return Err(FsError::not_found());
        }
        let reuse = match t.child(parent, name) {
            Some(c) if self.is_local(&t, c) => {
                let ino = c.ino;
                return Ok(self.attr_of(&mut t, ino, count));
            }
            Some(c) if c.stat.kind == kind => Some(c.ino),
            _ => None,
        };
        let inode = match reuse {
            Some(ino) => t.get_mut(ino).expect("child exists"),
            None => t.link_new(parent, name, key, stat),
        };
        if inode.etag != etag {
            inode.target = None;
        }
        inode.stat = stat;
        inode.etag = etag;
        inode.user_meta = meta;
        inode.has_marker = marker;
        inode.validated = Some(Instant::now());
        let ino = inode.ino;
        Ok(self.attr_of(&mut t, ino, count))
    }

    /// True when this mount knows better than S3 about the entry: a file created or open
    /// here, or a directory holding such files.
    pub(crate) fn is_local(&self, t: &super::inode::InodeTable, c: &Inode) -> bool {
        !c.remote || c.open.is_some() || (c.is_dir() && self.has_local_children(t, c.ino))
    }

    /// True when a directory holds files created here and not uploaded yet (it exists for us
    /// even if S3 has nothing under its prefix).
    pub(crate) fn has_local_children(&self, t: &super::inode::InodeTable, dir: Ino) -> bool {
        t.children_of(dir)
            .iter()
            .any(|c| c.linked && (!c.remote || (c.is_dir() && self.has_local_children(t, c.ino))))
    }

    fn resolve_local(&self, parent: Ino, name: &str, count: bool) -> FsResult<Attr> {
        let mut t = self.table();
        let ino = t.child(parent, name).ok_or_else(FsError::not_found)?.ino;
        Ok(self.attr_of(&mut t, ino, count))
    }

    /// The attributes of `ino` (open files report their unflushed size), counting a lookup.
    pub(crate) fn attr_of(&self, t: &mut super::inode::InodeTable, ino: Ino, count: bool) -> Attr {
        let i = t.get_mut(ino).expect("caller checked");
        if count {
            i.lookups += 1;
        }
        let stat = match &i.open {
            Some(of) => of.stat(),
            None => i.stat,
        };
        let mut a = Attr::new(ino, stat);
        if !i.linked {
            a.nlink = 0;
        }
        a
    }

    /// A name in `dir` was added or removed: its mtime and ctime move to now. Kept in memory
    /// only: storing them would cost a PUT of the marker for every change in the directory.
    /// A name was added to `dir` here: the directory's times move and a cached listing learns it.
    pub(crate) fn name_added(&self, dir: Ino, name: &str, kind: Kind) {
        self.touch_dir(dir);
        let key = self
            .table()
            .get(dir)
            .map(|d| child_key(&d.key, name))
            .unwrap_or_default();
        self.listing_add(dir, name, kind, &key);
    }

    /// A name was removed from `dir` here.
    pub(crate) fn name_removed(&self, dir: Ino, name: &str, ino: Ino) {
        self.touch_dir(dir);
        self.listing_remove(dir, name);
        self.ci_drop_aliases(ino);
    }

    pub(crate) fn touch_dir(&self, dir: Ino) {
        let now = SystemTime::now();
        if let Some(i) = self.table().get_mut(dir) {
            i.stat.mtime = now;
            i.stat.ctime = now;
        }
    }

    /// When the mount started: the times of directories that have no marker object.
    pub(crate) fn started(&self) -> SystemTime {
        self.started
    }

    /// Attributes of `ino`, checked against S3 when older than the TTL.
    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        let ino = self.canon(ino);
        let ttl = self.config.metadata_ttl;
        let (key, kind, has_marker) = {
            let mut t = self.table();
            let i = t.get(ino).ok_or_else(FsError::not_found)?;
            if i.open.is_some() || !i.remote || ino == ROOT || i.fresh(ttl) || !i.linked {
                return Ok(self.attr_of(&mut t, ino, false));
            }
            if i.is_dir() && !i.has_marker {
                let i = t.get_mut(ino).expect("present");
                i.validated = Some(Instant::now());
                return Ok(self.attr_of(&mut t, ino, false));
            }
            (i.key.clone(), i.stat.kind, i.has_marker)
        };
        match self.store.head(&key).await {
            Ok(m) => {
                let mut t = self.table();
                let d = self.config.defaults;
                let i = t.get_mut(ino).ok_or_else(FsError::not_found)?;
                if i.open.is_none() {
                    let size = if kind == Kind::Dir { 0 } else { m.size };
                    if i.etag.as_deref() != Some(m.etag.as_str()) {
                        i.target = None;
                    }
                    let mut st =
                        Stat::from_object(kind, size, m.last_modified, m.user_meta.as_ref(), &d);
                    if kind == Kind::Dir {
                        // Keep times moved forward here by changes to its entries.
                        st.mtime = st.mtime.max(i.stat.mtime);
                        st.ctime = st.ctime.max(i.stat.ctime);
                    }
                    i.stat = st;
                    i.etag = Some(m.etag);
                    i.user_meta = m.user_meta;
                }
                i.validated = Some(Instant::now());
                Ok(self.attr_of(&mut t, ino, false))
            }
            Err(StoreError::NotFound) if kind == Kind::Dir && has_marker => {
                // The marker went away; the directory may still exist implicitly.
                let mut t = self.table();
                let i = t.get_mut(ino).ok_or_else(FsError::not_found)?;
                i.has_marker = false;
                i.validated = Some(Instant::now());
                Ok(self.attr_of(&mut t, ino, false))
            }
            Err(StoreError::NotFound) => {
                let mut t = self.table();
                if let Some(i) = t.get(ino)
                    && i.open.is_none()
                    && i.linked
                {
                    let (p, n) = (i.parent, i.name.clone());
                    t.unlink(p, &n);
                }
                Err(FsError::new(
                    libc::ENOENT,
                    format!("{key:?} was deleted from S3"),
                ))
            }
            Err(e) => Err(FsError::from_store(e, &key)),
        }
    }

    /// Creates a directory: a zero-byte marker object `prefix/` carrying its attributes.
    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.canon(parent);
        self.ensure_absent(parent, name, "mkdir").await?;
        let dir_key = self.parent_dir_key(parent)?;
        let prefix = child_prefix(&dir_key, name);
        let mut stat = Stat::new(Kind::Dir, &self.config.defaults, SystemTime::now());
        stat.perm = (mode & !umask & 0o7777) as u16;
        stat.uid = uid;
        stat.gid = gid;
        let meta = stat.to_meta(None);
        let put = self
            .store
            .put(&prefix, Bytes::new(), &meta)
            .await
            .map_err(|e| FsError::from_store(e, &prefix))?;
        self.negative_remove(parent, name);
        let mut t = self.table();
        if t.get(parent).is_none() {
            return Err(FsError::not_found());
        }
        let i = t.link_new(parent, name, prefix, stat);
        i.has_marker = true;
        i.etag = Some(put.etag);
        i.user_meta = Some(meta);
        i.validated = Some(Instant::now());
        let ino = i.ino;
        let attr = self.attr_of(&mut t, ino, true);
        drop(t);
        self.name_added(parent, name, Kind::Dir);
        // S3 was just asked and has nothing under the new prefix: its listing is known to be
        // empty, so the names created in it next (`cp -r`, `tar -x`) need no lookup request.
        self.listing_store(ino, Vec::new());
        Ok(attr)
    }

    /// Fails with EEXIST when `name` exists in `parent` (in any case, in case-insensitive mode).
    pub(crate) async fn ensure_absent(&self, parent: Ino, name: &str, what: &str) -> FsResult<()> {
        if self.ci_check_create(parent, name, what).await?.is_some() {
            return Err(FsError::new(libc::EEXIST, format!("{name:?} exists")));
        }
        match self.resolve(parent, name, false).await {
            Ok(_) => Err(FsError::new(libc::EEXIST, format!("{name:?} exists"))),
            Err(e) if e.errno == libc::ENOENT => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The child `name` of `parent`, resolved (from cache or S3).
    pub(crate) async fn child_inode(&self, parent: Ino, name: &str) -> FsResult<Inode> {
        let attr = self.resolve(parent, name, false).await?;
        let t = self.table();
        let ino = t.canon(attr.ino);
        t.get(ino).cloned().ok_or_else(FsError::not_found)
    }

    /// Removes a file or symlink. An open file stays readable and writable through its
    /// descriptors and is not uploaded again.
    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.canon(parent);
        let inode = self.child_inode(parent, name).await?;
        let name = inode.name.as_str();
        if inode.is_dir() {
            return Err(FsError::new(libc::EISDIR, "is a directory"));
        }
        // Hold the file's upload lock so a flush in flight cannot recreate the key after the
        // delete.
        let guard = match &inode.open {
            Some(of) => {
                let g = Some(of.upload.write().await);
                of.lock().mark_unlinked();
                g
            }
            None => None,
        };
        log::debug!(
            "unlink {:?} (ino {}, open: {})",
            inode.key,
            inode.ino,
            inode.open.is_some()
        );
        if inode.remote {
            self.store
                .delete(&inode.key)
                .await
                .map_err(|e| FsError::from_store(e, &inode.key))?;
        }
        drop(guard);
        let mut t = self.table();
        if t.child(parent, name).map(|c| c.ino) == Some(inode.ino) {
            t.unlink(parent, name);
        }
        drop(t);
        self.negative_insert(parent, name);
        self.name_removed(parent, name, inode.ino);
        Ok(())
    }

    /// Removes an empty directory (its marker object).
    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.canon(parent);
        let inode = self.child_inode(parent, name).await?;
        let name = inode.name.as_str();
        if !inode.is_dir() {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        if !self.dir_is_empty(inode.ino, &inode.key).await? {
            return Err(FsError::new(libc::ENOTEMPTY, "directory not empty"));
        }
        self.store
            .delete(&inode.key)
            .await
            .map_err(|e| FsError::from_store(e, &inode.key))?;
        let mut t = self.table();
        if t.child(parent, name).map(|c| c.ino) == Some(inode.ino) {
            t.unlink(parent, name);
        }
        drop(t);
        self.negative_insert(parent, name);
        self.name_removed(parent, name, inode.ino);
        Ok(())
    }

    /// True when the directory has no entries in S3 (besides its marker) and none pending here.
    pub(crate) async fn dir_is_empty(&self, ino: Ino, prefix: &str) -> FsResult<bool> {
        let local = {
            let t = self.table();
            t.children_of(ino).iter().any(|c| {
                c.linked
                    && (!c.remote
                        || c.open.as_ref().is_some_and(|o| o.is_dirty())
                        || (c.is_dir() && self.has_local_children(&t, c.ino)))
            })
        };
        if local {
            return Ok(false);
        }
        let mut req = ListRequest::dir(prefix);
        req.max_keys = 2;
        let page = self
            .store
            .list(&req)
            .await
            .map_err(|e| FsError::from_store(e, prefix))?;
        let others = page.objects.iter().filter(|o| o.key != prefix).count() + page.prefixes.len();
        Ok(others == 0)
    }

    /// Creates a symlink, stored as s3fs does: the body is the target, the mode says S_IFLNK.
    pub async fn symlink(
        &self,
        parent: Ino,
        name: &OsStr,
        target: &std::path::Path,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let target = target
            .to_str()
            .ok_or_else(|| FsError::new(libc::EINVAL, "symlink targets must be UTF-8"))?
            .to_string();
        let parent = self.canon(parent);
        self.ensure_absent(parent, name, "symlink").await?;
        let dir_key = self.parent_dir_key(parent)?;
        let key = child_key(&dir_key, name);
        let mut stat = Stat::new(Kind::Symlink, &self.config.defaults, SystemTime::now());
        stat.uid = uid;
        stat.gid = gid;
        stat.size = target.len() as u64;
        let meta = stat.to_meta(None);
        let put = self
            .store
            .put(&key, Bytes::from(target.clone().into_bytes()), &meta)
            .await
            .map_err(|e| FsError::from_store(e, &key))?;
        self.negative_remove(parent, name);
        let mut t = self.table();
        if t.get(parent).is_none() {
            return Err(FsError::not_found());
        }
        let i = t.link_new(parent, name, key, stat);
        i.etag = Some(put.etag);
        i.user_meta = Some(meta);
        i.target = Some(target);
        i.validated = Some(Instant::now());
        let ino = i.ino;
        let attr = self.attr_of(&mut t, ino, true);
        drop(t);
        self.name_added(parent, name, Kind::Symlink);
        Ok(attr)
    }

    /// The target of a symlink.
    pub async fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let ino = self.canon(ino);
        let (key, etag, size) = {
            let t = self.table();
            let i = t.get(ino).ok_or_else(FsError::not_found)?;
            if i.stat.kind != Kind::Symlink {
                return Err(FsError::new(libc::EINVAL, "not a symlink"));
            }
            if let Some(target) = &i.target {
                return Ok(target.clone().into_bytes());
            }
            (i.key.clone(), i.etag.clone(), i.stat.size)
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let data = self
            .store
            .get_range(&key, 0..size, etag.as_deref())
            .await
            .map_err(|e| FsError::from_store(e, &key))?;
        let target = String::from_utf8_lossy(&data).trim().to_string();
        if let Some(i) = self.table().get_mut(ino) {
            i.target = Some(target.clone());
        }
        Ok(target.into_bytes())
    }
}
