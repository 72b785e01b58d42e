//! What the namespace knows about a name, and the one way what S3 says about a key enters it.
//!
//! A lookup first asks [`Namespace::cached`]; when that cannot answer, the caller asks S3 and
//! hands the answer to [`Namespace::apply`] with the [`Asked`] it got, so an answer that is
//! older than a change made here meanwhile, or that concerns a parent renamed meanwhile, never
//! lands (invariant 3). `getattr` does the same with [`Namespace::head_plan`] and
//! [`Namespace::apply_head`], and `readdirplus` with [`Namespace::entry_attrs`].

use std::collections::BTreeMap;
use std::time::Instant;

use super::listings::Listed;
use super::table::{Ino, InodeTable, ROOT};
use super::{Namespace, attr_of, is_local};
use crate::fs::Attr;
use crate::fs::attr::{Kind, Stat, kind_from_meta};
use crate::fs::error::{FsError, FsResult, NsError};
use crate::fs::names::child_prefix;
use crate::store::{ObjectMeta, StoreError, UserMeta};

/// A question about `parent` about to be put to S3: the parent's key and the stamp of the
/// state at that moment.
#[derive(Clone, Debug)]
pub struct Asked {
    pub parent: Ino,
    pub dir_key: String,
    pub stamp: u64,
}

/// What the namespace can say about a name without asking S3.
#[derive(Debug)]
pub enum Cached {
    Hit(Attr),
    Absent,
    /// In a fresh listing of the directory (its listed metadata; S3 may still have to be
    /// asked for the stored attributes).
    Listed(Listed, Asked),
    /// Unknown: ask S3.
    Ask(Asked),
}

/// What S3 says is at a name.
#[derive(Debug)]
pub enum Found {
    Dir { marker: Option<ObjectMeta> },
    File(ObjectMeta),
    Nothing,
}

/// What S3 said exists at a name, as the table keeps it.
struct Seen {
    kind: Kind,
    key: String,
    stat: Stat,
    etag: Option<String>,
    modified: Option<std::time::SystemTime>,
    meta: Option<UserMeta>,
    marker: bool,
}

impl Seen {
    /// Puts what was seen at `name` in `parent` into the table: on the inode there if it is
    /// of the same kind, else on a new one. Returns its number.
    fn record(self, t: &mut InodeTable, parent: Ino, name: &str, now: Instant) -> Ino {
        let reuse = t
            .child(parent, name)
            .filter(|c| c.stat.kind == self.kind)
            .map(|c| c.ino);
        let inode = match reuse {
            Some(ino) => t.get_mut(ino).expect("child exists"),
            None => t.link_new(parent, name, self.key, self.stat),
        };
        if inode.etag != self.etag {
            inode.target = None;
        }
        inode.stat = self.stat;
        inode.etag = self.etag;
        inode.modified = self.modified;
        inode.user_meta = self.meta;
        inode.has_marker = self.marker;
        inode.validated = Some(now);
        inode.ino
    }
}

/// The outcome of applying an answer.
#[derive(Debug)]
pub enum Applied {
    Attr(Attr),
    Absent,
    /// The parent moved while S3 was being asked: ask again.
    Again,
}

/// What `getattr` needs to do.
#[derive(Debug)]
pub enum HeadPlan {
    Known(Attr),
    Head {
        key: String,
        kind: Kind,
        has_marker: bool,
        stamp: u64,
    },
}

impl Namespace {
    /// What is known about `name` in `parent` (see [`Cached`]); counts a kernel lookup on a hit.
    pub fn cached(&self, parent: Ino, name: &str, count: bool) -> FsResult<Cached> {
        let now = self.clock.now();
        let (ttl, neg_ttl) = (self.cfg.ttl, self.cfg.negative_ttl);
        let mut st = self.lock();
        let p = st.table.get(parent).ok_or_else(FsError::not_found)?;
        if !p.is_dir() {
            return Err(NsError::NotADirectory.into());
        }
        let dir_key = p.key.clone();
        if let Some(c) = st.table.child(parent, name)
            && (is_local(&st.table, c) || c.fresh(now, ttl))
        {
            let ino = c.ino;
            return Ok(Cached::Hit(attr_of(&mut st.table, ino, count)));
        }
        if st.negative_hit(parent, name, now, neg_ttl) {
            return Ok(Cached::Absent);
        }
        let asked = Asked {
            parent,
            dir_key,
            stamp: st.stamp,
        };
        if let Some(l) = st.listings.peek(&parent) {
            let age = now.saturating_duration_since(l.fetched);
            if age < ttl {
                match l.names.get(name) {
                    Some(e) => return Ok(Cached::Listed(e.clone(), asked)),
                    None if l.authoritative || self.cfg.case_insensitive || age < neg_ttl => {
                        return Ok(Cached::Absent);
                    }
                    None => {}
                }
            }
        }
        Ok(Cached::Ask(asked))
    }

