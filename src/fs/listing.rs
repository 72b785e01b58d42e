//! Listing a directory's S3 prefix: pages of LIST results turned into entries by the rules
//! of `readdir` (shadowing, unrepresentable keys), and a cache of whole listings.
//!
//! `readdir` streams pages through [`ListState`]. Whole listings ([`DirListing`]) are kept,
//! for the metadata TTL, when something needs to see every name of a directory at once: the
//! case-insensitive mode, which must find `MyFile.txt` when asked for `myfile.txt` (S3 cannot
//! look a key up ignoring case) and must pick one winner among names that differ only in case.
//! Cached listings are patched by changes made through the mount, so copying thousands of
//! files into one directory does not list it again for every file.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Fs;
use super::attr::Kind;
use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::names::{self, Unrepresentable, fold};
use crate::store::{ListRequest, ObjectMeta, ObjectStore};

/// An entry produced by listing, before it has an inode.
#[derive(Clone, Debug)]
pub enum Listed {
    Dir(String),
    File(String, ObjectMeta),
    /// A child known only here (created, not uploaded yet).
    Local(String, Ino),
}

impl Listed {
    pub fn name(&self) -> &str {
        match self {
            Listed::Dir(n) | Listed::File(n, _) | Listed::Local(n, _) => n,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Listed::Dir(_))
    }
}

/// Among names that are equal ignoring case, the one shown: directories before files, then
/// the smallest in byte order (the first a listing returns). Deterministic, so every mount
/// and every listing shows the same one.
pub fn winner<T>(
    group: &[T],
    is_dir: impl Fn(&T) -> bool,
    name: impl Fn(&T) -> &str,
) -> Option<&T> {
    group.iter().min_by(|a, b| {
        is_dir(b)
            .cmp(&is_dir(a))
            .then_with(|| name(a).as_bytes().cmp(name(b).as_bytes()))
    })
}

/// Where a paged listing stands.
pub struct ListState {
    pub prefix: String,
    pub token: Option<String>,
    pub done: bool,
    /// Files waiting to learn whether a directory of the same name shadows them.
    pending: BTreeMap<String, ObjectMeta>,
    /// Names that local entries take: listed entries with these names are dropped.
    pub local: HashSet<String>,
}

impl ListState {
    pub fn new(prefix: String, local: HashSet<String>) -> Self {
        ListState {
            prefix,
            token: None,
            done: false,
            pending: BTreeMap::new(),
            local,
        }
    }

    /// Emits held-back files that sort before `key` once their directory would have.
    fn release_pending_before(&mut self, key: &str, out: &mut VecDeque<Listed>) {
        let ready: Vec<String> = self
            .pending
            .keys()
            .filter(|name| format!("{}{}/", self.prefix, name).as_str() < key)
            .cloned()
            .collect();
        for name in ready {
            if let Some(meta) = self.pending.remove(&name) {
                out.push_back(Listed::File(name, meta));
            }
        }
    }
}

/// A whole directory listing, by name, with an index of folded names.
pub struct DirListing {
    fetched: Instant,
    normalize: bool,
    pub names: BTreeMap<String, Listed>,
    folds: HashMap<String, Vec<String>>,
}

impl DirListing {
    fn new(entries: Vec<Listed>, normalize: bool) -> Self {
        let mut l = DirListing {
            fetched: Instant::now(),
            normalize,
            names: BTreeMap::new(),
            folds: HashMap::new(),
        };
        for e in entries {
            l.insert(e);
        }
        l
    }

    pub fn is_fresh(&self, ttl: std::time::Duration) -> bool {
        self.fetched.elapsed() < ttl
    }

    pub fn insert(&mut self, e: Listed) {
        let name = e.name().to_string();
        if self.names.insert(name.clone(), e).is_none() {
            self.folds
                .entry(fold(&name, self.normalize))
                .or_default()
                .push(name);
        }
    }

    pub fn remove(&mut self, name: &str) {
        if self.names.remove(name).is_some() {
            let f = fold(name, self.normalize);
            if let Some(v) = self.folds.get_mut(&f) {
                v.retain(|n| n != name);
                if v.is_empty() {
                    self.folds.remove(&f);
                }
            }
        }
    }

