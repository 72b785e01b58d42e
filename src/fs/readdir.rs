//! Directory listing: S3 LIST pages turned into a stream of directory entries.
//!
//! The traps, in the order they bite:
//!
//! 1. Pages. A directory of a million keys is a thousand LISTs; entries are produced page by
//!    page as the kernel asks, and an open handle keeps only what the kernel has not consumed
//!    yet (it may ask again from any offset it was given, but never before one it acknowledged,
//!    except offset 0, which restarts the listing, as `rewinddir` does).
//! 2. Shadowing. A file `a` and a directory `a/` can both exist; the directory wins. They do
//!    not arrive together: `a` sorts before `a-x`, `a.txt`, ... which sort before `a/`, and a
//!    page can end in between. So files are held back until the listing has passed the point
//!    where their directory would sort (`a/`), then emitted or dropped.
//! 3. Unrepresentable keys (`a//b`, `..`, over 255 bytes, a directory marker with content) are
//!    skipped and reported once each, never a failed listing.
//! 4. The directory's own marker (`dir/` inside `dir/`) is not an entry.
//! 5. Files created here and not uploaded yet are not in S3; they are appended at the end.
//! 6. In case-insensitive mode, names equal but for case would show twice; only the winner
//!    (see `listing::winner`) is shown, so the whole directory is listed before the first
//!    entry is returned.
//!
//! Paging and the rules 2 to 4 live in `listing`; this file keeps the per-handle state.
//!
//! `readdirplus` needs real attributes for every entry, including modes stored in metadata
//! that LIST does not return; those entries are HEADed concurrently, batch by batch.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use super::error::{FsError, FsResult, HandleError};
use super::headahead::HeadAhead;
use super::inode::Ino;
use super::listing::{ListState, Listed};
use super::namespace::Asked;
use super::{Attr, Fs};
use crate::store::{ObjectMeta, ObjectStore};

/// With `readdirplus`, files whose HEADs are started ahead of the entries returned.
const HEAD_AHEAD: u64 = 1000;
/// With `readdirplus`, entries listed ahead of the ones returned (the next page is asked for
/// when fewer remain).
const LIST_AHEAD: u64 = 300;

/// One entry as returned to the adapter. `offset` is the cookie of the next entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub offset: u64,
    pub attr: Attr,
}

/// The state of one open directory.
pub struct DirHandle {
    ino: Ino,
    /// Entries not yet acknowledged; `entries[0]` has index `base` (0 and 1 are `.`, `..`).
    entries: VecDeque<Listed>,
    base: u64,
    started: bool,
    list: ListState,
    local_added: bool,
    /// What the S3 listing returned so far, to keep as a whole listing when it ends.
    collected: Option<Vec<Listed>>,
    /// The namespace's stamp when the listing started (see `namespace`, invariant 3).
    asked: Option<Asked>,
    /// HEADs of the files ahead of what `readdirplus` returned (see `headahead`).
    ahead: Arc<HeadAhead>,
    /// The index up to which HEADs ahead were started.
    ahead_next: u64,
}

impl DirHandle {
    pub fn new(ino: Ino, prefix: String) -> Self {
        DirHandle {
            ino,
            entries: VecDeque::new(),
            base: 2,
            started: false,
            list: ListState::new(prefix, HashSet::new()),
            local_added: false,
            collected: Some(Vec::new()),
            asked: None,
            ahead: Arc::default(),
            ahead_next: 0,
        }
    }

    fn restart(&mut self) {
        *self = DirHandle::new(self.ino, std::mem::take(&mut self.list.prefix));
    }

    fn available_end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Drops what the kernel acknowledged (everything before `idx`) and returns the entries
    /// from `idx` up to `want_end`. An offset before what was dropped is stale.
    fn window(&mut self, idx: u64, want_end: u64) -> Result<Vec<Listed>, HandleError> {
        while self.base < idx && !self.entries.is_empty() {
            self.entries.pop_front();
            self.base += 1;
        }
        if idx < self.base {
            return Err(HandleError::StaleOffset);
        }
        let from = (idx - self.base) as usize;
        Ok(self
            .entries
            .iter()
            .skip(from)
            .take(want_end.saturating_sub(idx) as usize)
            .cloned()
            .collect())
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Opens a directory for listing.
    pub fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let ino = self.ns.canon(ino);
        let prefix = self.ns.dir_key(ino)?;
        let dh = DirHandle::new(ino, prefix);
        Ok(self
            .handle_table()
            .insert_dir(Arc::new(tokio::sync::Mutex::new(dh))))
    }

