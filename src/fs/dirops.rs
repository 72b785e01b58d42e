//! Operations on names: mkdir, rmdir, unlink, symlink and readlink.
//!
//! Each changes S3 first and tells the namespace after, holding the rename fence shared so no
//! directory rename copies or deletes the keys involved meanwhile. A directory is a zero-byte
//! marker object `prefix/` carrying its attributes; a symlink is stored as s3fs stores it (the
//! body is the target, the mode says `S_IFLNK`).

use std::ffi::OsStr;
use std::time::SystemTime;

use bytes::Bytes;

use super::attr::{Kind, Stat};
use super::error::{FsError, FsResult, NsError};
use super::inode::Ino;
use super::names::{self, child_key, child_prefix};
use super::namespace::Removed;
use super::{Attr, Fs};
use crate::store::{ListRequest, ObjectMeta, ObjectStore};

/// The longest symlink target read (Linux's PATH_MAX): a larger object claiming to be a
/// symlink is refused, never read whole into memory.
pub const MAX_TARGET: u64 = 4096;

impl<S: ObjectStore> Fs<S> {
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
        let parent = self.ns.canon(parent);
        let _fence = self.ns.shared().await;
        self.ensure_absent(parent, name, "mkdir").await?;
        let prefix = child_prefix(&self.ns.dir_key(parent)?, name);
        names::fits(&prefix)?;
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
        self.ns.made_dir(parent, name, stat, put.etag, meta)
    }

    /// Fails with EEXIST when `name` exists in `parent` (in any case, in case-insensitive mode).
    pub(crate) async fn ensure_absent(&self, parent: Ino, name: &str, what: &str) -> FsResult<()> {
        if self.ci_check_create(parent, name, what).await?.is_some() {
            return Err(NsError::Exists(name.to_string()).into());
        }
        match self.resolve(parent, name, false).await {
            Ok(_) => Err(NsError::Exists(name.to_string()).into()),
            Err(e) if e.errno() == libc::ENOENT => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a file or symlink. An open file stays readable and writable through its
    /// descriptors and is not uploaded again; if S3 refuses the delete, nothing changes.
    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.ns.canon(parent);
        let _fence = self.ns.shared().await;
        let inode = self.child_inode(parent, name).await?;
        if inode.is_dir() {
            return Err(NsError::IsADirectory.into());
        }
        // The file's upload lock: no upload of it runs until the name is gone, and whether it
        // reached S3 is read after any upload in flight finished (taken again if the file was
        // opened meanwhile).
        let mut open = inode.open.clone();
        let (now, guard) = loop {
            let guard = match &open {
                Some(of) => Some(of.upload.write().await),
                None => None,
            };
            let now = self.current(&inode)?;
            if same_open(&now.open, &open) {
                break (now, guard);
            }
            drop(guard);
            open = now.open.clone();
        };
        log::debug!(
            "unlink {:?} (ino {}, open: {})",
            now.key,
            now.ino,
            now.open.is_some()
        );
        if now.remote {
            self.store
                .delete(&now.key)
                .await
                .map_err(|e| FsError::from_store(e, &now.key))?;
        }
        if let Some(of) = &now.open {
            of.lock().mark_unlinked();
        }
        drop(guard);
        let removed = self.ns.removed(parent, &now.name, now.ino);
        self.forget_names(removed);
        Ok(())
    }

    /// The entry `inode` as it is now; `ENOENT` if its name went meanwhile.
    pub(crate) fn current(
        &self,
        inode: &super::namespace::Inode,
    ) -> FsResult<super::namespace::Inode> {
        self.ns
            .get(inode.ino)
            .filter(|i| i.linked && i.parent == inode.parent && i.name == inode.name)
            .ok_or_else(FsError::not_found)
    }

    /// Removes an empty directory (its marker object).
    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.ns.canon(parent);
        let _fence = self.ns.shared().await;
        let inode = self.child_inode(parent, name).await?;
        if !inode.is_dir() {
            return Err(NsError::NotADirectory.into());
        }
        if !self.dir_is_empty(inode.ino, &inode.key).await? {
            return Err(NsError::NotEmpty.into());
        }
        self.store
            .delete(&inode.key)
            .await
            .map_err(|e| FsError::from_store(e, &inode.key))?;
        let removed = self.ns.removed(parent, &inode.name, inode.ino);
        self.forget_names(removed);
        Ok(())
    }

    /// The kernel forgets names that went with a change (other spellings of a removed entry).
    pub(crate) fn forget_names(&self, removed: Removed) {
        for (parent, name) in removed.aliases {
            self.kernel_forget_name(parent, &name);
        }
    }

    /// True when the directory has no entries in S3 (besides its marker) and none pending here.
    pub(crate) async fn dir_is_empty(&self, ino: Ino, prefix: &str) -> FsResult<bool> {
        if self.ns.has_pending_entries(ino) {
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
        let target = target
            .to_str()
            .ok_or(NsError::NotUtf8("symlink targets"))?
            .to_string();
        let mut stat = Stat::new(Kind::Symlink, &self.config.defaults, SystemTime::now());
        stat.uid = uid;
        stat.gid = gid;
        stat.size = target.len() as u64;
        self.store_whole(parent, name, stat, Some(target)).await
    }

    /// Makes `name` an object stored whole by the call that makes it: a symlink (its body the
    /// target) or a special file (empty), its attributes in its metadata.
    pub(crate) async fn store_whole(
        &self,
        parent: Ino,
        name: &OsStr,
        stat: Stat,
        target: Option<String>,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.ns.canon(parent);
        let _fence = self.ns.shared().await;
        let what = if target.is_some() { "symlink" } else { "mknod" };
        self.ensure_absent(parent, name, what).await?;
        let key = child_key(&self.ns.dir_key(parent)?, name);
        let meta = stat.to_meta(None);
        let body = Bytes::from(target.clone().unwrap_or_default().into_bytes());
        let put = self
            .store
            .put(&key, body, &meta)
            .await
            .map_err(|e| FsError::from_store(e, &key))?;
        let stored = ObjectMeta {
            key,
            size: stat.size,
            etag: put.etag,
            last_modified: SystemTime::now(),
            user_meta: Some(meta),
        };
        self.ns.made_whole(parent, name, stat, stored, target)
    }

    /// The target of a symlink.
    pub async fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let ino = self.ns.canon(ino);
        let i = self.ns.get(ino).ok_or_else(FsError::not_found)?;
        if i.stat.kind != Kind::Symlink {
            return Err(NsError::NotASymlink.into());
        }
        if let Some(target) = self.ns.target(ino) {
            return Ok(target.into_bytes());
        }
        if i.stat.size == 0 {
            return Ok(Vec::new());
        }
        if i.stat.size > MAX_TARGET {
            return Err(NsError::HostileSymlink {
                key: i.key.clone(),
                size: i.stat.size,
            }
            .into());
        }
        let data = self
            .store
            .get_range(&i.key, 0..i.stat.size, i.etag.as_deref())
            .await
            .map_err(|e| FsError::from_store(e, &i.key))?;
        let target = String::from_utf8_lossy(&data).trim().to_string();
        self.ns.set_target(ino, i.etag.as_deref(), &target);
        Ok(target.into_bytes())
    }
}

/// True when the open state `now` is the one `locked` (or there is none now).
pub(crate) fn same_open(
    now: &Option<std::sync::Arc<super::openfile::OpenFile>>,
    locked: &Option<std::sync::Arc<super::openfile::OpenFile>>,
) -> bool {
    match (now, locked) {
        (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
        (None, _) => true,
        _ => false,
    }
}
