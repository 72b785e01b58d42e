//! The namespace: the one owner of names, inodes, keys, cached listings, negative entries and
//! case aliases. Everything else in the core asks it; nothing else holds its state.
//!
//! It answers "what is at this name" from what it knows, says when S3 must be asked, and is
//! the only place where an answer from S3 or a change made through the mount enters the state.
//!
//! # Invariants
//!
//! 1. A linked inode is the child of exactly one `(parent, name)`, and its key is its parent's
//!    key plus its name (plus `/` for a directory). A rename re-keys the moved inode and every
//!    inode below it, open files included, in one step under the lock.
//! 2. A cached listing of a directory describes the keys under that directory's current
//!    prefix: a rename drops the listings of the moved directory and of everything below it,
//!    and patches the two parents' listings.
//! 3. An answer from S3 never overwrites a newer change made through the mount. Every local
//!    change takes a new *stamp* from one counter (`Inode::changed`, and for a directory's
//!    names `Inode::names_changed`); a question to S3 remembers the stamp it was asked at
//!    ([`Asked`]), and its answer is applied only if nothing it concerns changed after that.
//!    An answer about a name whose parent was renamed meanwhile is asked again.
//! 4. Local state wins: a file created here and not uploaded, an open file, or a directory
//!    holding such files is never replaced or hidden by what S3 says.
//! 5. Positive answers are trusted for the metadata TTL; that a name is *absent* (a negative
//!    entry, or a name missing from a listing) only for the shorter negative TTL, unless the
//!    directory was made here and every change to it came through here (an authoritative
//!    listing). In case-insensitive mode the listing is what finds other spellings, so a
//!    listing is trusted for the whole metadata TTL there.
//! 6. An alias (case-insensitive mode) stands for one target inode and holds it in the table;
//!    a rename or removal of the target drops its aliases.
//!
//! # Locks, in the order they are taken
//!
//! 1. [`Namespace::shared`] / [`Namespace::exclusive`], the rename fence (a tokio `RwLock`
//!    held across S3 requests): every operation that changes S3 holds it shared, a directory
//!    rename holds it exclusively, so no upload, delete or copy lands on a key while a
//!    directory above it is being copied and deleted. Only the public operations of `Fs` take
//!    it, never the helpers they call, so it is never taken twice by one task.
//! 2. An open file's `upload` lock (see `openfile`).
//! 3. The state mutex below (a `std::sync::Mutex`, never held across an `.await`).
//! 4. An open file's `state` mutex (the namespace reads sizes and re-keys open files under 3).

pub mod clock;
pub mod listings;
pub mod table;

mod apply;
mod changes;
mod listing_cache;
mod opened;
pub mod revalidation;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use apply::{Applied, Asked, Cached, Found, HeadPlan};
pub use changes::{Move, Removed};
pub use clock::Clock;
use listings::DirListing;
pub use opened::Opened;
use table::InodeTable;
pub use table::{Ino, Inode, ROOT};

use super::attr::{Defaults, Kind, Stat};
use super::error::{FsError, FsResult, NsError};
use super::openfile::OpenFile;
use super::{Attr, dirscan};

/// Most names kept in the negative cache.
const NEGATIVE_CACHE_MAX: usize = 65_536;

/// What the namespace needs to know of the mount's settings.
#[derive(Clone, Debug)]
pub struct NsConfig {
    /// Key prefix shown as the mount's root.
    pub prefix: String,
    pub defaults: Defaults,
    /// How long positive answers (attributes, names, listings) are trusted.
    pub ttl: Duration,
    /// How long "absent" is trusted.
    pub negative_ttl: Duration,
    /// How old the version a new open reads may be: zero by default, so every open asks S3
    /// (close-to-open across hosts); `--open-ttl`, or the metadata TTL when it never expires.
    pub open_ttl: Duration,
    pub case_insensitive: bool,
    pub normalize: bool,
    /// When the mount started: the times of directories without a marker object.
    pub started: SystemTime,
    /// Memory for listings and the inode table together (half each).
    pub budget: u64,
}

