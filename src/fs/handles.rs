//! Open, create and release: the handle table and the life of an [`OpenFile`].
//!
//! Every handle on an inode shares the inode's [`OpenFile`], created at the first open and
//! dropped at the last release. `O_TRUNC` arrives from the kernel as a `setattr` of the size
//! through the new handle (see `setattr`), which is stored at the next flush, so truncating a
//! file to rewrite it never stores an empty object in between: S3 keeps the old content until
//! the new one is complete.
//!
//! At the last release, a file that is still dirty (its flush failed, or it was written through
//! a path that never flushed) gets one more upload attempt; if that fails too, its spool file is
//! moved to `failed/` in the cache directory and the error is logged with the path, so data the
//! application was told failed is never served as stored, and is still recoverable by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::attr::{Kind, Stat};
use super::error::{FsError, FsResult, HandleError, NsError, UploadError};
use super::inode::Ino;
use super::names;
use super::openfile::OpenFile;
use super::readdir::DirHandle;
use super::{Attr, Fs};
use crate::store::ObjectStore;

/// An open file descriptor as the kernel knows it.
#[derive(Clone)]
pub struct FileHandle {
    pub ino: Ino,
    pub of: Arc<OpenFile>,
    pub writable: bool,
    pub reads: Arc<std::sync::Mutex<super::readahead::ReadState>>,
}

#[derive(Clone)]
enum Handle {
    File(FileHandle),
    Dir(Arc<tokio::sync::Mutex<DirHandle>>),
}

/// All open handles, by number.
#[derive(Default)]
pub struct HandleTable {
    map: HashMap<u64, Handle>,
    next: u64,
}

impl HandleTable {
    fn insert(&mut self, h: Handle) -> u64 {
        self.next += 1;
        self.map.insert(self.next, h);
        self.next
    }

    pub fn insert_dir(&mut self, d: Arc<tokio::sync::Mutex<DirHandle>>) -> u64 {
        self.insert(Handle::Dir(d))
    }

