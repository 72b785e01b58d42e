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
//!
//! `readdirplus` needs real attributes for every entry, including modes stored in metadata
//! that LIST does not return; those entries are HEADed concurrently, batch by batch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::attr::{Kind, Stat, kind_from_meta};
use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::names::{self, Unrepresentable};
use super::{Attr, Fs};
use crate::store::{ListRequest, ObjectMeta, ObjectStore};

/// One entry as returned to the adapter. `offset` is the cookie of the next entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub offset: u64,
    pub attr: Attr,
}

/// An entry produced by the listing, before it has an inode.
#[derive(Clone, Debug)]
enum Listed {
    Dir(String),
    File(String, ObjectMeta),
    /// A child known only here (created, not uploaded yet).
    Local(String, Ino),
}

impl Listed {
    fn name(&self) -> &str {
        match self {
            Listed::Dir(n) | Listed::File(n, _) | Listed::Local(n, _) => n,
        }
    }
}

/// The state of one open directory.
pub struct DirHandle {
    ino: Ino,
    prefix: String,
    /// Entries not yet acknowledged; `entries[0]` has index `base` (0 and 1 are `.`, `..`).
    entries: VecDeque<Listed>,
    base: u64,
    token: Option<String>,
    started: bool,
    done: bool,
    /// Files waiting to learn whether a directory of the same name shadows them.
    pending: BTreeMap<String, ObjectMeta>,
    /// Names of files created here and not uploaded yet (and directories holding such files):
    /// they win over listed names.
    local: std::collections::HashSet<String>,
}

impl DirHandle {
    pub fn new(ino: Ino, prefix: String) -> Self {
        DirHandle {
            ino,
            prefix,
            entries: VecDeque::new(),
            base: 2,
            token: None,
            started: false,
            done: false,
            pending: BTreeMap::new(),
            local: std::collections::HashSet::new(),
        }
    }

    fn restart(&mut self) {
        *self = DirHandle::new(self.ino, std::mem::take(&mut self.prefix));
    }

    fn available_end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Emits held-back files that sort before `key` once their directory would have.
    fn release_pending_before(&mut self, key: &str) {
        let ready: Vec<String> = self
            .pending
            .keys()
            .filter(|name| format!("{}{}/", self.prefix, name).as_str() < key)
            .cloned()
            .collect();
        for name in ready {
            if let Some(meta) = self.pending.remove(&name) {
                self.entries.push_back(Listed::File(name, meta));
            }
        }
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Opens a directory for listing.
    pub fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let prefix = {
            let t = self.table();
            let i = t.get(ino).ok_or_else(FsError::not_found)?;
            if !i.is_dir() {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"));
            }
            i.key.clone()
        };
        let dh = DirHandle::new(ino, prefix);
        Ok(self
            .handle_table()
            .insert_dir(Arc::new(tokio::sync::Mutex::new(dh))))
    }