    /// Applies what S3 said about `name` (asked with `asked`) and returns its attributes.
    pub fn apply(&self, asked: &Asked, name: &str, found: Found, count: bool) -> FsResult<Applied> {
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(p) = st.table.get(asked.parent) else {
            return Err(FsError::not_found());
        };
        if p.key != asked.dir_key {
            return Ok(Applied::Again);
        }
        if let Some(c) = st.table.child(asked.parent, name)
            && (is_local(&st.table, c) || c.changed > asked.stamp)
        {
            let ino = c.ino;
            return Ok(Applied::Attr(attr_of(&mut st.table, ino, count)));
        }
        // Removed here after the question: S3's "it exists" is older.
        if st
            .negatives
            .get(&(asked.parent, name.to_string()))
            .is_some_and(|(_, stamp)| *stamp > asked.stamp)
        {
            return Ok(Applied::Absent);
        }
        let seen = match found {
            Found::Nothing => {
                // What the table still had under the name is gone (it was checked above that
                // nothing changed it here since the question).
                st.table.unlink(asked.parent, name);
                st.negative_insert(asked.parent, name, now, self.cfg.negative_ttl);
                return Ok(Applied::Absent);
            }
            Found::Dir { marker } => self.seen_dir(child_prefix(&asked.dir_key, name), marker),
            Found::File(m) => self.seen_file(m),
        };
        let ino = seen.record(&mut st.table, asked.parent, name, now);
        Ok(Applied::Attr(attr_of(&mut st.table, ino, count)))
    }

    /// A directory at `key`: its marker's attributes, or the defaults when it has none.
    fn seen_dir(&self, key: String, marker: Option<ObjectMeta>) -> Seen {
        let d = &self.cfg.defaults;
        let stat = match &marker {
            Some(m) => Stat::from_object(Kind::Dir, 0, m.last_modified, m.user_meta.as_ref(), d),
            None => Stat::new(Kind::Dir, d, self.cfg.started),
        };
        Seen {
            kind: Kind::Dir,
            key,
            stat,
            etag: marker.as_ref().map(|m| m.etag.clone()),
            modified: None,
            meta: marker.as_ref().and_then(|m| m.user_meta.clone()),
            marker: marker.is_some(),
        }
    }

    /// A file (or symlink) object.
    fn seen_file(&self, m: ObjectMeta) -> Seen {
        let kind = file_kind(&m);
        let stat = Stat::from_object(
            kind,
            m.size,
            m.last_modified,
            m.user_meta.as_ref(),
            &self.cfg.defaults,
        );
        Seen {
            kind,
            key: m.key,
            stat,
            etag: Some(m.etag),
            modified: Some(m.last_modified),
            meta: m.user_meta,
            marker: false,
        }
    }

    /// What `getattr` of `ino` needs: the attributes, or a HEAD of the key.
    pub fn head_plan(&self, ino: Ino) -> FsResult<HeadPlan> {
        let now = self.clock.now();
        let mut st = self.lock();
        let stamp = st.stamp;
        let i = st.table.get(ino).ok_or_else(FsError::not_found)?;
        if i.open.is_some() || !i.remote || ino == ROOT || i.fresh(now, self.cfg.ttl) || !i.linked {
            return Ok(HeadPlan::Known(attr_of(&mut st.table, ino, false)));
        }
        if i.is_dir() && !i.has_marker {
            let i = st.table.get_mut(ino).expect("present");
            i.validated = Some(now);
            return Ok(HeadPlan::Known(attr_of(&mut st.table, ino, false)));
        }
        Ok(HeadPlan::Head {
            key: i.key.clone(),
            kind: i.stat.kind,
            has_marker: i.has_marker,
            stamp,
        })
    }

