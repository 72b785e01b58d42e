//! The filesystem core: POSIX operations over inode numbers and names, in S3 requests.
//!
//! Nothing here knows about FUSE: every operation is an `async fn` returning plain structs and
//! an [`FsError`] with an errno, so the whole core runs in tests over a
//! [`crate::store::memory::MemoryStore`] without a kernel. The FUSE adapter turns each kernel
//! request into one call here and one reply.
//!
//! [`Fs`] is a few components that each own their state, and the operations that use them:
//!
//! * [`namespace::Namespace`] (`namespace/`): names, inodes, keys, cached listings, negative
//!   entries and case aliases, with their invariants and lock order at its top;
//! * the handle table (`handles`): open file and directory handles;
//! * the reader (`readahead::Reader`): cached blocks, fetches in flight, read-ahead budget;
//! * the uploader (`upload::Uploader`): part layout, upload slots, spool budget, counters.
//!
//! Operations, by concern: `lookup` (lookup, getattr, probes), `dirops` (mkdir, rmdir,
//! unlink, symlink, readlink), `readdir` and `listing` (LIST pages), `dirscan` and
//! `siblings` (listing and reading ahead for many names), `case` (case-insensitive names),
//! `handles` (open, create, release), `read`, `readahead` and `random`, `write` and `upload`, `rename`,
//! `setattr` and `xattr`; `openfile` (per-file shared state), `spool`, `ranges`, `parts` and
//! `recovery` (what an open file keeps on disk), `attr`, `names` and `error`.
//!
//! Locks, in order: the namespace's rename fence, an open file's `upload` lock, its `data`
//! lock (held across a spool write done off the async workers), the namespace state, the
//! handle table, a handle's read state (`reads`), an open file's `state` (see `namespace`
//! and `openfile`). No std lock is held across an `.await` or a write to disk; a random read
//! served from the caches (`random::read_cached`) holds its handle's read state while it reads
//! a few pages from the disk cache.

pub mod attr;
pub mod case;
pub mod conflict;
pub mod dirops;
pub mod dirscan;
pub mod error;
pub mod handles;
pub mod headahead;
pub mod listing;
pub mod lookup;
pub mod names;
pub mod namespace;
pub mod openfile;
pub mod parts;
pub mod random;
pub mod ranges;
pub mod read;
pub mod readahead;
pub mod readdir;
pub mod recovery;
pub mod rename;
pub mod revalidate;
pub mod setattr;
pub mod siblings;
pub mod spool;
pub mod upload;
pub mod write;
pub mod xattr;

/// Inode numbers (kept at this path for the adapter and the tests).
pub mod inode {
    pub use super::namespace::{Ino, ROOT};
}

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use attr::{Defaults, Kind, Stat};
use error::{FsError, FsResult};
use inode::Ino;
use names::SkipLog;
use namespace::{Namespace, NsConfig};

use crate::cache_dir::MountDir;
use crate::store::ObjectStore;

/// Settings of the core, validated before the mount starts.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Key prefix shown as the mount's root: "" or ending in `/`.
    pub prefix: String,
    pub defaults: Defaults,
    pub read_only: bool,
    /// How long attributes and names are trusted without asking S3.
    pub metadata_ttl: Duration,
    /// How long "no such name" is trusted (never more than `metadata_ttl`).
    pub negative_ttl: Duration,
    /// How old what S3 said of a file may be when an open picks the version it reads (zero:
    /// close-to-open across hosts; never more than `metadata_ttl`).
    pub open_ttl: Duration,
    /// Size of the first multipart parts; files up to this size are one PUT.
    pub part_size: u64,
    /// Parts uploaded at once across the mount (bounds memory: each holds a part in RAM).
    pub upload_concurrency: usize,
    /// RAM for cached blocks, read-ahead in flight and parts being uploaded, together.
    pub memory_limit: u64,
    /// The mount's directory in the cache: spool, failed uploads, disk block cache.
    pub dir: MountDir,
    pub max_spool_bytes: u64,
    /// How long a write waits for spool space before failing with ENOSPC.
    pub spool_wait: Duration,
    /// Directories with more objects than this are not renamed (EPERM).
    pub max_rename_objects: u64,
    /// Objects larger than this are copied part by part (S3 allows single copies up to 5 GiB).
    pub max_single_copy: u64,
    /// Names match ignoring case (see `case`).
    pub case_insensitive: bool,
    pub case_collision: case::CaseCollision,
    /// In case-insensitive mode, also match names that differ only in Unicode normalization.
    pub normalize_names: bool,
    /// Trust listings for attributes: `ls -l` costs no request per entry, but objects not yet
    /// looked at show the mount's default owner and modes and their S3 date.
    pub fast_listing: bool,
    /// The size cap of the on-disk block cache, in the mount's directory (0: off).
    pub disk_cache_size: u64,
    /// Conditional uploads across hosts (see `conflict`).
    pub conflicts: conflict::Conflicts,
}

