//! The inode table of the [`super::Namespace`]: numbers the kernel holds, the names they are
//! linked under, and what the mount last learned about each from S3. Only the namespace
//! touches it; everything else asks the namespace.
//!
//! Inode numbers are never reused, so a stale number held by the kernel can never reach
//! another file. An inode lives while the kernel holds lookups on it or a handle is open;
//! after that it is only a cache entry and is dropped. A name maps to at most one inode; when
//! S3 shows a different kind under a name (a file replaced by a directory), the old inode is
//! unlinked and a new one takes the name.
//!
//! The table sits behind the namespace's one `std::sync::Mutex`, held only for map updates,
//! never across an `.await`. Per-file state that needs I/O lives in [`crate::fs::openfile`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::fs::attr::{Kind, Stat};
use crate::fs::openfile::OpenFile;
use crate::store::UserMeta;

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// One file, directory or symlink.
#[derive(Clone)]
pub struct Inode {
    pub ino: Ino,
    pub parent: Ino,
    pub name: String,
    /// Object key (files, symlinks) or prefix ending in `/` (directories; the root's may be "").
    pub key: String,
    pub stat: Stat,
    /// ETag of the object (or directory marker) last seen.
    pub etag: Option<String>,
    /// S3's Last-Modified of the version `etag` names, when S3 told it (a HEAD or a listing);
    /// `None` after a change made here. A revalidation by listing needs it (see `revalidate`).
    pub modified: Option<std::time::SystemTime>,
    /// Stamp of the last change made through the mount to this entry (its content, attributes
    /// or key); an answer from S3 asked for before it is older than what the mount knows.
    pub changed: u64,
    /// Directories: stamp of the last name added or removed here through the mount.
    pub names_changed: u64,
    /// User metadata from the last HEAD; `None` when not read yet.
    pub user_meta: Option<UserMeta>,
    /// When S3 last confirmed this entry; `None` forces a check.
    pub validated: Option<Instant>,
    /// Directories: a marker object `key` exists.
    pub has_marker: bool,
    /// False for a file created here and not uploaded yet.
    pub remote: bool,
    /// Still reachable by name (false after unlink, rmdir, or being replaced).
    pub linked: bool,
    /// Lookups the kernel holds (FUSE `nlookup`).
    pub lookups: u64,
    /// Open handles on this inode.
    pub handles: u32,
    /// Shared state of an open file (spool, upload) while any handle is open.
    pub open: Option<Arc<OpenFile>>,
    /// Symlink target, once read.
    pub target: Option<String>,
    /// Case-insensitive mode: this inode is another spelling of that one (see `case`).
    pub alias_of: Option<Ino>,
    /// The ETag whose bytes the kernel may hold in its page cache for this inode.
    pub page_cache_etag: Option<String>,
    /// The kernel was asked to forget this entry (the table was over its memory budget).
    pub forget_asked: bool,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.stat.kind == Kind::Dir
    }

    /// True when S3 was checked less than `ttl` before `now`.
    pub fn fresh(&self, now: Instant, ttl: std::time::Duration) -> bool {
        self.validated
            .is_some_and(|t| now.saturating_duration_since(t) < ttl)
    }
}

/// All inodes and the name index.
pub struct InodeTable {
    inodes: HashMap<Ino, Inode>,
    /// parent -> name -> child.
    children: HashMap<Ino, HashMap<String, Ino>>,
    /// (parent, spelling) -> alias inode, in case-insensitive mode.
    aliases: HashMap<(Ino, String), Ino>,
    next: Ino,
}