    /// Every entry whose name folds to `folded`.
    pub fn group(&self, folded: &str) -> Vec<Listed> {
        self.folds
            .get(folded)
            .map(|v| {
                v.iter()
                    .filter_map(|n| self.names.get(n).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups of two or more names that fold alike.
    pub fn collisions(&self) -> Vec<Vec<String>> {
        self.folds
            .values()
            .filter(|v| v.len() > 1)
            .cloned()
            .collect()
    }
}

/// How many whole listings are kept.
pub const LISTING_CACHE_DIRS: usize = 64;
/// Directories with more entries than this are not kept as whole listings by `readdir`.
pub const LISTING_CACHE_MAX_ENTRIES: usize = 100_000;

impl<S: ObjectStore> Fs<S> {
    /// Fetches one LIST page into `out`, applying the rules of the module documentation.
    pub(crate) async fn list_page(
        &self,
        st: &mut ListState,
        out: &mut VecDeque<Listed>,
    ) -> FsResult<()> {
        let mut req = ListRequest::dir(&st.prefix);
        req.token = st.token.clone();
        let page = self
            .store
            .list(&req)
            .await
            .map_err(|e| FsError::from_store(e, &st.prefix))?;
        // Objects and prefixes share one key order; merge them.
        let mut items: Vec<(String, Option<ObjectMeta>)> = page
            .objects
            .into_iter()
            .map(|o| (o.key.clone(), Some(o)))
            .chain(page.prefixes.into_iter().map(|p| (p, None)))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, obj) in items {
            st.release_pending_before(&key, out);
            let rest = &key[st.prefix.len().min(key.len())..];
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
                    if st.local.contains(rest) {
                        continue;
                    }
                    st.pending.insert(rest.to_string(), o);
                }
                None => {
                    let name = rest.strip_suffix('/').unwrap_or(rest);
                    if let Err(why) = names::check_segment(name) {
                        self.skip_log.skipped(&key, why);
                        continue;
                    }
                    if let Some(file) = st.pending.remove(name) {
                        log::debug!("directory {key:?} shadows the object {:?}", file.key);
                    }
                    if st.local.contains(name) {
                        continue;
                    }
                    out.push_back(Listed::Dir(name.to_string()));
                }
            }
        }
        st.token = page.next_token;
        if st.token.is_none() {
            for (name, meta) in std::mem::take(&mut st.pending) {
                out.push_back(Listed::File(name, meta));
            }
            st.done = true;
        }
        Ok(())
    }

    /// The whole listing of directory `dir` (S3 entries only), cached for the metadata TTL.
    pub(crate) async fn dir_listing(&self, dir: Ino) -> FsResult<Arc<Mutex<DirListing>>> {
        let ttl = self.config.metadata_ttl;
        if let Some(l) = self.listings_lock().get(&dir)
            && lock(l).fetched.elapsed() < ttl
        {
            return Ok(l.clone());
        }
        let prefix = {
            let t = self.table();
            let i = t.get(dir).ok_or_else(FsError::not_found)?;
            if !i.is_dir() {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"));
            }
            i.key.clone()
        };
        let mut st = ListState::new(prefix, HashSet::new());
        let mut out = VecDeque::new();
        while !st.done {
            self.list_page(&mut st, &mut out).await?;
        }
        let listing = Arc::new(Mutex::new(DirListing::new(
            out.into(),
            self.config.normalize_names,
        )));
        self.listings_lock().put(dir, listing.clone());
        Ok(listing)
    }

    fn listings_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, lru::LruCache<Ino, Arc<Mutex<DirListing>>>> {
        self.listings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Someone is asking for the attributes of a listed file one by one (`ls -l` without
    /// readdirplus, `stat *`, rsync): fetch the metadata of the directory's other files in the
    /// background, a few at a time, so the next lookups find it in the listing. Once per
    /// directory per listing; only in exact mode, where every file's metadata is read anyway.
    pub(crate) fn prefetch_meta(&self, dir: Ino) {
        let Some(me) = self.me.upgrade() else { return };
        {
            let mut p = self.prefetching.lock().unwrap_or_else(|e| e.into_inner());
            if !p.insert(dir) {
                return;
            }
        }
        tokio::spawn(async move {
            use futures::stream::{self, StreamExt};
            let todo: Vec<(String, String)> = {
                let c = me.listings_lock();
                match c.peek(&dir) {
                    Some(l) => lock(l)
                        .names
                        .values()
                        .filter_map(|e| match e {
                            Listed::File(n, m) if m.user_meta.is_none() && !m.etag.is_empty() => {
                                Some((n.clone(), m.key.clone()))
                            }
                            _ => None,
                        })
                        .collect(),
                    None => Vec::new(),
                }
            };
            let me2 = me.clone();
            stream::iter(todo)
                .map(|(name, key)| {
                    let me = me2.clone();
                    async move { (name, me.store.head(&key).await) }
                })
                .buffer_unordered(16)
                .for_each(|(name, r)| {
                    let me = me2.clone();
                    async move {
                        if let Ok(m) = r {
                            me.listing_upgrade(dir, name, m);
                        }
                    }
                })
                .await;
            me.prefetching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&dir);
        });
    }

    /// The cached listing of `dir`, if still fresh, as entries in name order.
    pub(crate) fn listing_snapshot(&self, dir: Ino) -> Option<Vec<Listed>> {
        let ttl = self.config.metadata_ttl;
        let c = self.listings_lock();
        let l = c.peek(&dir)?;
        let l = lock(l);
        (l.fetched.elapsed() < ttl).then(|| l.names.values().cloned().collect())
    }

    /// Keeps a listing `readdir` streamed to its end.
    pub(crate) fn listing_store(&self, dir: Ino, entries: Vec<Listed>) {
        if entries.len() <= LISTING_CACHE_MAX_ENTRIES && !self.config.metadata_ttl.is_zero() {
            let l = DirListing::new(entries, self.config.normalize_names);
            self.listings_lock().put(dir, Arc::new(Mutex::new(l)));
        }
    }

    /// A name appeared in `dir` through the mount: patch a cached listing. Files get a
    /// placeholder entry (size and ETag unknown) until their upload records the real ones.
    pub(crate) fn listing_add(&self, dir: Ino, name: &str, kind: Kind, key: &str) {
        let entry = match kind {
            Kind::Dir => Listed::Dir(name.to_string()),
            _ => Listed::File(
                name.to_string(),
                ObjectMeta {
                    key: key.to_string(),
                    size: 0,
                    etag: String::new(),
                    last_modified: std::time::SystemTime::now(),
                    user_meta: None,
                },
            ),
        };
        self.listing_put(dir, entry);
    }

    /// Records `entry` in a cached listing of `dir`, replacing one of the same name.
    pub(crate) fn listing_put(&self, dir: Ino, entry: Listed) {
        if let Some(l) = self.listings_lock().get(&dir) {
            let mut l = lock(l);
            l.remove(entry.name());
            l.insert(entry);
        }
    }

    /// Adds fetched metadata to a listed file, unless the entry changed meanwhile.
    fn listing_upgrade(&self, dir: Ino, name: String, meta: ObjectMeta) {
        if let Some(l) = self.listings_lock().get(&dir) {
            let mut l = lock(l);
            let same =
                matches!(l.names.get(&name), Some(Listed::File(_, m)) if m.etag == meta.etag);
            if same {
                l.names.insert(name.clone(), Listed::File(name, meta));
            }
        }
    }

    /// A name disappeared from `dir` through the mount: patch a cached listing.
    pub(crate) fn listing_remove(&self, dir: Ino, name: &str) {
        if let Some(l) = self.listings_lock().get(&dir) {
            lock(l).remove(name);
        }
    }
}

pub(crate) fn lock(l: &Mutex<DirListing>) -> std::sync::MutexGuard<'_, DirListing> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_prefer_directories_then_byte_order() {
        let g = vec![
            ("myfile.txt", false),
            ("MyFile.txt", false),
            ("MYFILE.TXT", true),
        ];
        let w = winner(&g, |e| e.1, |e| e.0).unwrap();
        assert_eq!(w.0, "MYFILE.TXT");
        let g = vec![("myfile.txt", false), ("MyFile.txt", false)];
        assert_eq!(winner(&g, |e| e.1, |e| e.0).unwrap().0, "MyFile.txt");
    }

    #[test]
    fn listings_index_folded_names() {
        let mut l = DirListing::new(
            vec![Listed::Dir("Docs".into()), Listed::Dir("docs".into())],
            false,
        );
        assert_eq!(l.group("docs").len(), 2);
        assert_eq!(l.collisions().len(), 1);
        l.remove("Docs");
        assert_eq!(l.group("docs").len(), 1);
        assert!(l.collisions().is_empty());
    }
}