    pub fn releasedir(&self, fh: u64) {
        self.handle_table().remove(fh);
    }

    /// `readdirplus`: up to `max` entries from `offset`, with exact attributes, handed to
    /// `take` until it answers that the reply is full. The kernel counts a lookup on every
    /// entry it took but `.` and `..`, and so does this.
    pub async fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        max: usize,
        mut take: impl FnMut(&DirEntry) -> bool,
    ) -> FsResult<()> {
        for e in self.readdir(fh, offset, max, true).await? {
            if !take(&e) {
                break;
            }
            if e.name != "." && e.name != ".." {
                self.ns.add_lookup(e.attr.ino);
            }
        }
        Ok(())
    }

    /// Up to `max` entries starting at `offset`. With `plus`, every entry (but `.` and `..`)
    /// has exact attributes and an inode the caller must count a lookup on if it uses it.
    pub async fn readdir(
        &self,
        fh: u64,
        offset: u64,
        max: usize,
        plus: bool,
    ) -> FsResult<Vec<DirEntry>> {
        let dh = self.handle_table().dir(fh).ok_or(HandleError::BadDir)?;
        let mut h = dh.lock().await;
        if offset == 0 && h.started {
            h.restart();
        }
        if !h.started {
            self.start_listing(&mut h).await?;
        }
        let mut out = if offset < 2 {
            self.dot_dirents(h.ino, offset)?
        } else {
            Vec::new()
        };
        let idx = offset.max(2);
        let want_end = idx.saturating_add(max.saturating_sub(out.len()) as u64);
        let ahead = plus && !self.config.fast_listing;
        // With HEADs ahead, the next page is listed before the kernel reaches it.
        let fill_to = if ahead {
            want_end.max(idx + LIST_AHEAD)
        } else {
            want_end
        };
        self.fill_until(&mut h, fill_to).await?;
        if ahead {
            self.head_ahead(&mut h, idx)?;
        } else if h.ahead_next > 0 {
            // The kernel reads names only now (`find`, `ls`): what was fetched ahead goes.
            h.ahead = Arc::default();
        }
        let listed = h.window(idx, want_end)?;
        let (dir_ino, ahead) = (h.ino, h.ahead.clone());
        drop(h);
        out.extend(
            self.listed_dirents(dir_ino, &listed, idx, plus, &ahead)
                .await?,
        );
        Ok(out)
    }

    /// Decides where a fresh (or restarted) handle's entries come from: the whole directory
    /// at once (case-insensitive mode), a listing kept by the namespace, or LIST pages.
    async fn start_listing(&self, h: &mut DirHandle) -> FsResult<()> {
        h.started = true;
        let all = if self.config.case_insensitive {
            // Winners among case variants need the whole directory at once.
            self.ci_entries(h.ino).await?
        } else {
            None
        };
        if let Some(all) = all {
            h.entries.extend(all);
            h.list.done = true;
            h.local_added = true;
        } else if let Some(cached) = self.ns.listing_for_readdir(h.ino) {
            // Listed recently enough (see `namespace`): no LIST needed.
            let local = self.local_names(h.ino);
            h.entries
                .extend(cached.into_iter().filter(|l| !local.contains(l.name())));
            h.list.done = true;
            h.collected = None;
        } else {
            h.asked = Some(self.ns.ask(h.ino)?);
            h.list.local = self.local_names(h.ino);
        }
        Ok(())
    }

    /// Names of the directory's local children (created here, not uploaded yet).
    fn local_names(&self, dir: Ino) -> HashSet<String> {
        self.ns
            .local_children(dir)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// `.` (at offset 0 only) and `..`, for a request starting before the first listed entry.
    fn dot_dirents(&self, ino: Ino, offset: u64) -> FsResult<Vec<DirEntry>> {
        let (dot, dotdot) = self.dot_entries(ino)?;
        let mut out = Vec::with_capacity(2);
        if offset == 0 {
            out.push(DirEntry {
                name: ".".into(),
                offset: 1,
                attr: dot,
            });
        }
        out.push(DirEntry {
            name: "..".into(),
            offset: 2,
            attr: dotdot,
        });
        Ok(out)
    }

    /// Lists until the handle holds entries up to index `want_end` or the directory is
    /// exhausted; local children come last (trap 5).
    async fn fill_until(&self, h: &mut DirHandle, want_end: u64) -> FsResult<()> {
        while h.available_end() < want_end && !(h.list.done && h.local_added) {
            if !h.list.done {
                self.next_page(h).await?;
            } else {
                for (name, ino) in self.ns.local_children(h.ino) {
                    h.entries.push_back(Listed::Local(name, ino));
                }
                h.local_added = true;
            }
        }
        Ok(())
    }

    /// One LIST page into the handle. What S3 returned is also collected, and a listing that
    /// ends whole (no local names hid any of it) is handed to the namespace to keep.
    async fn next_page(&self, h: &mut DirHandle) -> FsResult<()> {
        let DirHandle {
            list,
            entries,
            collected,
            ino,
            asked,
            ..
        } = h;
        let before = entries.len();
        self.list_page(list, entries).await?;
        if let Some(c) = collected {
            c.extend(entries.iter().skip(before).cloned());
            if c.len() > self.ns.max_listing_entries() {
                *collected = None;
            } else if list.done
                && list.local.is_empty()
                && let Some(a) = asked
            {
                self.ns.keep_listing(*ino, a, std::mem::take(c));
            }
        }
        Ok(())
    }

    /// Starts the HEADs of the files from index `idx` on (at most [`HEAD_AHEAD`] of them) whose
    /// attributes are not known and whose HEADs were not started yet.
    fn head_ahead(&self, h: &mut DirHandle, idx: u64) -> FsResult<()> {
        let from = h.ahead_next.max(idx).max(h.base);
        let to = h.available_end().min(idx + HEAD_AHEAD);
        if to <= from {
            return Ok(());
        }
        let listed: Vec<Listed> = h
            .entries
            .range((from - h.base) as usize..(to - h.base) as usize)
            .cloned()
            .collect();
        let keys = self.ns.entries_needing_head(h.ino, &listed);
        let asked = self.ns.ask(h.ino)?;
        h.ahead.start(
            self.store.clone(),
            keys.into_iter().map(|(_, k)| k).collect(),
            asked.stamp,
        );
        h.ahead_next = to;
        Ok(())
    }

    /// Listed entries with their attributes, numbered from index `idx`.
    async fn listed_dirents(
        &self,
        dir: Ino,
        listed: &[Listed],
        idx: u64,
        plus: bool,
        ahead: &HeadAhead,
    ) -> FsResult<Vec<DirEntry>> {
        let attrs = self.entry_attrs(dir, listed, plus, ahead).await?;
        if plus {
            self.trim_names();
        }
        Ok(listed
            .iter()
            .zip(attrs)
            .enumerate()
            .map(|(n, (l, attr))| DirEntry {
                name: l.name().to_string(),
                offset: idx + n as u64 + 1,
                attr,
            })
            .collect())
    }

    fn dot_entries(&self, ino: Ino) -> FsResult<(Attr, Attr)> {
        self.ns.dot_entries(ino)
    }

    /// Attributes for listed entries. Without `plus`, existing inodes keep their numbers and
    /// other entries get a stable synthetic number; with `plus`, every entry gets an inode and
    /// exact attributes (a HEAD for files whose metadata is not known at this ETag).
    async fn entry_attrs(
        &self,
        dir: Ino,
        listed: &[Listed],
        plus: bool,
        ahead: &HeadAhead,
    ) -> FsResult<Vec<Attr>> {
        let mut asked = self.ns.ask(dir)?;
        // Answers fetched ahead are as old as the oldest question that started them.
        if let Some(stamp) = ahead.oldest_stamp() {
            asked.stamp = asked.stamp.min(stamp);
        }
        let need_head = if plus && !self.config.fast_listing {
            self.ns.entries_needing_head(dir, listed)
        } else {
            Vec::new()
        };
        let heads: Vec<(usize, Result<ObjectMeta, crate::store::StoreError>)> =
            stream::iter(need_head)
                .map(|(n, key)| async move {
                    let answer = match ahead.take(&key).await {
                        Some(Ok(m)) => Ok(m),
                        Some(Err(crate::store::StoreError::NotFound)) => {
                            Err(crate::store::StoreError::NotFound)
                        }
                        // Not fetched ahead, or failed then: asked now.
                        _ => self.store.head(&key).await,
                    };
                    (n, answer)
                })
                .buffer_unordered(32)
                .collect()
                .await;
        let mut headed: BTreeMap<usize, ObjectMeta> = BTreeMap::new();
        for (n, r) in heads {
            match r {
                Ok(m) => {
                    headed.insert(n, m);
                }
                Err(crate::store::StoreError::NotFound) => {} // deleted meanwhile: listing data
                Err(e) => return Err(FsError::from_store(e, listed[n].name())),
            }
        }
        self.ns.entry_attrs(dir, listed, &headed, &asked, plus)
    }
}