impl InodeTable {
    pub fn new(root_key: String, root_stat: Stat) -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                ino: ROOT,
                parent: ROOT,
                name: String::new(),
                key: root_key,
                stat: root_stat,
                etag: None,
                modified: None,
                changed: 0,
                names_changed: 0,
                user_meta: None,
                validated: None,
                has_marker: false,
                remote: true,
                linked: true,
                lookups: 1,
                handles: 0,
                open: None,
                target: None,
                alias_of: None,
                page_cache_etag: None,
                forget_asked: false,
            },
        );
        InodeTable {
            inodes,
            children: HashMap::new(),
            aliases: HashMap::new(),
            next: ROOT + 1,
        }
    }

    pub fn get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }

    /// The inode linked as `name` in `parent`.
    pub fn child(&self, parent: Ino, name: &str) -> Option<&Inode> {
        self.child_ino(parent, name)
            .and_then(|i| self.inodes.get(&i))
    }

    fn child_ino(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.children
            .get(&parent)
            .and_then(|m| m.get(name))
            .copied()
    }

    fn remove_name(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        let m = self.children.get_mut(&parent)?;
        let ino = m.remove(name);
        if m.is_empty() {
            self.children.remove(&parent);
        }
        ino
    }

    fn insert_name(&mut self, parent: Ino, name: &str, ino: Ino) {
        self.children
            .entry(parent)
            .or_default()
            .insert(name.to_string(), ino);
    }

    /// How many of `parent`'s children known here are directories.
    pub fn subdirs(&self, parent: Ino) -> u32 {
        self.children.get(&parent).map_or(0, |m| {
            m.values()
                .filter(|i| self.inodes.get(i).is_some_and(Inode::is_dir))
                .count() as u32
        })
    }

    /// Children of `parent` currently linked in the table.
    pub fn children_of(&self, parent: Ino) -> Vec<&Inode> {
        self.children
            .get(&parent)
            .map(|m| m.values().filter_map(|i| self.inodes.get(i)).collect())
            .unwrap_or_default()
    }

    /// Links a new inode as `name` in `parent`, unlinking whatever had the name.
    pub fn link_new(&mut self, parent: Ino, name: &str, key: String, stat: Stat) -> &mut Inode {
        self.unlink(parent, name);
        let ino = self.next;
        self.next += 1;
        self.insert_name(parent, name, ino);
        self.inodes.insert(
            ino,
            Inode {
                ino,
                parent,
                name: name.to_string(),
                key,
                stat,
                etag: None,
                modified: None,
                changed: 0,
                names_changed: 0,
                user_meta: None,
                validated: None,
                has_marker: false,
                remote: true,
                linked: true,
                lookups: 0,
                handles: 0,
                open: None,
                target: None,
                alias_of: None,
                page_cache_etag: None,
                forget_asked: false,
            },
        );
        self.inodes.get_mut(&ino).expect("just inserted")
    }

    /// The inode an alias stands for (itself when it is not an alias).
    pub fn canon(&self, ino: Ino) -> Ino {
        self.inodes
            .get(&ino)
            .and_then(|i| i.alias_of)
            .unwrap_or(ino)
    }

    /// The alias inode for spelling `name` of `target` in `parent`, created if needed.
    pub fn alias(&mut self, parent: Ino, name: &str, target: Ino) -> Ino {
        let key = (parent, name.to_string());
        if let Some(&a) = self.aliases.get(&key)
            && self
                .inodes
                .get(&a)
                .is_some_and(|i| i.alias_of == Some(target))
        {
            return a;
        }
        let Some(t) = self.inodes.get(&target).cloned() else {
            return target;
        };
        let ino = self.next;
        self.next += 1;
        let mut alias = t;
        alias.ino = ino;
        alias.parent = parent;
        alias.name = name.to_string();
        alias.lookups = 0;
        alias.handles = 0;
        alias.open = None;
        alias.alias_of = Some(target);
        self.inodes.insert(ino, alias);
        self.aliases.insert(key, ino);
        ino
    }

    /// Drops the aliases of `target` (it was renamed or removed); returns their names.
    pub fn drop_aliases_of(&mut self, target: Ino) -> Vec<(Ino, String)> {
        let gone: Vec<((Ino, String), Ino)> = self
            .aliases
            .iter()
            .filter(|(_, a)| {
                self.inodes
                    .get(a)
                    .is_some_and(|i| i.alias_of == Some(target))
            })
            .map(|(k, a)| (k.clone(), *a))
            .collect();
        for (k, a) in &gone {
            self.aliases.remove(k);
            if let Some(i) = self.inodes.get_mut(a) {
                i.linked = false;
            }
            self.maybe_drop(*a);
        }
        gone.into_iter().map(|(k, _)| k).collect()
    }

    /// Removes the name; the inode stays while the kernel or a handle holds it.
    pub fn unlink(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        let ino = self.remove_name(parent, name)?;
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.linked = false;
        }
        self.maybe_drop(ino);
        Some(ino)
    }

    /// Moves inode `ino` to `new_name` in `new_parent`, replacing what was there; the keys of
    /// everything below a moved directory follow, open files' included, stamped `stamp`.
    pub fn relink(
        &mut self,
        ino: Ino,
        new_parent: Ino,
        new_name: &str,
        new_key: String,
        stamp: u64,
    ) {
        let Some(old) = self.inodes.get(&ino) else {
            return;
        };
        let (op, on) = (old.parent, old.name.clone());
        if self.child_ino(op, &on) == Some(ino) {
            self.remove_name(op, &on);
        }
        if self.child_ino(new_parent, new_name) != Some(ino) {
            self.unlink(new_parent, new_name);
        }
        self.insert_name(new_parent, new_name, ino);
        let old_key = {
            let i = self.inodes.get_mut(&ino).expect("checked above");
            i.parent = new_parent;
            i.name = new_name.to_string();
            i.linked = true;
            i.changed = stamp;
            std::mem::replace(&mut i.key, new_key.clone())
        };
        if self.inodes[&ino].is_dir() {
            self.rekey_descendants(&old_key, &new_key, stamp);
        }
    }

    /// After a directory moved from prefix `old` to `new`, fixes the keys of cached descendants.
    fn rekey_descendants(&mut self, old: &str, new: &str, stamp: u64) {
        for i in self.inodes.values_mut() {
            if i.ino != ROOT && i.key.starts_with(old) && i.key.len() > old.len() {
                i.key = format!("{new}{}", &i.key[old.len()..]);
                i.changed = stamp;
                if let Some(of) = &i.open {
                    of.rekey(&i.key);
                }
            }
        }
    }

    /// Inodes at or below directory `dir` (the directory included), for a rename's bookkeeping.
    pub fn subtree(&self, dir: Ino) -> Vec<Ino> {
        let mut out = vec![dir];
        let mut i = 0;
        while i < out.len() {
            if let Some(m) = self.children.get(&out[i]) {
                out.extend(m.values().copied());
            }
            i += 1;
        }
        out
    }

    /// The kernel gives back `n` lookups.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        let mut target = None;
        if let Some(i) = self.inodes.get_mut(&ino) {
            let n = n.min(i.lookups);
            i.lookups -= n;
            target = i.alias_of.map(|t| (t, n));
        }
        self.maybe_drop(ino);
        // An alias holds its target by as many lookups as the kernel holds on the alias.
        if let Some((t, n)) = target {
            self.forget(t, n);
        }
    }

    /// Drops the inode when nobody holds it and it is not a local-only file.
    pub fn maybe_drop(&mut self, ino: Ino) {
        let Some(i) = self.inodes.get(&ino) else {
            return;
        };
        if ino == ROOT || i.lookups > 0 || i.handles > 0 || i.open.is_some() {
            return;
        }
        if i.alias_of.is_some() {
            let key = (i.parent, i.name.clone());
            if self.aliases.get(&key) == Some(&ino) {
                self.aliases.remove(&key);
            }
            self.inodes.remove(&ino);
            return;
        }
        if i.linked && !i.remote {
            return; // a created file not uploaded yet: its name must stay
        }
        let (parent, name, linked) = (i.parent, i.name.clone(), i.linked);
        if linked && self.child_ino(parent, &name) == Some(ino) {
            self.remove_name(parent, &name);
        }
        self.inodes.remove(&ino);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Inode> {
        self.inodes.values()
    }

    /// Up to `n` of the oldest files the kernel holds that could go (not open, in S3, not
    /// asked already): marked as asked, their cached metadata dropped. Their `(parent, name)`
    /// are returned for the kernel to forget.
    pub fn evict(&mut self, n: usize) -> Vec<(Ino, String)> {
        let mut old: Vec<Ino> = self
            .inodes
            .values()
            .filter(|i| {
                i.ino != ROOT
                    && i.lookups > 0
                    && i.handles == 0
                    && i.open.is_none()
                    && i.remote
                    && i.linked
                    && i.alias_of.is_none()
                    && !i.is_dir()
                    && !i.forget_asked
            })
            .map(|i| i.ino)
            .collect();
        if old.len() > n {
            old.select_nth_unstable(n);
            old.truncate(n);
        }
        old.into_iter()
            .filter_map(|ino| {
                let i = self.inodes.get_mut(&ino)?;
                i.forget_asked = true;
                i.user_meta = None;
                i.target = None;
                Some((i.parent, i.name.clone()))
            })
            .collect()
    }
}