    /// Applies the answer to the HEAD `head_plan` asked for.
    pub fn apply_head(
        &self,
        ino: Ino,
        plan: &HeadPlan,
        answer: Result<ObjectMeta, StoreError>,
    ) -> FsResult<Attr> {
        let HeadPlan::Head {
            key,
            kind,
            has_marker,
            stamp,
        } = plan
        else {
            return self.attr(ino, false);
        };
        let now = self.clock.now();
        let mut st = self.lock();
        let t = &mut st.table;
        let i = t.get_mut(ino).ok_or_else(FsError::not_found)?;
        if i.changed > *stamp || i.key != *key {
            // Changed here after the question: what the mount knows is newer.
            return Ok(attr_of(t, ino, false));
        }
        match answer {
            Ok(m) => {
                if i.open.is_none() {
                    learn_object(i, *kind, &m, &self.cfg.defaults);
                }
                i.validated = Some(now);
                Ok(attr_of(t, ino, false))
            }
            Err(StoreError::NotFound) if *kind == Kind::Dir && *has_marker => {
                // The marker went away; the directory may still exist implicitly.
                i.has_marker = false;
                i.validated = Some(now);
                Ok(attr_of(t, ino, false))
            }
            Err(StoreError::NotFound) => {
                if i.open.is_none() && i.linked {
                    let (p, n) = (i.parent, i.name.clone());
                    t.unlink(p, &n);
                }
                Err(NsError::Deleted(key.to_string()).into())
            }
            Err(e) => Err(FsError::from_store(e, key)),
        }
    }

    /// True when the stored metadata of `ino` must be read (a HEAD) before it is changed.
    pub fn needs_meta(&self, ino: Ino) -> FsResult<bool> {
        let now = self.clock.now();
        let st = self.lock();
        let i = st.table.get(ino).ok_or_else(FsError::not_found)?;
        Ok(i.open.is_none()
            && i.remote
            && ino != ROOT
            && (i.user_meta.is_none() || i.etag.is_none() || !i.fresh(now, self.cfg.ttl)))
    }

    /// Forces the next `head_plan` of `ino` to ask S3.
    pub fn expire(&self, ino: Ino) {
        if let Some(i) = self.lock().table.get_mut(ino) {
            i.validated = None;
        }
    }

    /// The stamp of the state now, for a question about `dir` (a listing, readdirplus' HEADs).
    pub fn ask(&self, dir: Ino) -> FsResult<Asked> {
        let st = self.lock();
        let p = st.table.get(dir).ok_or_else(FsError::not_found)?;
        if !p.is_dir() {
            return Err(NsError::NotADirectory.into());
        }
        Ok(Asked {
            parent: dir,
            dir_key: p.key.clone(),
            stamp: st.stamp,
        })
    }