/// Estimated memory of one inode in the table (the entry, its name twice, its key, ETag and
/// a few cached attributes).
pub const INODE_BYTES: u64 = 768;

pub(crate) struct State {
    table: InodeTable,
    listings: lru::LruCache<Ino, DirListing>,
    /// Names known absent: when, and the stamp (a removal here carries its own).
    negatives: HashMap<(Ino, String), (Instant, u64)>,
    /// Lookups that had to ask S3, by directory (see `dirscan`).
    probes: lru::LruCache<Ino, dirscan::Probes>,
    /// Directories whose entries' metadata is being fetched in the background.
    prefetching: HashSet<Ino>,
    /// The last stamp handed out (see invariant 3).
    stamp: u64,
}

impl State {
    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }
}

/// See the module documentation.
pub struct Namespace {
    state: Mutex<State>,
    clock: Clock,
    fence: tokio::sync::RwLock<()>,
    cfg: NsConfig,
}

impl Namespace {
    pub fn new(cfg: NsConfig) -> Self {
        let root = Stat::new(Kind::Dir, &cfg.defaults, cfg.started);
        let nz = |n: usize| NonZeroUsize::new(n).expect("non-zero");
        Namespace {
            state: Mutex::new(State {
                table: InodeTable::new(cfg.prefix.clone(), root),
                listings: lru::LruCache::new(nz(listings::LISTING_CACHE_DIRS)),
                negatives: HashMap::new(),
                probes: lru::LruCache::new(nz(dirscan::COUNTED_DIRS)),
                prefetching: HashSet::new(),
                stamp: 0,
            }),
            clock: Clock::default(),
            fence: tokio::sync::RwLock::new(()),
            cfg,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn config(&self) -> &NsConfig {
        &self.cfg
    }

    /// Held (shared) by every operation that changes S3; see the module documentation.
    pub async fn shared(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.fence.read().await
    }

    /// Held by a directory rename for its whole run.
    pub async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.fence.write().await
    }

    /// A copy of inode `ino` as it is now.
    pub fn get(&self, ino: Ino) -> Option<Inode> {
        self.lock().table.get(ino).cloned()
    }

    /// The directory and name `ino` is linked under.
    pub fn link_of(&self, ino: Ino) -> Option<(Ino, String)> {
        let st = self.lock();
        let i = st.table.get(ino).filter(|i| i.linked)?;
        Some((i.parent, i.name.clone()))
    }

    /// The inode an alias stands for (itself when it is not an alias).
    pub fn canon(&self, ino: Ino) -> Ino {
        if !self.cfg.case_insensitive {
            return ino;
        }
        self.lock().table.canon(ino)
    }

    /// The attributes of `ino` (open files report their unflushed size), counting a kernel
    /// lookup when `count`.
    pub fn attr(&self, ino: Ino, count: bool) -> FsResult<Attr> {
        let mut st = self.lock();
        if st.table.get(ino).is_none() {
            return Err(FsError::not_found());
        }
        Ok(attr_of(&mut st.table, ino, count))
    }

    /// The key of directory `ino`; `ENOTDIR` for anything else.
    pub fn dir_key(&self, ino: Ino) -> FsResult<String> {
        let st = self.lock();
        let i = st.table.get(ino).ok_or_else(FsError::not_found)?;
        if !i.is_dir() {
            return Err(NsError::NotADirectory.into());
        }
        Ok(i.key.clone())
    }

    /// The key of `ino`, or of its entry `name`, for log lines.
    pub fn key_of(&self, ino: Ino, name: Option<&str>) -> Option<String> {
        let st = self.lock();
        let i = st.table.get(ino)?;
        Some(match name {
            Some(n) => super::names::child_key(&i.key, n),
            None => i.key.clone(),
        })
    }

    /// When the table is over its half of the budget: entries for the kernel to forget
    /// (the oldest files it holds), so their inodes go when it does. The kernel keeps what is
    /// in use; the rest is looked up again if needed.
    pub fn over_budget(&self) -> Vec<(Ino, String)> {
        let cap = (self.cfg.budget / 2 / INODE_BYTES).max(1024) as usize;
        let mut st = self.lock();
        let len = st.table.len();
        if len <= cap {
            return Vec::new();
        }
        st.table.evict(len - cap * 3 / 4)
    }

    /// The most entries one cached listing may have (half the budget is for listings).
    pub fn max_listing_entries(&self) -> usize {
        (self.cfg.budget / 2 / 256).max(1000) as usize
    }

    /// Inodes in the table (for tests and stats).
    pub fn len(&self) -> usize {
        self.lock().table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open file, with its inode.
    pub fn open_files(&self) -> Vec<(Ino, Arc<OpenFile>)> {
        self.lock()
            .table
            .iter()
            .filter_map(|i| i.open.clone().map(|o| (i.ino, o)))
            .collect()
    }

    /// Open files at or below directory `dir`, with their inodes.
    pub fn open_below(&self, dir: Ino) -> Vec<(Ino, Arc<OpenFile>)> {
        let st = self.lock();
        st.table
            .subtree(dir)
            .into_iter()
            .filter_map(|ino| st.table.get(ino))
            .filter_map(|i| i.open.clone().map(|o| (i.ino, o)))
            .collect()
    }

    /// The attributes of `.` and `..` of directory `ino`.
    pub fn dot_entries(&self, ino: Ino) -> FsResult<(Attr, Attr)> {
        let st = self.lock();
        let i = st.table.get(ino).ok_or_else(FsError::not_found)?;
        let parent = st.table.get(i.parent).map(|p| p.stat).unwrap_or(i.stat);
        Ok((Attr::new(ino, i.stat), Attr::new(i.parent, parent)))
    }

    /// Files created here and not uploaded yet in `dir` (and directories holding such files),
    /// by name.
    pub fn local_children(&self, dir: Ino) -> Vec<(String, Ino)> {
        let st = self.lock();
        let mut local: Vec<(String, Ino)> = st
            .table
            .children_of(dir)
            .iter()
            .filter(|c| c.linked && (!c.remote || (c.is_dir() && has_local(&st.table, c.ino))))
            .map(|c| (c.name.clone(), c.ino))
            .collect();
        local.sort();
        local
    }

    /// True when `dir` holds entries S3 does not know of yet (files not uploaded, files with
    /// unsaved changes, directories holding such files).
    pub fn has_pending_entries(&self, dir: Ino) -> bool {
        let st = self.lock();
        st.table.children_of(dir).iter().any(|c| {
            c.linked
                && (!c.remote
                    || c.open.as_ref().is_some_and(|o| o.is_dirty())
                    || (c.is_dir() && has_local(&st.table, c.ino)))
        })
    }

    /// The kernel gives back `n` lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.lock().table.forget(ino, n);
    }

    /// Counts one kernel lookup (entries returned by readdirplus).
    pub fn add_lookup(&self, ino: Ino) {
        if let Some(i) = self.lock().table.get_mut(ino) {
            i.lookups += 1;
        }
    }

    /// The symlink target cached for `ino` at `etag`, if any.
    pub fn target(&self, ino: Ino) -> Option<String> {
        self.lock().table.get(ino).and_then(|i| i.target.clone())
    }

    /// Caches the target of symlink `ino`, read at `etag`.
    pub fn set_target(&self, ino: Ino, etag: Option<&str>, target: &str) {
        if let Some(i) = self.lock().table.get_mut(ino)
            && i.etag.as_deref() == etag
        {
            i.target = Some(target.to_string());
        }
    }

    /// Counts a lookup in `dir` that had to ask S3; true when it is the one that should start
    /// a background listing of the directory (see `dirscan`).
    pub fn note_probe(&self, dir: Ino) -> bool {
        let ttl = self.cfg.ttl;
        if ttl.is_zero() {
            return false;
        }
        let now = self.clock.now();
        let mut st = self.lock();
        let p = st
            .probes
            .get_or_insert_mut(dir, || dirscan::Probes::new(now));
        p.count(now, ttl)
    }

    /// Whether `ino` stands for another spelling of an inode, and which, for the log:
    /// `(directory key, spelling asked, stored name)`.
    pub fn alias_of(&self, ino: Ino) -> Option<(String, String, String)> {
        let st = self.lock();
        let a = st.table.get(ino)?;
        let target = st.table.get(a.alias_of?)?;
        let dir_key = st
            .table
            .get(a.parent)
            .map(|d| d.key.clone())
            .unwrap_or_default();
        Some((dir_key, a.name.clone(), target.name.clone()))
    }

    /// The alias inode for spelling `name` of `target` in `parent`, counting one kernel lookup
    /// on it and on its target.
    pub fn alias(&self, parent: Ino, name: &str, target: Ino) -> Ino {
        let mut st = self.lock();
        let alias = st.table.alias(parent, name, target);
        // The kernel's lookup on the alias also holds the inode it stands for, so the target
        // stays in the table while the kernel may use the alias.
        for ino in [alias, target] {
            if let Some(a) = st.table.get_mut(ino) {
                a.lookups += 1;
            }
        }
        alias
    }

    /// Drops the aliases of `target` (renamed or removed); returns their names, for the kernel.
    pub fn drop_aliases_of(&self, target: Ino) -> Vec<(Ino, String)> {
        if !self.cfg.case_insensitive {
            return Vec::new();
        }
        self.lock().table.drop_aliases_of(target)
    }
}

/// True when the mount knows better than S3 about the entry: a file created or open here,
/// or a directory holding such files.
fn is_local(t: &InodeTable, c: &Inode) -> bool {
    !c.remote || c.open.is_some() || (c.is_dir() && has_local(t, c.ino))
}

/// True when a directory holds files created here and not uploaded yet.
fn has_local(t: &InodeTable, dir: Ino) -> bool {
    t.children_of(dir)
        .iter()
        .any(|c| c.linked && (!c.remote || (c.is_dir() && has_local(t, c.ino))))
}

/// The attributes of `ino` (which must exist), counting a lookup when `count`.
fn attr_of(t: &mut InodeTable, ino: Ino, count: bool) -> Attr {
    let i = t.get_mut(ino).expect("caller checked");
    if count {
        i.lookups += 1;
    }
    let stat = match &i.open {
        Some(of) => of.stat(),
        None => i.stat,
    };
    if count {
        i.forget_asked = false;
    }
    let linked = i.linked;
    let mut a = Attr::new(ino, stat);
    if !linked {
        a.nlink = 0;
    } else if stat.kind == Kind::Dir {
        // `.`, the parent's entry, and each known subdirectory's `..`.
        a.nlink = 2 + t.subdirs(ino);
    }
    a
}

impl State {
    fn negative_hit(&self, parent: Ino, name: &str, now: Instant, ttl: Duration) -> bool {
        self.negatives
            .get(&(parent, name.to_string()))
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) < ttl)
    }

    /// Remembers that S3 said `name` is absent.
    fn negative_insert(&mut self, parent: Ino, name: &str, now: Instant, ttl: Duration) {
        self.negative_insert_stamped(parent, name, now, ttl, 0);
    }

    /// Remembers that `name` is absent, removed here at `stamp` (0 when S3 said so).
    fn negative_insert_stamped(
        &mut self,
        parent: Ino,
        name: &str,
        now: Instant,
        ttl: Duration,
        stamp: u64,
    ) {
        if ttl.is_zero() && stamp == 0 {
            return;
        }
        if self.negatives.len() >= NEGATIVE_CACHE_MAX {
            self.negatives
                .retain(|_, (t, _)| now.saturating_duration_since(*t) < ttl);
            if self.negatives.len() >= NEGATIVE_CACHE_MAX {
                self.negatives.clear();
            }
        }
        self.negatives
            .insert((parent, name.to_string()), (now, stamp));
    }

    fn negative_remove(&mut self, parent: Ino, name: &str) {
        self.negatives.remove(&(parent, name.to_string()));
    }
}