    pub fn releasedir(&self, fh: u64) {
        self.handle_table().remove(fh);
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
        let dh = self
            .handle_table()
            .dir(fh)
            .ok_or_else(|| FsError::new(libc::EBADF, "bad directory handle"))?;
        let mut h = dh.lock().await;
        if offset == 0 && h.started {
            h.restart();
        }
        h.started = true;
        let mut out = Vec::new();
        let mut idx = offset;
        if idx < 2 {
            let (dot, dotdot) = self.dot_entries(h.ino)?;
            if idx == 0 {
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
            idx = 2;
        }
        let want_end = idx.saturating_add(max.saturating_sub(out.len()) as u64);
        while h.available_end() < want_end && !h.done {
            self.next_page(&mut h).await?;
        }
        // Everything before `offset` was acknowledged by the kernel.
        while h.base < idx && !h.entries.is_empty() {
            h.entries.pop_front();
            h.base += 1;
        }
        if idx < h.base {
            return Err(FsError::new(
                libc::EINVAL,
                "directory offset no longer valid",
            ));
        }
        let from = (idx - h.base) as usize;
        let listed: Vec<Listed> = h
            .entries
            .iter()
            .skip(from)
            .take(want_end.saturating_sub(idx) as usize)
            .cloned()
            .collect();
        let dir_ino = h.ino;
        drop(h);
        let attrs = self.entry_attrs(dir_ino, &listed, plus).await?;
        for (n, (l, attr)) in listed.iter().zip(attrs).enumerate() {
            out.push(DirEntry {
                name: l.name().to_string(),
                offset: idx + n as u64 + 1,
                attr,
            });
        }
        Ok(out)
    }

    fn dot_entries(&self, ino: Ino) -> FsResult<(Attr, Attr)> {
        let t = self.table();
        let i = t.get(ino).ok_or_else(FsError::not_found)?;
        let parent = t.get(i.parent).map(|p| p.stat).unwrap_or(i.stat);
        Ok((Attr::new(ino, i.stat), Attr::new(i.parent, parent)))
    }

    fn local_children(&self, dir: Ino) -> Vec<(String, Ino)> {
        let t = self.table();
        let mut local: Vec<(String, Ino)> = t
            .children_of(dir)
            .iter()
            .filter(|c| {
                c.linked && (!c.remote || (c.is_dir() && self.has_local_children(&t, c.ino)))
            })
            .map(|c| (c.name.clone(), c.ino))
            .collect();
        local.sort();
        local
    }

    /// Fetches one LIST page into the handle.
    async fn next_page(&self, h: &mut DirHandle) -> FsResult<()> {
        if h.token.is_none() && h.entries.is_empty() && h.base == 2 {
            h.local = self
                .local_children(h.ino)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        }
        let mut req = ListRequest::dir(&h.prefix);
        req.token = h.token.clone();
        let page = self
            .store
            .list(&req)
            .await
            .map_err(|e| FsError::from_store(e, &h.prefix))?;
        // Objects and prefixes share one key order; merge them.
        let mut items: Vec<(String, Option<ObjectMeta>)> = page
            .objects
            .into_iter()
            .map(|o| (o.key.clone(), Some(o)))
            .chain(page.prefixes.into_iter().map(|p| (p, None)))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, obj) in items {
            h.release_pending_before(&key);
            let rest = &key[h.prefix.len().min(key.len())..];
            match obj {
                Some(o) => {
                    if rest.is_empty() {
                        if o.size > 0 {
                            self.skip_log
                                .skipped(&key, Unrepresentable::ContentInDirectoryMarker);
                        }
                        continue;
                    }
                    if let Err(why) = names::check_segment(rest) {
                        self.skip_log.skipped(&key, why);
                        continue;
                    }
                    if h.local.contains(rest) {
                        continue;
                    }
                    h.pending.insert(rest.to_string(), o);
                }
                None => {
                    let name = rest.strip_suffix('/').unwrap_or(rest);
                    if let Err(why) = names::check_segment(name) {
                        self.skip_log.skipped(&key, why);
                        continue;
                    }
                    if let Some(file) = h.pending.remove(name) {
                        log::debug!("directory {key:?} shadows the object {:?}", file.key);
                    }
                    if h.local.contains(name) {
                        continue;
                    }
                    h.entries.push_back(Listed::Dir(name.to_string()));
                }
            }
        }
        h.token = page.next_token;
        if h.token.is_none() {
            let rest: Vec<(String, ObjectMeta)> =
                std::mem::take(&mut h.pending).into_iter().collect();
            for (name, meta) in rest {
                h.entries.push_back(Listed::File(name, meta));
            }
            let local = self.local_children(h.ino);
            for (name, ino) in local {
                h.entries.push_back(Listed::Local(name, ino));
            }
            h.done = true;
        }
        Ok(())
    }

