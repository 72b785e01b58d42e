//! Changes made through the mount, once S3 has them (or, for a new file, once it exists
//! here). Each takes a new stamp (invariant 3) and keeps the listings, negative entries and
//! aliases in step with the table in the same critical section.

use std::sync::Arc;
use std::time::SystemTime;

use super::listings::Listed;
use super::table::{Ino, InodeTable, ROOT};
use super::{Namespace, State, attr_of};
use crate::fs::Attr;
use crate::fs::attr::{Kind, Stat};
use crate::fs::error::{FsError, FsResult, NsError};
use crate::fs::names::{child_key, child_prefix};
use crate::fs::openfile::OpenFile;
use crate::store::{ObjectMeta, UserMeta};

/// Names the kernel must forget after a change (other spellings of a removed entry).
#[derive(Debug, Default)]
pub struct Removed {
    pub aliases: Vec<(Ino, String)>,
}

/// A rename, as S3 now holds it.
#[derive(Debug)]
pub struct Move<'a> {
    pub ino: Ino,
    pub from: (Ino, &'a str),
    pub to: (Ino, &'a str),
    /// The new ETag of a moved file (a copy has its own).
    pub etag: Option<String>,
    /// False when the old keys could not all be deleted: the old name may still show some.
    pub complete: bool,
    /// A moved directory: the new ETag of each copied key, by old key.
    pub copied: std::collections::HashMap<String, String>,
}

impl Namespace {
    /// A directory made here: its marker is stored with `etag` and `meta`. The directory's
    /// listing is known (empty), so names created in it next need no request.
    pub fn made_dir(
        &self,
        parent: Ino,
        name: &str,
        stat: Stat,
        etag: String,
        meta: UserMeta,
    ) -> FsResult<Attr> {
        let now = self.clock.now();
        let mut st = self.lock();
        let key = child_prefix(&parent_key(&st.table, parent)?, name);
        let s = st.next_stamp();
        let i = st.table.link_new(parent, name, key, stat);
        i.has_marker = true;
        i.etag = Some(etag);
        i.modified = None;
        i.user_meta = Some(meta);
        i.validated = Some(now);
        i.changed = s;
        i.names_changed = s;
        let ino = i.ino;
        let attr = attr_of(&mut st.table, ino, true);
        st.name_added(parent, Listed::Dir(name.to_string()), s);
        st.store_listing(ino, Vec::new(), self.cfg.normalize, now, true);
        Ok(attr)
    }

    /// A symlink or special file stored whole here (`target` for a symlink).
    pub fn made_whole(
        &self,
        parent: Ino,
        name: &str,
        stat: Stat,
        stored: ObjectMeta,
        target: Option<String>,
    ) -> FsResult<Attr> {
        let now = self.clock.now();
        let mut st = self.lock();
        let key = child_key(&parent_key(&st.table, parent)?, name);
        let s = st.next_stamp();
        let i = st.table.link_new(parent, name, key, stat);
        i.etag = Some(stored.etag.clone());
        i.modified = None;
        i.user_meta = stored.user_meta.clone();
        i.target = target;
        i.validated = Some(now);
        i.changed = s;
        let ino = i.ino;
        let attr = attr_of(&mut st.table, ino, true);
        st.name_added(parent, Listed::File(name.to_string(), stored), s);
        Ok(attr)
    }

    /// A file created here, open, not in S3 until its first upload. `make` builds its open
    /// state for the key it gets.
    pub fn created(
        &self,
        parent: Ino,
        name: &str,
        stat: Stat,
        make: impl FnOnce(&str) -> Arc<OpenFile>,
    ) -> FsResult<(Attr, Arc<OpenFile>)> {
        let now = self.clock.now();
        let mut st = self.lock();
        let key = child_key(&parent_key(&st.table, parent)?, name);
        let of = make(&key);
        let s = st.next_stamp();
        let i = st.table.link_new(parent, name, key.clone(), stat);
        i.remote = false;
        i.open = Some(of.clone());
        i.handles = 1;
        i.validated = Some(now);
        i.changed = s;
        let ino = i.ino;
        let attr = attr_of(&mut st.table, ino, true);
        let placeholder = ObjectMeta {
            key,
            size: 0,
            etag: String::new(),
            last_modified: SystemTime::now(),
            user_meta: None,
        };
        st.name_added(parent, Listed::File(name.to_string(), placeholder), s);
        Ok((attr, of))
    }

    /// `name` (inode `ino`) was removed from `parent` here, and from S3.
    pub fn removed(&self, parent: Ino, name: &str, ino: Ino) -> Removed {
        let now = self.clock.now();
        let mut st = self.lock();
        let s = st.next_stamp();
        let was_dir = st.table.get(ino).is_some_and(|i| i.is_dir());
        if st.table.child(parent, name).map(|c| c.ino) == Some(ino) {
            st.table.unlink(parent, name);
        }
        st.gone(parent, name, was_dir, now, self.cfg.negative_ttl, s);
        Removed {
            aliases: self.aliases_dropped(&mut st, ino),
        }
    }

    /// An upload of `of`, open on `ino`, stored `stat` with `meta` as `etag`.
    pub fn stored(&self, ino: Ino, of: &Arc<OpenFile>, etag: &str, meta: &UserMeta, stat: Stat) {
        let now = self.clock.now();
        let mut st = self.lock();
        let s = st.next_stamp();
        let Some(i) = st.table.get_mut(ino) else {
            return;
        };
        if !i.open.as_ref().is_none_or(|o| Arc::ptr_eq(o, of)) {
            return;
        }
        i.remote = true;
        i.etag = Some(etag.to_string());
        i.modified = None;
        // The kernel's pages hold what was just stored.
        i.page_cache_etag = i.etag.clone();
        i.user_meta = Some(meta.clone());
        i.stat = stat;
        i.validated = Some(now);
        i.target = None;
        i.changed = s;
        if i.linked {
            let entry = Listed::File(
                i.name.clone(),
                ObjectMeta {
                    key: i.key.clone(),
                    size: stat.size,
                    etag: etag.to_string(),
                    last_modified: SystemTime::now(),
                    user_meta: Some(meta.clone()),
                },
            );
            let parent = i.parent;
            st.listing_put(parent, entry);
        }
    }

    /// Attributes of `ino` stored here (a self-copy, or a directory's marker): `etag` and
    /// `meta` are what S3 holds now.
    pub fn meta_stored(&self, ino: Ino, stat: Stat, etag: String, meta: UserMeta) {
        let now = self.clock.now();
        let mut st = self.lock();
        let s = st.next_stamp();
        let Some(i) = st.table.get_mut(ino) else {
            return;
        };
        i.stat = stat;
        i.etag = Some(etag.clone());
        i.modified = None;
        i.user_meta = Some(meta.clone());
        i.validated = Some(now);
        i.changed = s;
        if i.is_dir() {
            i.has_marker = true;
            return;
        }
        if i.linked {
            let entry = Listed::File(
                i.name.clone(),
                ObjectMeta {
                    key: i.key.clone(),
                    size: stat.size,
                    etag,
                    last_modified: SystemTime::now(),
                    user_meta: Some(meta),
                },
            );
            let parent = i.parent;
            st.listing_put(parent, entry);
        }
    }

    /// A rename S3 now holds (see [`Move`]). Everything under a moved directory is re-keyed,
    /// and its cached listings are dropped, in one step.
    pub fn moved(&self, m: Move<'_>) -> Removed {
        let now = self.clock.now();
        let mut st = self.lock();
        let s = st.next_stamp();
        let Ok(to_key) = parent_key(&st.table, m.to.0) else {
            return Removed::default();
        };
        let Some(kind) = st.table.get(m.ino).map(|i| i.stat.kind) else {
            return Removed::default();
        };
        let new_key = match kind {
            Kind::Dir => child_prefix(&to_key, m.to.1),
            _ => child_key(&to_key, m.to.1),
        };
        for ino in st.table.subtree(m.ino) {
            st.listings.pop(&ino);
            if let Some(i) = st.table.get_mut(ino)
                && let Some(e) = m.copied.get(&i.key)
            {
                i.etag = Some(e.clone());
                i.modified = None;
            }
        }
        st.table.relink(m.ino, m.to.0, m.to.1, new_key.clone(), s);
        let (size, meta) = {
            let i = st.table.get_mut(m.ino).expect("relinked");
            i.validated = Some(now);
            // rename(2) may update the moved inode's ctime; Linux file systems do.
            i.stat.ctime = SystemTime::now();
            if let Some(e) = &m.etag {
                i.etag = Some(e.clone());
                i.modified = None;
            }
            if let Some(of) = &i.open {
                // A file not uploaded yet goes to its new key when it is.
                of.rekey(&new_key);
            }
            (i.stat.size, i.user_meta.clone())
        };
        st.negative_remove(m.to.0, m.to.1);
        if m.complete {
            st.gone(
                m.from.0,
                m.from.1,
                kind == Kind::Dir,
                now,
                self.cfg.negative_ttl,
                s,
            );
        } else {
            // What is left under the old name is for S3 to say.
            st.listings.pop(&m.from.0);
            st.touch_names(m.from.0, s);
            st.maybe_emptied(m.from.0);
        }
        let entry = match kind {
            Kind::Dir => Listed::Dir(m.to.1.to_string()),
            _ => Listed::File(
                m.to.1.to_string(),
                ObjectMeta {
                    key: new_key,
                    size,
                    etag: m.etag.clone().unwrap_or_default(),
                    last_modified: SystemTime::now(),
                    user_meta: meta,
                },
            ),
        };
        st.name_added(m.to.0, entry, s);
        Removed {
            aliases: self.aliases_dropped(&mut st, m.ino),
        }
    }

    /// Unlinks `name` from `parent` if it is still `ino` (an entry a rename replaced under
    /// another spelling).
    pub fn unlink_replaced(&self, parent: Ino, name: &str, ino: Ino) -> Removed {
        self.removed(parent, name, ino)
    }

    fn aliases_dropped(&self, st: &mut State, ino: Ino) -> Vec<(Ino, String)> {
        if self.cfg.case_insensitive {
            st.table.drop_aliases_of(ino)
        } else {
            Vec::new()
        }
    }
}

impl State {
    /// A name was added to `dir` here: the directory's times move and its listing learns it.
    fn name_added(&mut self, dir: Ino, entry: Listed, stamp: u64) {
        self.touch_names(dir, stamp);
        self.negative_remove(dir, entry.name());
        self.listing_put(dir, entry);
    }

    /// `name` left `dir` here (removed or renamed away). A file that a directory of the same
    /// name shadowed may show again once the directory is gone: for a directory, S3 is asked
    /// again (no negative entry, no listing) instead of taking the name as absent.
    fn gone(
        &mut self,
        dir: Ino,
        name: &str,
        was_dir: bool,
        now: std::time::Instant,
        ttl: std::time::Duration,
        stamp: u64,
    ) {
        if was_dir {
            self.listings.pop(&dir);
            self.touch_names(dir, stamp);
            self.maybe_emptied(dir);
        } else {
            self.negative_insert_stamped(dir, name, now, ttl, stamp);
            self.name_removed(dir, name, stamp);
        }
    }

    /// A name was removed from `dir` here.
    fn name_removed(&mut self, dir: Ino, name: &str, stamp: u64) {
        self.touch_names(dir, stamp);
        if let Some(l) = self.listings.get_mut(&dir) {
            l.remove(name);
        }
        self.maybe_emptied(dir);
    }

    /// A directory that may have no marker lost an entry: if that was its last key, it is gone
    /// from S3 too, and so may be its parent if that had no marker either. What is known of
    /// each (its validation, its parent's listing) is asked again at the next look.
    fn maybe_emptied(&mut self, mut dir: Ino) {
        while let Some(d) = self.table.get_mut(dir) {
            if dir == ROOT || !d.is_dir() || d.has_marker {
                return;
            }
            d.validated = None;
            let parent = d.parent;
            self.listings.pop(&parent);
            dir = parent;
        }
    }

    /// The names of `dir` changed here: its mtime and ctime move to now. Kept in memory only:
    /// storing them would cost a PUT of the marker for every change in the directory.
    fn touch_names(&mut self, dir: Ino, stamp: u64) {
        let now = SystemTime::now();
        if let Some(i) = self.table.get_mut(dir) {
            i.stat.mtime = now;
            i.stat.ctime = now;
            i.names_changed = stamp;
        }
    }

    /// Records `entry` in a cached listing of `dir`, replacing one of the same name.
    fn listing_put(&mut self, dir: Ino, entry: Listed) {
        if let Some(l) = self.listings.get_mut(&dir) {
            l.remove(entry.name());
            l.insert(entry);
        }
    }
}

/// The key of directory `ino`.
fn parent_key(t: &InodeTable, ino: Ino) -> FsResult<String> {
    let p = t.get(ino).ok_or_else(FsError::not_found)?;
    if !p.is_dir() {
        return Err(NsError::NotADirectory.into());
    }
    Ok(p.key.clone())
}
