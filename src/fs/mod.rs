//! The filesystem core: POSIX operations over inode numbers and names, in S3 requests.
//!
//! Nothing here knows about FUSE: every operation is an `async fn` returning plain structs and
//! an [`FsError`] with an errno, so the whole core runs in tests over a
//! [`crate::store::memory::MemoryStore`] without a kernel. The FUSE adapter turns each kernel
//! request into one call here and one reply.
//!
//! Modules, by concern: `inode` (the table), `names` (keys versus names), `attr` (stat and its
//! S3 metadata), `namespace` (lookup, mkdir, unlink, ...), `readdir`, `handles` (open, create,
//! release), `read`, `write` and `upload` (spool to S3), `openfile` (per-file shared state),
//! `spool`, `ranges`, `parts`, `error`.
//!
//! Lock order: the inode table (`inodes`), then the handle table (`handles`); an
//! [`openfile::OpenFile`]'s own locks are never taken while holding either. No std lock is held
//! across an `.await`.

pub mod attr;
pub mod case;
pub mod dirscan;
pub mod error;
pub mod handles;
pub mod inode;
pub mod listing;
pub mod names;
pub mod namespace;
pub mod openfile;
pub mod parts;
pub mod ranges;
pub mod read;
pub mod readahead;
pub mod readdir;
pub mod recovery;
pub mod rename;
pub mod setattr;
pub mod siblings;
pub mod spool;
pub mod upload;
pub mod write;
pub mod xattr;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use attr::{Defaults, Kind, Stat};
use error::{FsError, FsResult};
use inode::{Ino, InodeTable};
use names::SkipLog;
use parts::PartLayout;
use spool::SpoolBudget;

use crate::store::ObjectStore;

/// Settings of the core, validated before the mount starts.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Key prefix shown as the mount's root: "" or ending in `/`.
    pub prefix: String,
    pub defaults: Defaults,
    pub read_only: bool,
    /// How long attributes, entries and negative lookups are trusted without asking S3.
    pub metadata_ttl: Duration,
    /// Size of the first multipart parts; files up to this size are one PUT.
    pub part_size: u64,
    /// Parts uploaded at once across the mount (bounds memory: each holds a part in RAM).
    pub upload_concurrency: usize,
    /// RAM for cached blocks, read-ahead in flight and parts being uploaded, together.
    pub memory_limit: u64,
    pub spool_dir: PathBuf,
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
    /// The on-disk block cache: its directory and size cap (off when `None`).
    pub disk_cache: Option<(PathBuf, u64)>,
}

impl FsConfig {
    /// A configuration for tests and the defaults of the CLI.
    pub fn new(prefix: &str, spool_dir: PathBuf) -> Self {
        FsConfig {
            prefix: prefix.to_string(),
            defaults: Defaults {
                uid: 0,
                gid: 0,
                file_mode: 0o644,
                dir_mode: 0o755,
            },
            read_only: false,
            metadata_ttl: Duration::from_secs(DEFAULT_METADATA_TTL_SECS),
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 8,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            spool_dir,
            max_spool_bytes: 16 * 1024 * 1024 * 1024,
            spool_wait: Duration::from_secs(60),
            max_rename_objects: 10_000,
            max_single_copy: crate::store::MAX_SINGLE_COPY,
            case_insensitive: false,
            case_collision: case::CaseCollision::Resolve,
            normalize_names: false,
            fast_listing: false,
            disk_cache: None,
        }
    }
}

/// An inode number with its attributes, as lookups and getattr return them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub stat: Stat,
    /// 0 once the name was removed while the file is still open; else 1 (2 for directories).
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
    /// Resolves once every notification queued before it was delivered to the kernel.
    fn delivered(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }
}