    /// Listed files of `dir` whose stored attributes are not known at the listed ETag (they
    /// need a HEAD for exact attributes), by position in `listed`. A listed file with its
    /// metadata (from the attribute cache) needs none.
    pub fn entries_needing_head(&self, dir: Ino, listed: &[Listed]) -> Vec<(usize, String)> {
        let st = self.lock();
        listed
            .iter()
            .enumerate()
            .filter_map(|(n, l)| match l {
                Listed::File(name, meta) if meta.user_meta.is_none() => {
                    let known = st.table.child(dir, name).is_some_and(|c| {
                        c.open.is_some() || (c.user_meta.is_some() && same_version(c, meta))
                    });
                    (!known).then(|| (n, meta.key.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Attributes for listed entries of `dir`, applying what the listing (asked at `asked`)
    /// and the HEADs in `headed` said. Without `plus`, existing inodes keep their numbers and
    /// other entries get a stable synthetic number; with `plus`, every entry gets an inode.
    pub fn entry_attrs(
        &self,
        dir: Ino,
        listed: &[Listed],
        headed: &BTreeMap<usize, ObjectMeta>,
        asked: &Asked,
        plus: bool,
    ) -> FsResult<Vec<Attr>> {
        let now = self.clock.now();
        let mut st = self.lock();
        let t = &mut st.table;
        let Some(d) = t.get(dir) else {
            return Err(FsError::not_found());
        };
        if !plus {
            return Ok(listed.iter().map(|l| self.plain_entry(t, dir, l)).collect());
        }
        let moved = d.key != asked.dir_key;
        let mut out = Vec::with_capacity(listed.len());
        for (n, l) in listed.iter().enumerate() {
            let attr = match l {
                Listed::Local(_, ino) if t.get(*ino).is_some() => attr_of(t, *ino, false),
                Listed::Local(name, _) | Listed::Dir(name) => self.dir_entry(t, dir, name, now),
                Listed::File(name, listed_meta) => {
                    let m = headed.get(&n).unwrap_or(listed_meta);
                    self.file_entry(t, dir, name, m, headed.contains_key(&n), asked, moved, now)
                }
            };
            out.push(attr);
        }
        Ok(out)
    }

    fn plain_entry(&self, t: &InodeTable, dir: Ino, l: &Listed) -> Attr {
        let kind = match l {
            Listed::Dir(_) => Kind::Dir,
            _ => Kind::File,
        };
        // A known child keeps its kind (a symlink, FIFO or device a lookup showed), as long as
        // it is still a file where the listing shows a file.
        let same =
            |c: &super::table::Inode| c.stat.kind == kind || (kind == Kind::File && !c.is_dir());
        match t.child(dir, l.name()) {
            Some(c) if same(c) || matches!(l, Listed::Local(..)) => Attr::new(c.ino, c.stat),
            _ => Attr::new(
                synthetic_ino(dir, l.name()),
                Stat::new(kind, &self.cfg.defaults, self.cfg.started),
            ),
        }
    }

    fn dir_entry(&self, t: &mut InodeTable, dir: Ino, name: &str, now: std::time::Instant) -> Attr {
        let existing = t
            .child(dir, name)
            .filter(|c| c.is_dir() || !c.remote)
            .map(|c| c.ino);
        let ino = match existing {
            Some(ino) => ino,
            None => {
                let key = child_prefix(&t.get(dir).expect("checked").key, name);
                let stat = Stat::new(Kind::Dir, &self.cfg.defaults, self.cfg.started);
                let i = t.link_new(dir, name, key, stat);
                i.validated = Some(now);
                i.ino
            }
        };
        attr_of(t, ino, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn file_entry(
        &self,
        t: &mut InodeTable,
        dir: Ino,
        name: &str,
        m: &ObjectMeta,
        was_headed: bool,
        asked: &Asked,
        moved: bool,
        now: std::time::Instant,
    ) -> Attr {
        let keep = t.child(dir, name).filter(|c| {
            is_local(t, c)
                || c.changed > asked.stamp
                || moved
                || (!was_headed && c.user_meta.is_some() && same_version(c, m))
        });
        if let Some(c) = keep {
            let (ino, stale) = (c.ino, c.changed > asked.stamp || moved);
            if !stale && let Some(i) = t.get_mut(ino) {
                i.validated = Some(now);
            }
            return attr_of(t, ino, false);
        }
        let kind = file_kind(m);
        let reuse = t
            .child(dir, name)
            .filter(|c| c.stat.kind == kind)
            .map(|c| c.ino);
        let ino = match reuse {
            Some(ino) => ino,
            None => {
                let stat = Stat::new(kind, &self.cfg.defaults, m.last_modified);
                t.link_new(dir, name, m.key.clone(), stat).ino
            }
        };
        let i = t.get_mut(ino).expect("just linked");
        learn_object(i, kind, m, &self.cfg.defaults);
        i.validated = Some(now);
        attr_of(t, ino, false)
    }
}

/// Whether the listed `m` is the version of the object `c` knows: the same ETag, and the
/// same Last-Modified second when S3 told it (a copy onto itself elsewhere, a `chmod`, keeps
/// a single-part object's ETag but moves its date).
fn same_version(c: &super::table::Inode, m: &ObjectMeta) -> bool {
    let secs = |t: std::time::SystemTime| crate::cache::attrs::secs(t);
    c.etag.as_deref() == Some(m.etag.as_str())
        && c.modified.is_none_or(|d| secs(d) == secs(m.last_modified))
}

/// The kind a file object declares (a regular file, a symlink or a special file; never a
/// directory, which a key without a trailing slash cannot be).
fn file_kind(m: &ObjectMeta) -> Kind {
    m.user_meta
        .as_ref()
        .and_then(kind_from_meta)
        .filter(|k| *k != Kind::Dir)
        .unwrap_or(Kind::File)
}

/// Takes what S3 says of the object behind `i` (a HEAD, or a listing entry without metadata).
fn learn_object(
    i: &mut super::table::Inode,
    kind: Kind,
    m: &ObjectMeta,
    d: &crate::fs::attr::Defaults,
) {
    let size = if kind == Kind::Dir { 0 } else { m.size };
    let same = i.etag.as_deref() == Some(m.etag.as_str());
    if !same {
        i.target = None;
    }
    match &m.user_meta {
        Some(meta) => {
            let mut st = Stat::from_object(kind, size, m.last_modified, Some(meta), d);
            if kind == Kind::Dir {
                // Keep times moved forward here by changes to its entries.
                st.mtime = st.mtime.max(i.stat.mtime);
                st.ctime = st.ctime.max(i.stat.ctime);
            }
            i.stat = st;
            i.user_meta = Some(meta.clone());
        }
        None if !same => {
            i.stat = Stat::from_object(kind, size, m.last_modified, None, d);
            i.user_meta = None;
        }
        None => {}
    }
    // The date belongs to the stat only when the stat came from this answer (a listing
    // without metadata leaves the stat, and so the date, of what was learned before).
    if m.user_meta.is_some() || !same {
        i.modified = Some(m.last_modified);
    }
    i.etag = Some(m.etag.clone());
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
