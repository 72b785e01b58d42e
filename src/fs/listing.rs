//! Listing a directory's S3 prefix: pages of LIST results turned into entries by the rules
//! of `readdir` (shadowing, unrepresentable keys), and whole listings fetched for the
//! namespace to keep (see `namespace::listings`).
//!
//! `readdir` streams pages through [`ListState`]. Whole listings are fetched when something
//! needs to see every name of a directory at once (case-insensitive mode, `dirscan`).

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::Fs;
use super::error::{FsError, FsResult};
use super::inode::Ino;
use super::names::{self, Unrepresentable};
pub use super::namespace::listings::{Listed, winner};
use crate::store::{ListRequest, ObjectMeta, ObjectStore};

/// Where a paged listing stands.
pub struct ListState {
    pub prefix: String,
    pub token: Option<String>,
    pub done: bool,
    /// Files waiting to learn whether a directory of the same name shadows them.
    pending: BTreeMap<String, ObjectMeta>,
    /// Names that local entries take: listed entries with these names are dropped.
    pub local: HashSet<String>,
    tokens: crate::store::Tokens,
}

impl ListState {
    pub fn new(prefix: String, local: HashSet<String>) -> Self {
        ListState {
            prefix,
            token: None,
            done: false,
            pending: BTreeMap::new(),
            local,
            tokens: Default::default(),
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
        for raw in &page.unreadable {
            self.skip_log.skipped(raw, Unrepresentable::NotUtf8);
        }
        if let Some(t) = &page.next_token {
            st.tokens
                .check(t, &st.prefix)
                .map_err(|e| FsError::from_store(e, &st.prefix))?;
        }
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
            self.take_item(st, &key, obj, out);
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

    /// One listed key, an object (`obj`) or a common prefix, by the rules of `readdir`.
    fn take_item(
        &self,
        st: &mut ListState,
        key: &str,
        obj: Option<ObjectMeta>,
        out: &mut VecDeque<Listed>,
    ) {
        let Some(rest) = key.strip_prefix(st.prefix.as_str()) else {
            // A server answering keys outside the prefix asked for: not ours to show.
            self.skip_log.skipped(key, Unrepresentable::OutsidePrefix);
            return;
        };
        match obj {
            Some(o) => self.take_object(st, key, rest, o),
            None => self.take_prefix(st, key, rest, out),
        }
    }

    /// A file named `name`: held back until no directory of that name can follow (trap 2 of
    /// `readdir`). The directory's own marker is no entry (trap 4).
    fn take_object(&self, st: &mut ListState, key: &str, name: &str, o: ObjectMeta) {
        if name.is_empty() {
            if o.size > 0 {
                self.skip_log
                    .skipped(key, Unrepresentable::ContentInDirectoryMarker);
            }
            return;
        }
        if let Err(why) = names::check_segment(name) {
            self.skip_log.skipped(key, why);
            return;
        }
        if st.local.contains(name) {
            return;
        }
        st.pending.insert(name.to_string(), o);
    }

    /// A common prefix `rest` (`name/`): a directory, which shadows a file of its name.
    fn take_prefix(&self, st: &mut ListState, key: &str, rest: &str, out: &mut VecDeque<Listed>) {
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if let Err(why) = names::check_segment(name) {
            self.skip_log.skipped(key, why);
            return;
        }
        if let Some(file) = st.pending.remove(name) {
            log::debug!("directory {key:?} shadows the object {:?}", file.key);
        }
        if st.local.contains(name) {
            return;
        }
        out.push_back(Listed::Dir(name.to_string()));
    }

    /// The whole listing of directory `dir` (S3 entries only), cached for the metadata TTL;
    /// `None` for a directory with more entries than the memory budget lets one listing hold.
    pub(crate) async fn dir_listing(&self, dir: Ino) -> FsResult<Option<Vec<Listed>>> {
        if let Some(l) = self.ns.listing_entries(dir) {
            return Ok(Some(l));
        }
        let asked = self.ns.ask(dir)?;
        let max = self.ns.max_listing_entries();
        let mut st = ListState::new(asked.dir_key.clone(), HashSet::new());
        let mut out = VecDeque::new();
        while !st.done {
            self.list_page(&mut st, &mut out).await?;
            if out.len() > max {
                return Ok(None);
            }
        }
        let entries: Vec<Listed> = out.into();
        self.ns.keep_listing(dir, &asked, entries.clone());
        Ok(Some(entries))
    }

    /// Someone is asking for the attributes of a listed file one by one (`ls -l` without
    /// readdirplus, `stat *`, rsync): fetch the metadata of the directory's other files in the
    /// background, a few at a time, so the next lookups find it in the listing. Once per
    /// directory at a time; only in exact mode, where every file's metadata is read anyway.
    pub(crate) fn prefetch_meta(&self, dir: Ino) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(todo) = self.ns.prefetch_begin(dir) else {
            return;
        };
        tokio::spawn(async move {
            use futures::stream::{self, StreamExt};
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
                            me.ns.listing_upgrade(dir, name, m);
                        }
                    }
                })
                .await;
            me.ns.prefetch_end(dir);
        });
    }
}