/// The core. Cheap to share: the adapter holds it in an `Arc` and spawns one task per request.
pub struct Fs<S: ObjectStore> {
    pub(crate) store: Arc<S>,
    pub(crate) config: FsConfig,
    pub(crate) layout: PartLayout,
    pub(crate) inodes: Mutex<InodeTable>,
    pub(crate) handles: Mutex<handles::HandleTable>,
    /// Names known not to exist: (parent, name) -> when checked.
    pub(crate) negative: Mutex<HashMap<(Ino, String), Instant>>,
    pub(crate) skip_log: SkipLog,
    /// Bounds parts in memory at once (early and flush uploads alike).
    pub(crate) part_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) spool_budget: SpoolBudget,
    /// When the mount started: the times of directories without a marker object.
    pub(crate) started: SystemTime,
    pub(crate) kernel: std::sync::OnceLock<Box<dyn KernelCache>>,
    /// Whole directory listings (see `listing`).
    pub(crate) listings: Mutex<lru::LruCache<Ino, Arc<Mutex<listing::DirListing>>>>,
    pub(crate) collisions: std::sync::atomic::AtomicU64,
    pub(crate) collision_groups: Mutex<std::collections::HashSet<String>>,
    pub(crate) block_cache: crate::cache::BlockCache,
    pub(crate) disk_cache: Option<Arc<crate::cache::disk::DiskCache>>,
    pub(crate) inflight: readahead::InFlight,
    /// Read-ahead in flight, in blocks.
    pub(crate) read_slots: Arc<tokio::sync::Semaphore>,
    /// Lookups that had to ask S3, by directory (see `dirscan`).
    pub(crate) probes: Mutex<lru::LruCache<Ino, dirscan::Probes>>,
    /// The last file opened for reading in each recently used directory (see `siblings`).
    pub(crate) read_cursors: Mutex<lru::LruCache<Ino, String>>,
    /// Directories whose entries' metadata is being fetched in the background.
    pub(crate) prefetching: Mutex<std::collections::HashSet<Ino>>,
    /// This filesystem, for spawning background work from `&self` methods.
    pub(crate) me: std::sync::Weak<Fs<S>>,
    /// Files whose upload failed for good (see `give_up`).
    pub(crate) failed_uploads: std::sync::atomic::AtomicU64,
    /// Uploads running now (flushes and fsyncs), for a clean shutdown.
    pub(crate) uploading: std::sync::atomic::AtomicU64,
}

/// The default `--memory-limit`: what the mount may hold in RAM for data (cache, read-ahead,
/// uploads). The process's own footprint (code, the S3 client, tables) comes on top.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// The default `--metadata-ttl`, in seconds.
pub const DEFAULT_METADATA_TTL_SECS: u64 = 5;

/// Most names kept in the negative-lookup cache.
const NEGATIVE_CACHE_MAX: usize = 65_536;