    pub fn file(&self, fh: u64) -> Option<FileHandle> {
        match self.map.get(&fh) {
            Some(Handle::File(f)) => Some(f.clone()),
            _ => None,
        }
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<tokio::sync::Mutex<DirHandle>>> {
        match self.map.get(&fh) {
            Some(Handle::Dir(d)) => Some(d.clone()),
            _ => None,
        }
    }

    pub fn remove(&mut self, fh: u64) {
        self.map.remove(&fh);
    }

    fn take_file(&mut self, fh: u64) -> Option<FileHandle> {
        match self.map.remove(&fh) {
            Some(Handle::File(f)) => Some(f),
            Some(other) => {
                self.map.insert(fh, other);
                None
            }
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What `open(2)` flags ask for.
#[derive(Clone, Copy, Debug)]
pub struct OpenMode {
    pub writable: bool,
    pub truncate: bool,
    pub exclusive: bool,
}

impl OpenMode {
    pub fn from_flags(flags: i32) -> Self {
        OpenMode {
            writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
            truncate: flags & libc::O_TRUNC != 0,
            exclusive: flags & libc::O_EXCL != 0,
        }
    }
}

/// What an open gives the kernel: the handle and whether its page cache of the file may stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// `FOPEN_KEEP_CACHE`: the version the kernel cached is the one this handle reads.
    pub keep_cache: bool,
}

/// What `create(2)` asks for a new file: its mode and the caller's umask, the open flags, and
/// its owner.
#[derive(Clone, Copy, Debug)]
pub struct NewFile {
    pub mode: u32,
    pub umask: u32,
    pub flags: i32,
    pub uid: u32,
    pub gid: u32,
}

impl NewFile {
    /// A `0644` file owned by root, no umask, opened with `flags` (what tests create).
    pub fn plain(flags: i32) -> Self {
        NewFile {
            mode: 0o644,
            umask: 0,
            flags,
            uid: 0,
            gid: 0,
        }
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Opens a file.
    pub async fn open(&self, ino: Ino, flags: i32) -> FsResult<Opened> {
        let mode = OpenMode::from_flags(flags);
        if mode.writable || mode.truncate {
            self.check_writable()?;
        }
        if self.config.case_insensitive && (mode.writable || mode.truncate) {
            self.ci_note_open(ino);
        }
        let ino = self.ns.canon(ino);
        // A new open reads the version S3 has now (close-to-open across hosts): what S3 said
        // is checked again first (see `Namespace::open_check`).
        if self.ns.open_check(ino)? {
            let before = self.ns.get(ino).map(|i| (i.etag, i.page_cache_etag));
            self.ns.expire(ino);
            self.head_checked_attr(ino).await?;
            let now = self.ns.get(ino).and_then(|i| i.etag);
            if before.is_none_or(|(etag, cached)| etag != now || cached != now) {
                // The kernel's cached size may be an older version's (a lookup answered from
                // what the mount knew, or a listing brought the new version to the mount but
                // not to the kernel): it must ask again before reading, or it would read the
                // new version to the old length (zeros past its end).
                self.kernel_forget_attr(ino);
                self.kernel_delivered().await;
            }
        }
        let opened = self.ns.attach(ino, mode.truncate)?;
        if !mode.writable && !mode.truncate {
            self.note_read_open(opened.at.0, &opened.at.1);
        }
        if mode.truncate && mode.writable {
            let r = self.truncate_open(&opened.of, 0).await;
            if let Err(e) = r {
                self.drop_handle_ref(ino, &opened.of);
                return Err(e);
            }
        }
        let fh = self.handle_table().insert(Handle::File(FileHandle {
            ino,
            of: opened.of,
            writable: mode.writable,
            reads: Default::default(),
        }));
        Ok(Opened {
            fh,
            keep_cache: opened.keep_cache,
        })
    }

    /// Creates (or, without `O_EXCL`, opens) `name` in `parent`.
    pub async fn create(
        &self,
        parent: Ino,
        name: &std::ffi::OsStr,
        new: NewFile,
    ) -> FsResult<(Attr, u64)> {
        self.check_writable()?;
        let name = names::name_from_os(name)?;
        let parent = self.ns.canon(parent);
        let open_mode = OpenMode::from_flags(new.flags);
        // In case-insensitive mode another spelling may exist: refused (error mode) or used.
        self.ci_check_create(parent, name, "create").await?;
        match self.resolve(parent, name, false).await {
            Ok(attr) => {
                if open_mode.exclusive {
                    return Err(NsError::Exists(name.to_string()).into());
                }
                if attr.stat.kind == Kind::Dir {
                    return Err(NsError::IsADirectory.into());
                }
                let ino = self.ns.canon(attr.ino);
                let fh = self.open(ino, new.flags).await?.fh;
                let attr = self.ns.attr(ino, true)?;
                return Ok((attr, fh));
            }
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
        self.create_new(parent, name, new)
    }

    /// [`Self::create`] served at once on the calling thread (a FUSE thread) when the
    /// namespace knows the name is absent, as after a listing or in a directory made here
    /// (`cp -r`, `tar -x`): no hop to the runtime and back. `None` when S3 must be asked, and
    /// in case-insensitive mode (other spellings are checked in S3).
    pub fn create_now(
        &self,
        parent: Ino,
        name: &std::ffi::OsStr,
        new: NewFile,
    ) -> Option<FsResult<(Attr, u64)>> {
        if self.config.case_insensitive {
            return None;
        }
        let name = names::name_from_os(name).ok()?;
        let parent = self.ns.canon(parent);
        self.known_absent(parent, name)?;
        Some(self.create_new(parent, name, new))
    }

    /// A new, empty file `name` in `parent`, open through a new handle.
    fn create_new(&self, parent: Ino, name: &str, new: NewFile) -> FsResult<(Attr, u64)> {
        self.check_writable()?;
        let mut stat = Stat::new(Kind::File, &self.config.defaults, SystemTime::now());
        stat.perm = (new.mode & !new.umask & 0o7777) as u16;
        stat.uid = new.uid;
        stat.gid = new.gid;
        let (attr, of) = self.ns.created(parent, name, stat, |key| {
            Arc::new(OpenFile::created(key.to_string(), stat))
        })?;
        let fh = self.handle_table().insert(Handle::File(FileHandle {
            ino: attr.ino,
            of,
            writable: OpenMode::from_flags(new.flags).writable,
            reads: Default::default(),
        }));
        Ok((attr, fh))
    }

    /// `mknod(2)`: a regular file is created empty and stored before the call returns, like a
    /// `create` followed by `close`; a FIFO, socket or device node is stored as s3fs stores it
    /// (an empty object, its type in the mode, a device's number in `rdev`).
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        (uid, gid): (u32, u32),
    ) -> FsResult<Attr> {
        let kind = Kind::from_mode(mode).ok_or(NsError::BadFileType)?;
        if kind.is_special() {
            let mut stat = Stat::new(kind, &self.config.defaults, SystemTime::now());
            stat.perm = (mode & !umask & 0o7777) as u16;
            (stat.uid, stat.gid, stat.rdev) = (uid, gid, rdev);
            return self.store_whole(parent, name, stat, None).await;
        }
        if kind != Kind::File {
            return Err(NsError::BadFileType.into());
        }
        let flags = libc::O_WRONLY | libc::O_EXCL;
        let new = NewFile {
            mode,
            umask,
            flags,
            uid,
            gid,
        };
        let (attr, fh) = self.create(parent, name, new).await?;
        let stored = self.flush(fh).await;
        let released = self.release(fh).await;
        stored.and(released).map(|()| attr)
    }

    pub(crate) fn file_handle(&self, fh: u64) -> FsResult<FileHandle> {
        self.handle_table()
            .file(fh)
            .ok_or(HandleError::BadFile.into())
    }

    /// Closes a handle. The kernel sent `flush` at each `close()` before this; the last
    /// release of a still-dirty file uploads it (a new file never written stores its empty
    /// object here, see `flush`), or retries a failed upload once, then keeps the data aside.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        self.close_handle(fh, true).await
    }

    /// `release`, taking the rename fence for an upload unless the caller holds it.
    pub(crate) async fn close_handle(&self, fh: u64, take_fence: bool) -> FsResult<()> {
        let Some(h) = self.handle_table().take_file(fh) else {
            return Err(HandleError::BadFile.into());
        };
        self.let_go(h.ino, &h.of, take_fence).await
    }

    /// A reference to the open state of `ino` goes (a handle, or `setattr`'s own). Whoever
    /// drops the last one, decided atomically, stores what is still unsaved (a new file never
    /// written, a failed upload's one retry) and detaches the open state, so two releases at
    /// once never both leave it to the other.
    pub(crate) async fn let_go(
        &self,
        ino: Ino,
        of: &Arc<OpenFile>,
        take_fence: bool,
    ) -> FsResult<()> {
        let last = self.ns.unref(ino) == 0;
        let mut result = Ok(());
        if last && of.is_dirty() {
            let stored = if take_fence {
                let _fence = self.ns.shared().await;
                self.flush_file(ino, of).await
            } else {
                self.flush_file(ino, of).await
            };
            if let Err(e) = stored {
                self.give_up(ino, of, &e);
                self.kernel_delivered().await;
                result = Err(e);
            }
        }
        if last {
            self.abort_leftover_upload(of).await;
        }
        if let Some(spool) = self.ns.detach_if_unused(ino, of) {
            self.uploader.release_spool(&spool);
        }
        result
    }

    /// Drops a reference taken by an open that then failed (nothing to store).
    pub(crate) fn drop_handle_ref(&self, ino: Ino, of: &Arc<OpenFile>) {
        self.ns.unref(ino);
        if let Some(spool) = self.ns.detach_if_unused(ino, of) {
            self.uploader.release_spool(&spool);
        }
    }

    /// An upload failed for good: keeps the data aside, poisons the open file so every
    /// descriptor still on it gets the error, and detaches it from the inode so the next open
    /// sees what S3 holds. A file that never reached S3 disappears.
    pub(crate) fn give_up(&self, ino: Ino, of: &Arc<OpenFile>, e: &FsError) {
        if of.failure().is_some() {
            return;
        }
        self.keep_failed(of, e);
        self.uploader.count_failed();
        self.set_aside(ino, of, e);
    }

    /// Poisons the open file with `e` (every descriptor still on it gets it), drops its spool
    /// and detaches it from the inode, so the next open sees what S3 holds. After a conflict,
    /// the directory's cached listing goes too (another client changed its names).
    pub(crate) fn set_aside(&self, ino: Ino, of: &Arc<OpenFile>, e: &FsError) {
        if e.is_conflict() || e.is_kept_both() {
            self.ns.changed_elsewhere(ino);
        }
        {
            let mut s = of.lock();
            s.failed = Some(UploadError::EarlierFailed(Box::new(e.clone())).into());
            s.dirty = false;
            s.meta_dirty = false;
            if let Some(spool) = s.spool.take() {
                self.uploader.release_spool(&spool);
            }
        }
        match self.ns.gave_up(ino, of) {
            Some((parent, name)) => self.kernel_forget_name(parent, &name),
            None => self.kernel_forget_data(ino),
        }
    }

    /// Moves the spool of a file whose upload failed for good to `failed/`, and says where.
    fn keep_failed(&self, of: &Arc<OpenFile>, e: &FsError) {
        let (key, spool) = {
            let s = of.lock();
            (s.key.clone(), s.spool.clone())
        };
        let Some(spool) = spool else {
            log::error!("upload of {key:?} failed ({e}); the change is lost");
            return;
        };
        let dir = self.config.dir.failed();
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(150)
            .collect();
        let dest = dir.join(format!("{stamp}-{safe}"));
        match std::fs::create_dir_all(&dir).and_then(|_| spool.keep_as(&dest)) {
            Ok(()) => log::error!(
                "upload of {key:?} failed ({e}); its data is kept in {} (holes read as zeros)",
                dest.display()
            ),
            Err(io) => log::error!("upload of {key:?} failed ({e}); could not keep its data: {io}"),
        }
    }

    /// Aborts a multipart upload still attached to a file being closed (unlinked meanwhile).
    async fn abort_leftover_upload(&self, of: &Arc<OpenFile>) {
        let mp = {
            let _g = of.upload.write().await;
            of.lock().mp.take()
        };
        if let Some(mp) = mp
            && let Err(e) = self.store.abort_multipart(&mp.key, &mp.upload_id).await
        {
            log::warn!(
                "could not abort upload {} of {:?}: {e}",
                mp.upload_id,
                mp.key
            );
        }
    }
}
