//! The namespace's cache of whole listings: kept for the metadata TTL, patched by changes made
//! here, never kept when the directory changed here while it was being listed, and dropped
//! when a rename moves the directory (invariant 2).

use std::ops::Bound;
use std::time::Instant;

use super::apply::Asked;
use super::listings::{DirListing, LISTING_CACHE_MAX_ENTRIES, Listed};
use super::table::Ino;
use super::{Namespace, State};
use crate::store::ObjectMeta;

impl State {
    pub(super) fn store_listing(
        &mut self,
        dir: Ino,
        entries: Vec<Listed>,
        normalize: bool,
        fetched: Instant,
        authoritative: bool,
    ) {
        let l = DirListing::new(entries, normalize, fetched, authoritative);
        self.listings.put(dir, l);
    }

    /// Drops the least recently used listings while they hold more than `max` bytes.
    pub(super) fn trim_listings(&mut self, max: u64) {
        let mut total: u64 = self.listings.iter().map(|(_, l)| l.bytes).sum();
        while total > max {
            let Some((_, l)) = self.listings.pop_lru() else {
                return;
            };
            total = total.saturating_sub(l.bytes);
        }
    }
}

impl Namespace {
    /// Keeps a listing of `dir` fetched from S3 since `asked`, unless the directory moved or
    /// its names changed here meanwhile (the listing could miss that change).
    pub fn keep_listing(&self, dir: Ino, asked: &Asked, entries: Vec<Listed>) {
        if entries.len() > LISTING_CACHE_MAX_ENTRIES
            || entries.len() > self.max_listing_entries()
            || self.cfg.ttl.is_zero()
        {
            return;
        }
        let now = self.clock.now();
        let mut st = self.lock();
        let unchanged = st
            .table
            .get(dir)
            .is_some_and(|d| d.key == asked.dir_key && d.names_changed <= asked.stamp);
        if unchanged {
            st.store_listing(dir, entries, self.cfg.normalize, now, false);
            st.trim_listings(self.cfg.budget / 2);
        }
    }

    /// Another client changed names beside `ino` (a conflict): the cached listing of its
    /// directory is dropped, so the next one asks S3.
    pub fn changed_elsewhere(&self, ino: Ino) {
        let mut st = self.lock();
        if let Some(parent) = st.table.get(ino).map(|i| i.parent) {
            st.listings.pop(&parent);
        }
    }

    /// The entries of a cached listing of `dir` still trusted for `readdir`: fresh, and when it
    /// came from S3, young enough that a name missing from it may be trusted as absent.
    pub fn listing_for_readdir(&self, dir: Ino) -> Option<Vec<Listed>> {
        let now = self.clock.now();
        let st = self.lock();
        let l = st.listings.peek(&dir)?;
        let age = now.saturating_duration_since(l.fetched);
        let trusted = l.authoritative || self.cfg.case_insensitive || age < self.cfg.negative_ttl;
        (age < self.cfg.ttl && trusted).then(|| l.names.values().cloned().collect())
    }

    /// Every entry of a fresh cached listing of `dir` (case-insensitive mode).
    pub fn listing_entries(&self, dir: Ino) -> Option<Vec<Listed>> {
        let now = self.clock.now();
        let st = self.lock();
        let l = st.listings.peek(&dir)?;
        (now.saturating_duration_since(l.fetched) < self.cfg.ttl)
            .then(|| l.names.values().cloned().collect())
    }

    /// The entries of a fresh cached listing of `dir` whose names fold to `folded`; `None`
    /// without such a listing.
    pub fn listing_group(&self, dir: Ino, folded: &str) -> Option<Vec<Listed>> {
        let now = self.clock.now();
        let st = self.lock();
        let l = st.listings.peek(&dir)?;
        (now.saturating_duration_since(l.fetched) < self.cfg.ttl).then(|| l.group(folded))
    }

    /// Starts fetching the stored attributes of the listed files of `dir` that lack them
    /// (once at a time per directory): their names and keys.
    pub fn prefetch_begin(&self, dir: Ino) -> Option<Vec<(String, String)>> {
        let mut st = self.lock();
        if !st.prefetching.insert(dir) {
            return None;
        }
        let todo = match st.listings.peek(&dir) {
            Some(l) => l
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
        };
        Some(todo)
    }

    pub fn prefetch_end(&self, dir: Ino) {
        self.lock().prefetching.remove(&dir);
    }

    /// Adds fetched metadata to a listed file, unless the entry changed meanwhile.
    pub fn listing_upgrade(&self, dir: Ino, name: String, meta: ObjectMeta) {
        let mut st = self.lock();
        if let Some(l) = st.listings.get_mut(&dir) {
            let same =
                matches!(l.names.get(&name), Some(Listed::File(_, m)) if m.etag == meta.etag);
            if same {
                l.insert(Listed::File(name, meta));
            }
        }
        st.trim_listings(self.cfg.budget / 2);
    }

    /// For reading ahead across files (see `siblings`): when `name` comes soon after `prev`
    /// in a fresh listing of `dir` (fewer than `ahead` names between them), the listed files
    /// after `name`, at most `ahead` of them, of at most `max_size` bytes.
    pub fn files_after(
        &self,
        dir: Ino,
        prev: &str,
        name: &str,
        ahead: usize,
        max_size: u64,
    ) -> Vec<ObjectMeta> {
        let now = self.clock.now();
        let st = self.lock();
        let Some(l) = st.listings.peek(&dir) else {
            return Vec::new();
        };
        if now.saturating_duration_since(l.fetched) >= self.cfg.ttl {
            return Vec::new();
        }
        let between = l
            .names
            .range::<str, _>((Bound::Excluded(prev), Bound::Excluded(name)))
            .take(ahead)
            .count();
        if between >= ahead {
            return Vec::new();
        }
        l.names
            .range::<str, _>((Bound::Excluded(name), Bound::Unbounded))
            .take(ahead)
            .filter_map(|(_, e)| match e {
                Listed::File(_, m) if m.size > 0 && m.size <= max_size && !m.etag.is_empty() => {
                    Some(m.clone())
                }
                _ => None,
            })
            .collect()
    }
}