impl FsConfig {
    /// The defaults (the CLI's too), for a mount of `prefix` whose files live in `dir`.
    pub fn new(prefix: &str, dir: MountDir) -> Self {
        FsConfig {
            prefix: prefix.to_string(),
            defaults: Defaults::for_user(0, 0),
            read_only: false,
            metadata_ttl: Duration::from_secs(DEFAULT_METADATA_TTL_SECS),
            negative_ttl: Duration::from_millis(DEFAULT_NEGATIVE_TTL_MS),
            open_ttl: Duration::ZERO,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            dir,
            max_spool_bytes: DEFAULT_MAX_SPOOL_BYTES,
            spool_wait: Duration::from_secs(60),
            max_rename_objects: DEFAULT_MAX_RENAME_OBJECTS,
            max_single_copy: crate::store::MAX_SINGLE_COPY,
            case_insensitive: false,
            case_collision: case::CaseCollision::default(),
            normalize_names: false,
            fast_listing: false,
            disk_cache_size: 0,
            conflicts: conflict::Conflicts::default(),
        }
    }

    /// The disk block cache's directory and cap, when it is on.
    pub fn disk_cache(&self) -> Option<(PathBuf, u64)> {
        (self.disk_cache_size > 0).then(|| (self.dir.blocks(), self.disk_cache_size))
    }
}

/// An inode number with its attributes, as lookups and getattr return them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub stat: Stat,
    /// 0 once the name was removed while the file is still open; else 1, or for a directory 2
    /// plus its known subdirectories.
    pub nlink: u32,
    /// Another spelling of an existing name (case-insensitive mode): never cached by the kernel.
    pub alias: bool,
}

impl Attr {
    pub fn new(ino: Ino, stat: Stat) -> Self {
        let nlink = if stat.kind == Kind::Dir { 2 } else { 1 };
        Attr {
            ino,
            stat,
            nlink,
            alias: false,
        }
    }
}

/// Filesystem-wide numbers for `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// The kernel's caches of names and data, as the core may need to correct them (FUSE
/// notifications). Set by the adapter once mounted; absent in tests without a kernel.
pub trait KernelCache: Send + Sync {
    /// Forget the name `name` in directory `parent` (a cached positive or negative entry).
    fn forget_name(&self, parent: Ino, name: &str);
    /// Forget cached pages and attributes of `ino`.
    fn forget_data(&self, ino: Ino);
    /// Forget the cached attributes of `ino` (its size), keeping its pages.
    fn forget_attr(&self, ino: Ino);
    /// Resolves once every notification queued before it was delivered to the kernel.
    fn delivered(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }
}

/// The core. Cheap to share: the adapter holds it in an `Arc` and spawns one task per request.
pub struct Fs<S: ObjectStore> {
    pub(crate) store: Arc<S>,
    pub(crate) config: FsConfig,
    pub(crate) ns: Namespace,
    pub(crate) handles: Mutex<handles::HandleTable>,
    pub(crate) reader: readahead::Reader,
    pub(crate) uploader: upload::Uploader,
    pub(crate) skip_log: SkipLog,
    pub(crate) case_log: case::CaseLog,
    pub(crate) kernel: std::sync::OnceLock<Box<dyn KernelCache>>,
    /// Revalidations by listing in flight, one per directory (see `revalidate`).
    pub(crate) revalidations: revalidate::Gates,
    /// This filesystem, for spawning background work from `&self` methods.
    pub(crate) me: std::sync::Weak<Fs<S>>,
}

/// The default `--memory-limit`: what the mount may hold in RAM for data (cache, read-ahead,
/// uploads). The process's own footprint (code, the S3 client, tables) comes on top.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// The default `--metadata-ttl`, in seconds.
pub const DEFAULT_METADATA_TTL_SECS: u64 = 5;

/// The longest metadata TTL short of `indefinite`, which alone lets an open skip asking S3.
const ONE_DAY: Duration = Duration::from_secs(86_400);

/// The default `--negative-metadata-ttl`, in milliseconds.
pub const DEFAULT_NEGATIVE_TTL_MS: u64 = 1000;

/// The default `--part-size`: files up to this size are one PUT.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// The default `--upload-concurrency`.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;

/// The default `--max-spool-size`: the spool's disk budget.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// The default `--max-rename-objects`.
pub const DEFAULT_MAX_RENAME_OBJECTS: u64 = 10_000;

