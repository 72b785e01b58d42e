//! Revalidation by listing: entries of one directory whose TTL ran out, confirmed by a LIST
//! page (up to 1,000 keys with their ETags and dates) instead of a HEAD each. An entry is
//! confirmed only when the page shows its key with the same ETag and the same Last-Modified
//! second the mount learned from S3 (a copy of an object onto itself elsewhere keeps its ETag
//! but moves its date), nothing changed it here since the question, and no directory of the
//! same name can shadow it. Anything else is left expired: the next question is a HEAD.

use std::collections::HashSet;

use super::table::Ino;
use super::table::Inode;
use super::{Asked, Namespace};
use crate::cache::attrs::secs;
use crate::fs::names::child_key;
use crate::store::ListPage;

/// Directories with fewer known files than this are asked name by name (a HEAD is cheaper
/// than a page of 1,000).
pub const MIN_KNOWN: usize = 64;
/// Known names each page is expected to cover (a page holds 1,000 keys; the rest is room for
/// keys the mount has not seen).
pub const CHUNK: usize = 900;
/// Pages listed at once: the one holding the name asked for and the following ones.
pub const PAGES: usize = 8;

/// What a lookup or `getattr` of an expired entry should do.
#[derive(Debug)]
pub enum Revalidate {
    /// Fresh already (another question confirmed it meanwhile).
    Fresh,
    /// Not worth a listing, or not possible: ask with a HEAD.
    No,
    /// List these pages (`start_after` of each) of `asked.dir_key`.
    List(Asked, Vec<Option<String>>),
}

/// Whether `i` is a file the listing can confirm.
fn confirmable(i: &Inode) -> bool {
    i.remote
        && i.linked
        && i.open.is_none()
        && !i.is_dir()
        && i.alias_of.is_none()
        && i.etag.is_some()
        && i.modified.is_some()
        && i.user_meta.is_some()
}

impl Namespace {
    /// Which pages of `dir` to list to revalidate the expired `name` and the known files
    /// after it: each page starts after the key of the known name before its first.
    pub fn revalidation_plan(&self, dir: Ino, name: &str) -> Revalidate {
        let now = self.clock.now();
        let st = self.lock();
        let (Some(d), Some(c)) = (st.table.get(dir), st.table.child(dir, name)) else {
            return Revalidate::No;
        };
        if c.fresh(now, self.cfg.ttl) {
            return Revalidate::Fresh;
        }
        if !d.is_dir() || !confirmable(c) {
            return Revalidate::No;
        }
        let mut names: Vec<&str> = st
            .table
            .children_of(dir)
            .into_iter()
            .filter(|c| confirmable(c))
            .map(|c| c.name.as_str())
            .collect();
        if names.len() < MIN_KNOWN {
            return Revalidate::No;
        }
        names.sort_unstable();
        let Ok(at) = names.binary_search(&name) else {
            return Revalidate::No;
        };
        let starts = (0..PAGES)
            .map(|k| at + k * CHUNK)
            .take_while(|&i| i < names.len())
            .map(|i| (i > 0).then(|| child_key(&d.key, names[i - 1])))
            .collect();
        let asked = Asked {
            parent: dir,
            dir_key: d.key.clone(),
            stamp: st.stamp,
        };
        Revalidate::List(asked, starts)
    }

    /// Confirms the known files of `asked.parent` that `page` (listed after `start_after`)
    /// shows unchanged (see the module documentation); returns how many. A known file the page
    /// shows changed, or that its span of keys lacks, is marked so its next question is a HEAD
    /// at once, not another listing.
    pub fn revalidate(&self, asked: &Asked, start_after: Option<&str>, page: &ListPage) -> usize {
        let now = self.clock.now();
        let mut st = self.lock();
        if st.table.get(asked.parent).map(|d| d.key.as_str()) != Some(asked.dir_key.as_str()) {
            return 0;
        }
        let dirs: HashSet<&str> = page.prefixes.iter().map(String::as_str).collect();
        // Past the page's last key a directory `name/` could follow unseen.
        let end = page.next_token.as_ref().map(|_| {
            let last_object = page.objects.last().map(|o| o.key.as_str());
            let last_prefix = page.prefixes.last().map(String::as_str);
            last_object.max(last_prefix).unwrap_or_default().to_string()
        });
        let mut confirmed = 0;
        let mut shown = HashSet::new();
        for o in &page.objects {
            let Some(name) = o.key.strip_prefix(asked.dir_key.as_str()) else {
                continue;
            };
            let as_dir = format!("{}/", o.key);
            if name.is_empty()
                || name.contains('/')
                || dirs.contains(as_dir.as_str())
                || end.as_ref().is_some_and(|e| as_dir.as_str() >= e.as_str())
            {
                continue;
            }
            shown.insert(name);
            let Some(ino) = st.table.child(asked.parent, name).map(|c| c.ino) else {
                continue;
            };
            let i = st.table.get_mut(ino).expect("child exists");
            let same = i.etag.as_deref() == Some(o.etag.as_str())
                && i.modified.map(secs) == Some(secs(o.last_modified));
            if confirmable(i) && i.changed <= asked.stamp {
                if same {
                    i.validated = Some(now);
                    confirmed += 1;
                } else {
                    i.modified = None;
                }
            }
        }
        self.mark_missing(&mut st.table, asked, (start_after, end.as_deref()), &shown);
        confirmed
    }

    /// Marks the known files whose keys fall in the span a page covered, `(start_after, end]`
    /// (to the directory's end for the last page), but which it did not show: gone, or
    /// shadowed, they are asked with a HEAD next.
    fn mark_missing(
        &self,
        t: &mut super::table::InodeTable,
        asked: &Asked,
        (start_after, end): (Option<&str>, Option<&str>),
        shown: &HashSet<&str>,
    ) {
        let missing: Vec<Ino> = t
            .children_of(asked.parent)
            .into_iter()
            .filter(|c| confirmable(c) && !shown.contains(c.name.as_str()))
            .filter(|c| start_after.is_none_or(|s| c.key.as_str() > s))
            .filter(|c| end.is_none_or(|e| c.key.as_str() <= e))
            .map(|c| c.ino)
            .collect();
        for ino in missing {
            if let Some(i) = t.get_mut(ino) {
                i.modified = None;
            }
        }
    }
}
