//! Listing a directory whose names are looked up one by one (`stat` of many files, `rsync`
//! comparing a tree, a program opening files by name from its own list).
//!
//! A lookup of a name the mount knows nothing about costs a HEAD and a LIST in parallel
//! (`probe`). After `PROBES` such lookups in one directory within the metadata TTL, the
//! directory is listed once in the background; the following lookups are answered from that
//! listing (absent names and directories at once; files at once with `--fast-listing`, else
//! with one HEAD for their stored attributes, fetched ahead for the whole directory by
//! `prefetch_meta`). Listing costs one request per 1,000 names, so it pays for itself after a
//! few dozen lookups. A directory larger than `MAX_PAGES` pages is not listed this way (it
//! would cost more than the lookups it saves), and it is not retried until its counter
//! starts over. A listing during which the mount itself changed the directory is dropped:
//! it could miss the change.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use super::Fs;
use super::inode::Ino;
use super::listing::ListState;
use crate::store::ObjectStore;

/// Lookups that miss every cache in one directory before it is listed.
pub const PROBES: u32 = 16;
/// Most LIST pages (1,000 names each) spent on such a listing.
pub const MAX_PAGES: usize = 20;
/// Directories whose lookups are counted.
pub const COUNTED_DIRS: usize = 256;

/// Lookups counted in one directory (kept by the namespace).
#[derive(Clone, Copy, Debug)]
pub struct Probes {
    since: Instant,
    count: u32,
}

impl Probes {
    pub fn new(now: Instant) -> Self {
        Probes {
            since: now,
            count: 0,
        }
    }

    /// Counts one more lookup at `now`; true for the `PROBES`-th within `ttl`.
    pub fn count(&mut self, now: Instant, ttl: std::time::Duration) -> bool {
        if now.saturating_duration_since(self.since) > ttl {
            *self = Probes::new(now);
        }
        self.count += 1;
        self.count == PROBES
    }
}

impl<S: ObjectStore> Fs<S> {
    /// Counts a lookup in `dir` that has to ask S3; the `PROBES`-th within the TTL starts a
    /// background listing of the directory.
    pub(crate) fn note_probe(&self, dir: Ino) {
        if !self.ns.note_probe(dir) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move { me.scan_dir(dir).await });
    }

    /// Lists `dir` (up to `MAX_PAGES` pages) and hands the listing to the namespace, which
    /// keeps it if nothing changed here meanwhile.
    async fn scan_dir(&self, dir: Ino) {
        let Ok(asked) = self.ns.ask(dir) else {
            return;
        };
        let prefix = asked.dir_key.clone();
        let mut st = ListState::new(prefix.clone(), HashSet::new());
        let mut out = VecDeque::new();
        for _ in 0..MAX_PAGES {
            if let Err(e) = self.list_page(&mut st, &mut out).await {
                log::debug!("background listing of {prefix:?} failed: {e}");
                return;
            }
            if st.done {
                break;
            }
        }
        if !st.done {
            log::debug!("{prefix:?} has more than {MAX_PAGES} pages: looked up name by name");
            return;
        }
        log::debug!("listed {prefix:?} ({} entries) for lookups", out.len());
        self.ns.keep_listing(dir, &asked, out.into());
    }
}