impl<S: ObjectStore> Fs<S> {
    pub fn new(store: S, config: FsConfig) -> FsResult<Arc<Self>> {
        std::fs::create_dir_all(config.dir.spool()).map_err(|e| {
            FsError::local(
                format!(
                    "cannot create spool directory {}",
                    config.dir.spool().display()
                ),
                e,
            )
        })?;
        let shares = crate::cache::MemoryShares::split(config.memory_limit, config.part_size);
        crate::buffers::POOL.set_max_idle(shares.pool as usize);
        let reader = readahead::Reader::new(&shares, config.disk_cache())?;
        let uploader = upload::Uploader::new(&config, &shares);
        let ns = Namespace::new(NsConfig {
            prefix: config.prefix.clone(),
            defaults: config.defaults,
            ttl: config.metadata_ttl,
            negative_ttl: config.negative_ttl.min(config.metadata_ttl),
            open_ttl: match config.metadata_ttl > ONE_DAY {
                true => config.metadata_ttl,
                false => config.open_ttl.min(config.metadata_ttl),
            },
            case_insensitive: config.case_insensitive,
            normalize: config.normalize_names,
            started: SystemTime::now(),
            budget: shares.names,
        });
        Ok(Arc::new_cyclic(|me| Fs {
            me: me.clone(),
            revalidations: Default::default(),
            store: Arc::new(store),
            ns,
            handles: Mutex::new(handles::HandleTable::default()),
            reader,
            uploader,
            skip_log: SkipLog::new(10_000),
            case_log: case::CaseLog::default(),
            kernel: std::sync::OnceLock::new(),
            config,
        }))
    }

    /// Connects the kernel's caches (once, after mounting).
    pub fn set_kernel_cache(&self, k: Box<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    pub(crate) fn kernel_forget_name(&self, parent: Ino, name: &str) {
        if let Some(k) = self.kernel.get() {
            k.forget_name(parent, name);
        }
    }

    /// Waits (up to a second) until the kernel has received the notifications queued so far:
    /// a request answered after this sees no name the kernel was told to forget.
    pub(crate) async fn kernel_delivered(&self) {
        if let Some(rx) = self.kernel.get().and_then(|k| k.delivered()) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rx).await;
        }
    }

    /// Keeps the inode table within its memory budget: the kernel is asked to forget the
    /// oldest entries it holds (see `Namespace::over_budget`).
    pub(crate) fn trim_names(&self) {
        for (parent, name) in self.ns.over_budget() {
            self.kernel_forget_name(parent, &name);
        }
    }

    pub(crate) fn kernel_forget_attr(&self, ino: Ino) {
        if let Some(k) = self.kernel.get() {
            k.forget_attr(ino);
        }
    }

    pub(crate) fn kernel_forget_data(&self, ino: Ino) {
        if let Some(k) = self.kernel.get() {
            k.forget_data(ino);
        }
    }

    /// Open files with changes not uploaded yet.
    pub fn pending_uploads(&self) -> u64 {
        self.ns
            .open_files()
            .iter()
            .filter(|(_, o)| o.is_dirty())
            .count() as u64
    }

    /// Files whose upload failed for good since the mount started.
    pub fn failed_uploads(&self) -> u64 {
        self.uploader.failed()
    }

    /// Uploads running now.
    pub fn uploads_running(&self) -> u64 {
        self.uploader.running()
    }

    /// Spool disk in use.
    pub fn spool_used(&self) -> u64 {
        self.uploader.spool_used()
    }

    /// At shutdown: every open file with changes not uploaded keeps its spool and journal on
    /// disk, for the next mount to rebuild (see `recovery`), and its early multipart upload
    /// is aborted. Returns the keys, for the report.
    pub async fn preserve_unsaved(&self) -> Vec<String> {
        let files: Vec<Arc<openfile::OpenFile>> = self
            .ns
            .open_files()
            .into_iter()
            .map(|(_, o)| o)
            .filter(|o| o.is_dirty())
            .collect();
        let mut keys = Vec::new();
        for of in files {
            // Parts being uploaded early finish first; none starts after (the file is
            // poisoned), so no multipart upload is created after the abort below.
            let _exclusive = of.upload.write().await;
            let (key, mp) = {
                let mut s = of.lock();
                if let Some(sp) = &s.spool {
                    sp.keep();
                }
                s.failed = Some(error::UploadError::Stopping.into());
                (s.key.clone(), s.mp.take())
            };
            if let Some(mp) = mp {
                let _ = self.store.abort_multipart(&mp.key, &mp.upload_id).await;
            }
            keys.push(key);
        }
        keys
    }

    /// The block cache (for stats and tests).
    pub fn block_cache(&self) -> &crate::cache::BlockCache {
        self.reader.block_cache()
    }

    /// (object bytes fetched from S3 for reads, bytes returned to readers) since the mount.
    pub fn read_amplification(&self) -> (u64, u64) {
        self.reader.amplification()
    }

    /// The namespace (names, inodes, listings), for stats and tests.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Keys that could not be shown as files, as logged so far.
    pub fn skipped_keys(&self) -> Vec<String> {
        self.skip_log.keys()
    }

    pub(crate) fn handle_table(&self) -> MutexGuard<'_, handles::HandleTable> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    pub fn statfs(&self) -> StatFs {
        // S3 has no capacity; report a large, constant space so tools that check free space
        // before copying (installers, rsync --max-size) proceed.
        StatFs {
            blocks: 1 << 40,
            bfree: 1 << 40,
            files: 1 << 40,
            ffree: 1 << 40,
            bsize: 4096,
            namelen: names::NAME_MAX as u32,
        }
    }
}
