//! The FUSE ceiling for `scripts/bench`: a fuser filesystem with one file, `zeros`, whose
//! reads return zeros without doing anything else. Whatever it reaches is what any fuser-based
//! filesystem could reach on this machine. Same fuser version and mount settings as pailfs.
//!
//! ```text
//! zerofs MOUNTPOINT SIZE_MIB     # serves MOUNTPOINT/zeros until unmounted
//! ```

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request,
};

struct Zero {
    size: u64,
}

const TTL: Duration = Duration::from_secs(60);
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

fn attr(ino: u64, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if ino == 1 {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: 0o755,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

impl Filesystem for Zero {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, _parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if name == "zeros" {
            reply.entry(&TTL, &attr(2, self.size), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &attr(ino.0, if ino.0 == 1 { 0 } else { self.size }));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let n = (size as u64)
            .min(self.size.saturating_sub(offset))
            .min(ZEROS.len() as u64);
        reply.data(&ZEROS[..n as usize]);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if offset == 0 {
            let _ = reply.add(INodeNo(2), 1, FileType::RegularFile, "zeros");
        }
        reply.ok();
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let size = a.get(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(1024) << 20;
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("zerofs".into()), MountOption::RO];
    config.n_threads = Some(4);
    config.clone_fd = true;
    if let Err(e) = fuser::mount(Zero { size }, &a[1], &config) {
        eprintln!("zerofs: {e}");
        std::process::exit(1);
    }
}