impl<S: ObjectStore> Fs<S> {
    pub fn new(store: S, config: FsConfig) -> FsResult<Arc<Self>> {
        std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
            FsError::new(
                libc::EIO,
                format!(
                    "cannot create spool directory {}: {e}",
                    config.spool_dir.display()
                ),
            )
        })?;
        let now = SystemTime::now();
        let root = Stat::new(Kind::Dir, &config.defaults, now);
        let shares = crate::cache::MemoryShares::split(config.memory_limit, config.part_size);
        crate::buffers::POOL.set_max_idle(shares.pool as usize);
        let disk_cache = match &config.disk_cache {
            Some((dir, cap)) => Some(Arc::new(
                crate::cache::disk::DiskCache::open(dir, *cap).map_err(|e| {
                    FsError::new(
                        libc::EIO,
                        format!("cannot open the disk cache {}: {e}", dir.display()),
                    )
                })?,
            )),
            None => None,
        };
        let upload_slots = config
            .upload_concurrency
            .min((shares.uploads / config.part_size.max(1)) as usize)
            .max(1);
        Ok(Arc::new_cyclic(|me| Fs {
            me: me.clone(),
            prefetching: Mutex::new(std::collections::HashSet::new()),
            probes: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(dirscan::COUNTED_DIRS).expect("non-zero"),
            )),
            read_cursors: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(siblings::CURSORS).expect("non-zero"),
            )),
            store: Arc::new(store),
            layout: PartLayout::new(config.part_size),
            inodes: Mutex::new(InodeTable::new(config.prefix.clone(), root)),
            handles: Mutex::new(handles::HandleTable::default()),
            negative: Mutex::new(HashMap::new()),
            skip_log: SkipLog::new(10_000),
            part_slots: Arc::new(tokio::sync::Semaphore::new(upload_slots)),
            spool_budget: SpoolBudget::new(config.max_spool_bytes, config.spool_wait),
            started: now,
            kernel: std::sync::OnceLock::new(),
            listings: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(listing::LISTING_CACHE_DIRS).expect("non-zero"),
            )),
            collisions: std::sync::atomic::AtomicU64::new(0),
            collision_groups: Mutex::new(std::collections::HashSet::new()),
            block_cache: crate::cache::BlockCache::new(shares.cache),
            disk_cache,
            failed_uploads: std::sync::atomic::AtomicU64::new(0),
            uploading: std::sync::atomic::AtomicU64::new(0),
            inflight: readahead::InFlight::default(),
            read_slots: Arc::new(tokio::sync::Semaphore::new(
                (shares.read_ahead / crate::cache::BLOCK).max(readahead::CHUNK_BLOCKS) as usize,
            )),
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

    pub(crate) fn kernel_forget_data(&self, ino: Ino) {
        if let Some(k) = self.kernel.get() {
            k.forget_data(ino);
        }
    }

    /// `"/path" (key "k")` of an inode, or of its entry `name`, for log lines.
    pub fn describe(&self, ino: Ino, name: Option<&str>) -> String {
        let key = {
            let t = self.table();
            match (t.get(ino), name) {
                (Some(i), Some(n)) => names::child_key(&i.key, n),
                (Some(i), None) => i.key.clone(),
                (None, _) => return format!("inode {ino}"),
            }
        };
        let path = key
            .strip_prefix(self.config.prefix.as_str())
            .unwrap_or(&key);
        format!("/{} (key {key:?})", path.trim_end_matches('/'))
    }

    /// Open files with changes not uploaded yet.
    pub fn pending_uploads(&self) -> u64 {
        let t = self.table();
        t.iter()
            .filter(|i| i.open.as_ref().is_some_and(|o| o.is_dirty()))
            .count() as u64
    }

    /// Files whose upload failed for good since the mount started.
    pub fn failed_uploads(&self) -> u64 {
        self.failed_uploads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Uploads running now.
    pub fn uploads_running(&self) -> u64 {
        self.uploading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Spool disk in use.
    pub fn spool_used(&self) -> u64 {
        self.spool_budget.used()
    }

    /// At shutdown: every open file with changes not uploaded keeps its spool and journal on
    /// disk, for the next mount to rebuild (see `recovery`), and its early multipart upload
    /// is aborted. Returns the keys, for the report.
    pub async fn preserve_unsaved(&self) -> Vec<String> {
        let files: Vec<Arc<openfile::OpenFile>> = {
            let t = self.table();
            t.iter()
                .filter_map(|i| i.open.clone())
                .filter(|o| o.is_dirty())
                .collect()
        };
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
                s.failed = Some(error::FsError::new(
                    libc::EIO,
                    "the mount is stopping; the file's data is kept in the cache directory",
                ));
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
        &self.block_cache
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

    pub(crate) fn table(&self) -> MutexGuard<'_, InodeTable> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn handle_table(&self) -> MutexGuard<'_, handles::HandleTable> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.config.read_only {
            Err(FsError::read_only())
        } else {
            Ok(())
        }
    }

    /// Number of inodes in the table (for tests and stats).
    pub fn inode_count(&self) -> usize {
        self.table().len()
    }

    pub(crate) fn negative_hit(&self, parent: Ino, name: &str) -> bool {
        let neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        neg.get(&(parent, name.to_string()))
            .is_some_and(|t| t.elapsed() < self.config.metadata_ttl)
    }

    pub(crate) fn negative_insert(&self, parent: Ino, name: &str) {
        let mut neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        if neg.len() >= NEGATIVE_CACHE_MAX {
            let ttl = self.config.metadata_ttl;
            neg.retain(|_, t| t.elapsed() < ttl);
            if neg.len() >= NEGATIVE_CACHE_MAX {
                neg.clear();
            }
        }
        neg.insert((parent, name.to_string()), Instant::now());
    }

    pub(crate) fn negative_remove(&self, parent: Ino, name: &str) {
        let mut neg = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        neg.remove(&(parent, name.to_string()));
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
