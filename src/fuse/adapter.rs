//! The FUSE adapter: the only code that sees `fuser` types.
//!
//! Each callback converts the kernel's arguments, spawns the core's `async fn` on the tokio
//! runtime and returns at once, so the few FUSE threads never wait on the network and one slow
//! request does not hold up the others. The spawned task sends exactly one reply. No logic
//! lives here beyond that translation (mountpoint-s3's `fuse.rs` works the same way, so the
//! real filesystem can be tested without FUSE in the loop).

use crate::buffers::POOL;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::fs::attr::Kind;
use crate::fs::error::{FsError, FsResult};
use crate::fs::handles::NewFile;
use crate::fs::readdir::DirEntry;
use crate::fs::setattr::SetAttr;
use crate::fs::{Attr, Fs};
use crate::store::ObjectStore;

/// `st_blksize` reported for files: large, so `cp` and friends move 1 MiB per call.
const BLKSIZE: u32 = 1024 * 1024;

pub struct Adapter<S: ObjectStore> {
    fs: Arc<Fs<S>>,
    rt: Handle,
    ttl: Duration,
    max_background: u16,
}

impl<S: ObjectStore> Adapter<S> {
    /// `max_background`: the kernel's limit on asynchronous requests in flight.
    pub fn new(fs: Arc<Fs<S>>, rt: Handle, max_background: u16) -> Self {
        // The kernel asks again after at most a second; the core answers from its own caches
        // for the metadata TTL, so a change made elsewhere shows within the TTL plus a second.
        let ttl = fs.config().metadata_ttl.min(Duration::from_secs(1));
        Adapter {
            fs,
            rt,
            ttl,
            max_background,
        }
    }
}

/// Logs a failed operation in one line naming the operation, the inode (and entry name) and
/// the error, which names the key and keeps its cause (routine misses at debug level), and
/// turns it into the errno from the core's table.
fn fail(op: &str, ino: INodeNo, name: Option<&OsStr>, e: &FsError) -> Errno {
    let entry = name.map(|n| format!(" entry {n:?}")).unwrap_or_default();
    if e.is_routine() {
        log::debug!("{op} inode {}{entry}: {e}", ino.0);
    } else {
        log::warn!("{op} inode {}{entry} failed: {e}", ino.0);
    }
    Errno::from_i32(e.errno())
}