    /// Attributes for listed entries. Without `plus`, existing inodes keep their numbers and
    /// other entries get a stable synthetic number; with `plus`, every entry gets an inode and
    /// exact attributes (a HEAD for files whose metadata is not known at this ETag).
    async fn entry_attrs(&self, dir: Ino, listed: &[Listed], plus: bool) -> FsResult<Vec<Attr>> {
        let d = self.config.defaults;
        if !plus {
            let t = self.table();
            return Ok(listed
                .iter()
                .map(|l| {
                    let existing = t.child(dir, l.name());
                    let kind = match l {
                        Listed::Dir(_) => Kind::Dir,
                        _ => Kind::File,
                    };
                    match existing {
                        Some(c) if c.stat.kind == kind || matches!(l, Listed::Local(..)) => {
                            Attr::new(c.ino, c.stat)
                        }
                        _ => Attr::new(
                            synthetic_ino(dir, l.name()),
                            Stat::new(kind, &d, self.started()),
                        ),
                    }
                })
                .collect());
        }
        // Which files need a HEAD for their metadata?
        let need_head: Vec<(usize, String)> = {
            let t = self.table();
            listed
                .iter()
                .enumerate()
                .filter_map(|(n, l)| match l {
                    Listed::File(name, meta) => {
                        let known = t.child(dir, name).is_some_and(|c| {
                            c.open.is_some()
                                || (c.user_meta.is_some()
                                    && c.etag.as_deref() == Some(meta.etag.as_str()))
                        });
                        (!known).then(|| (n, meta.key.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let heads: Vec<(usize, Result<ObjectMeta, crate::store::StoreError>)> =
            stream::iter(need_head)
                .map(|(n, key)| async move { (n, self.store.head(&key).await) })
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
        let mut t = self.table();
        if t.get(dir).is_none() {
            return Err(FsError::not_found());
        }
        let dir_key = t.get(dir).map(|i| i.key.clone()).unwrap_or_default();
        let now = Instant::now();
        let mut out = Vec::with_capacity(listed.len());
        for (n, l) in listed.iter().enumerate() {
            let attr = match l {
                Listed::Local(_, ino) if t.get(*ino).is_some() => self.attr_of(&mut t, *ino, false),
                Listed::Local(name, _) | Listed::Dir(name) => {
                    let existing = t
                        .child(dir, name)
                        .filter(|c| c.is_dir() || !c.remote)
                        .map(|c| c.ino);
                    let ino = match existing {
                        Some(ino) => ino,
                        None => {
                            let key = names::child_prefix(&dir_key, name);
                            let i = t.link_new(
                                dir,
                                name,
                                key,
                                Stat::new(Kind::Dir, &d, self.started()),
                            );
                            i.validated = Some(now);
                            i.ino
                        }
                    };
                    self.attr_of(&mut t, ino, false)
                }
                Listed::File(name, listed_meta) => {
                    let known = t
                        .child(dir, name)
                        .filter(|c| {
                            c.open.is_some()
                                || !c.remote
                                || (c.user_meta.is_some()
                                    && c.etag.as_deref() == Some(listed_meta.etag.as_str()))
                        })
                        .map(|c| c.ino);
                    if let (Some(ino), false) = (known, headed.contains_key(&n)) {
                        if let Some(i) = t.get_mut(ino) {
                            i.validated = Some(now);
                        }
                        out.push(self.attr_of(&mut t, ino, false));
                        continue;
                    }
                    let m = headed.get(&n).unwrap_or(listed_meta);
                    let kind = m
                        .user_meta
                        .as_ref()
                        .and_then(kind_from_meta)
                        .filter(|k| *k == Kind::Symlink)
                        .unwrap_or(Kind::File);
                    let reuse = t
                        .child(dir, name)
                        .filter(|c| c.stat.kind == kind || c.open.is_some() || !c.remote)
                        .map(|c| c.ino);
                    let ino = match reuse {
                        Some(ino) => ino,
                        None => {
                            t.link_new(
                                dir,
                                name,
                                m.key.clone(),
                                Stat::new(kind, &d, m.last_modified),
                            )
                            .ino
                        }
                    };
                    let i = t.get_mut(ino).expect("just linked");
                    if i.open.is_none() && i.remote {
                        if m.user_meta.is_some() {
                            i.stat = Stat::from_object(
                                kind,
                                m.size,
                                m.last_modified,
                                m.user_meta.as_ref(),
                                &d,
                            );
                            i.user_meta = m.user_meta.clone();
                        } else if i.etag.as_deref() != Some(m.etag.as_str()) {
                            i.stat = Stat::from_object(kind, m.size, m.last_modified, None, &d);
                        }
                        if i.etag.as_deref() != Some(m.etag.as_str()) {
                            i.target = None;
                        }
                        i.etag = Some(m.etag.clone());
                        i.validated = Some(now);
                    }
                    self.attr_of(&mut t, ino, false)
                }
            };
            out.push(attr);
        }
        Ok(out)
    }
}

/// A stable inode number for an entry listed without an inode (plain readdir). The top bit
/// keeps it apart from real inode numbers, which count up from 1.
fn synthetic_ino(dir: Ino, name: &str) -> Ino {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    name.hash(&mut h);
    h.finish() | (1 << 63)
}