/// Replies to a call pailfs does not support, through the core's `unsupported!` table.
fn decline(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

impl<S: ObjectStore> Adapter<S> {
    /// Runs a core operation that answers nothing on the runtime, then replies ok or its
    /// errno (logged with `op`, the inode and the entry name).
    fn answer_empty<F>(
        &self,
        op: &'static str,
        ino: INodeNo,
        name: Option<OsString>,
        reply: ReplyEmpty,
        done: F,
    ) where
        F: Future<Output = FsResult<()>> + Send + 'static,
    {
        self.rt.spawn(async move {
            match done.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail(op, ino, name.as_deref(), &e)),
            }
        });
    }

    /// Runs a core operation that makes the entry `name` of `parent` on the runtime, then
    /// replies with its attributes or the errno.
    fn answer_entry<F>(
        &self,
        op: &'static str,
        parent: INodeNo,
        name: OsString,
        reply: ReplyEntry,
        made: F,
    ) where
        F: Future<Output = FsResult<Attr>> + Send + 'static,
    {
        let ttl = self.ttl;
        self.rt.spawn(async move {
            match made.await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(fail(op, parent, Some(&name), &e)),
            }
        });
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn xattr_reply(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    let s = &a.stat;
    let nlink = a.nlink;
    let (kind, size) = match s.kind {
        Kind::File => (FileType::RegularFile, s.size),
        Kind::Dir => (FileType::Directory, 4096),
        Kind::Symlink => (FileType::Symlink, s.size),
        Kind::Fifo => (FileType::NamedPipe, 0),
        Kind::Socket => (FileType::Socket, 0),
        Kind::CharDevice => (FileType::CharDevice, 0),
        Kind::BlockDevice => (FileType::BlockDevice, 0),
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size,
        blocks: size.div_ceil(512),
        atime: s.atime,
        mtime: s.mtime,
        ctime: s.ctime,
        crtime: s.ctime,
        kind,
        perm: s.perm,
        nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: s.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl<S: ObjectStore> Filesystem for Adapter<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Not FUSE_ATOMIC_O_TRUNC: with it the kernel sends the truncation inside OPEN, before
        // it checks that the file is not being executed (ETXTBSY), and truncates its own page
        // cache of a running program. Without it, O_TRUNC arrives as a SETATTR with the new
        // handle, after that check; the truncation still waits for the next flush.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS;
        for flag in wanted.iter() {
            if let Err(missing) = config.add_capabilities(flag) {
                log::info!("kernel lacks FUSE capability {missing:?}");
            }
        }
        // Requests the kernel keeps in flight (read-ahead of several files at once).
        let max_background = self.max_background;
        let _ = config.set_max_background(max_background);
        let _ = config.set_congestion_threshold((max_background * 3 / 4).max(1));
        if let Err(max) = config.set_max_readahead(1024 * 1024) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        log::info!("filesystem unmounted");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // Served here when the namespace knows the answer: no hop to the runtime.
        let entered = self.rt.enter();
        match self.fs.lookup_now(parent.0, name) {
            Some(Ok(a)) => return reply.entry(&self.ttl, &file_attr(&a), Generation(0)),
            Some(Err(e)) => return reply.error(fail("lookup", parent, Some(name), &e)),
            None => drop(entered),
        }
        let (fs, ttl, name) = (self.fs.clone(), self.ttl, name.to_owned());
        self.rt.spawn(async move {
            match fs.lookup(parent.0, &name).await {
                // Another spelling (case-insensitive mode) is never cached: it must resolve
                // afresh each time, as the name it stands for may change.
                Ok(a) if a.alias => reply.entry(&Duration::ZERO, &file_attr(&a), Generation(0)),
                Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(fail("lookup", parent, Some(&name), &e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.rt.spawn(async move {
            match fs.getattr(ino.0).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(fail("getattr", ino, None, &e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        let sa = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        self.rt.spawn(async move {
            match fs.setattr(ino.0, sa).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(fail("setattr", ino, None, &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(fail("readlink", ino, None, &e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        let (uid, gid) = (req.uid(), req.gid());
        let n = name.clone();
        self.answer_entry("mknod", parent, name, reply, async move {
            fs.mknod(parent.0, &n, mode, umask, rdev, (uid, gid)).await
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        let (uid, gid) = (req.uid(), req.gid());
        let n = name.clone();
        self.answer_entry("mkdir", parent, name, reply, async move {
            fs.mkdir(parent.0, &n, mode, umask, uid, gid).await
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        let n = name.clone();
        self.answer_empty("unlink", parent, Some(name), reply, async move {
            fs.unlink(parent.0, &n).await
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        let n = name.clone();
        self.answer_empty("rmdir", parent, Some(name), reply, async move {
            fs.rmdir(parent.0, &n).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (fs, name, target) = (self.fs.clone(), link_name.to_owned(), target.to_owned());
        let (uid, gid) = (req.uid(), req.gid());
        let n = name.clone();
        self.answer_entry("symlink", parent, name, reply, async move {
            fs.symlink(parent.0, &n, &target, uid, gid).await
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        let (name, newname) = (name.to_owned(), newname.to_owned());
        let n = name.clone();
        self.answer_empty("rename", parent, Some(name), reply, async move {
            fs.rename(parent.0, &n, newparent.0, &newname, flags.bits())
                .await
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(decline(crate::unsupported!(
            "hard links",
            libc::EPERM,
            "S3 has no way to give one object two names"
        )));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.open(ino.0, flags.0).await {
                Ok(o) => {
                    let keep = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(o.fh), keep)
                }
                Err(e) => reply.error(fail("open", ino, None, &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // A random read the caches hold is answered here, without the hop to the runtime.
        if let Some(data) = self.fs.read_cached(fh.0, offset, size) {
            return reply.data(&data);
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(fail("read", ino, None, &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Served here when nothing makes it wait: no hop to the runtime, no copy.
        let entered = self.rt.enter();
        match self.fs.write_now(fh.0, offset, data) {
            Some(Ok(n)) => return reply.written(n),
            Some(Err(e)) => return reply.error(fail("write", ino, None, &e)),
            None => drop(entered),
        }
        let fs = self.fs.clone();
        // The request outlives this call; its copy comes from the buffer pool.
        let mut copy = POOL.take(data.len());
        copy.extend_from_slice(data);
        self.rt.spawn(async move {
            let r = fs.write(fh.0, offset, &copy).await;
            POOL.recycle(copy);
            match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(fail("write", ino, None, &e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.answer_empty(
            "flush",
            ino,
            None,
            reply,
            async move { fs.flush(fh.0).await },
        );
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.answer_empty("release", ino, None, reply, async move {
            fs.release(fh.0).await
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.answer_empty(
            "fsync",
            ino,
            None,
            reply,
            async move { fs.fsync(fh.0).await },
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail("opendir", ino, None, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.readdir(fh.0, offset, 256, false).await {
                Ok(entries) => {
                    for e in entries {
                        let kind = file_attr(&e.attr).kind;
                        if reply.add(INodeNo(e.attr.ino), e.offset, kind, &e.name) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(fail("readdir", ino, None, &e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.rt.spawn(async move {
            // `add` answers true when the reply is full: the entry was not taken.
            let take = |e: &DirEntry| {
                let attr = file_attr(&e.attr);
                let (ino, generation) = (INodeNo(e.attr.ino), Generation(0));
                !reply.add(ino, e.offset, &e.name, &ttl, &attr, generation)
            };
            match fs.readdirplus(fh.0, offset, 64, take).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("readdirplus", ino, None, &e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are stored in S3 before the call that made them returns.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let new = NewFile {
            mode,
            umask,
            flags,
            uid: req.uid(),
            gid: req.gid(),
        };
        // Served here when the name is known to be new: no hop to the runtime.
        let _entered = self.rt.enter();
        if let Some(r) = self.fs.create_now(parent.0, name, new) {
            return reply_created(reply, &self.ttl, r, parent, name);
        }
        let (fs, ttl, name) = (self.fs.clone(), self.ttl, name.to_owned());
        self.rt.spawn(async move {
            let r = fs.create(parent.0, &name, new).await;
            reply_created(reply, &ttl, r, parent, &name);
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (fs, name, value) = (self.fs.clone(), name.to_owned(), value.to_vec());
        self.answer_empty("setxattr", ino, None, reply, async move {
            fs.setxattr(ino.0, &name, &value, flags).await
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.rt.spawn(async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(v) => xattr_reply(reply, &v, size),
                Err(e) => reply.error(fail("getxattr", ino, None, &e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.listxattr(ino.0).await {
                Ok(v) => xattr_reply(reply, &v, size),
                Err(e) => reply.error(fail("listxattr", ino, None, &e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.answer_empty("removexattr", ino, None, reply, async move {
            fs.removexattr(ino.0, &name).await
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(decline(crate::unsupported!(
            "fallocate calls",
            libc::EOPNOTSUPP,
            "S3 objects cannot reserve space"
        )));
    }
}

/// Answers a `create` with the new file's entry and handle, or the error.
fn reply_created(
    reply: ReplyCreate,
    ttl: &Duration,
    r: FsResult<(Attr, u64)>,
    parent: INodeNo,
    name: &OsStr,
) {
    match r {
        Ok((a, fh)) => reply.created(
            ttl,
            &file_attr(&a),
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
        ),
        Err(e) => reply.error(fail("create", parent, Some(name), &e)),
    }
}
