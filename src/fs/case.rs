//! Case-insensitive mode: names match ignoring case (Unicode case folding), are stored as first
//! written, and names that already collide in the bucket are shown once, never merged.
//!
//! * Lookup folds the name and looks for it among the directory's entries (the cached whole
//!   listing, patched by local changes, plus files not uploaded yet). S3 cannot look a key up
//!   ignoring case, so this needs the listing; it is cached for the metadata TTL.
//! * When several names fold alike (`MyFile.txt` and `myfile.txt`, or `Docs/` and `docs/`),
//!   the winner of `listing::winner` is shown (directories first, then byte order) and the
//!   others are hidden, with their contents. Each such group is logged once with every key
//!   and counted.
//! * A different spelling of an existing name resolves to an *alias inode*: its own inode
//!   number for the kernel, standing for the real one in every operation. The kernel needs
//!   that: its dentry cache is case-sensitive, and `rename("a.txt", "A.TXT")` on one inode
//!   would be a no-op for it, so the case-only rename would never reach us. Alias entries are
//!   never cached by the kernel (zero TTL), so a spelling always resolves afresh.
//! * With `--case-collision=error`, only the exact stored spelling resolves, and creating,
//!   making a directory, a symlink or renaming onto a name that differs only in case from an
//!   existing one fails with `EEXIST`: for users who want to be stopped rather than merged.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{FsError, FsResult, NsError};
use super::inode::Ino;
use super::listing::{Listed, winner};
use super::names::fold;
use super::{Attr, Fs};
use crate::store::ObjectStore;

/// Collisions seen so far: a count for stats and the groups already logged.
#[derive(Default)]
pub struct CaseLog {
    count: AtomicU64,
    groups: Mutex<HashSet<String>>,
    /// Directories too large to be listed whole, logged once each.
    too_big: Mutex<HashSet<String>>,
}

/// What to do when a name being created differs only in case from an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaseCollision {
    /// Use the existing file or directory (as macOS and Windows do).
    #[default]
    Resolve,
    /// Refuse with EEXIST.
    Error,
}

impl std::str::FromStr for CaseCollision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resolve" => Ok(CaseCollision::Resolve),
            "error" => Ok(CaseCollision::Error),
            _ => Err(format!("{s:?} is neither resolve nor error")),
        }
    }
}

impl std::fmt::Display for CaseCollision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CaseCollision::Resolve => "resolve",
            CaseCollision::Error => "error",
        })
    }
}

impl<S: ObjectStore> Fs<S> {
    pub(crate) fn folded(&self, name: &str) -> String {
        fold(name, self.config.normalize_names)
    }

    /// Collisions detected so far (groups in listings, and creates or renames that resolved
    /// to an existing name of another case).
    pub fn collision_count(&self) -> u64 {
        self.case_log.count.load(Ordering::Relaxed)
    }

    /// Logs a group of colliding keys, once per group.
    fn note_group(&self, dir_key: &str, names: &[String]) {
        let mut keys: Vec<String> = names.iter().map(|n| format!("{dir_key}{n}")).collect();
        keys.sort();
        let id = keys.join("\u{0}");
        let mut seen = self
            .case_log
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.len() < 100_000 && seen.insert(id) {
            self.case_log.count.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "case collision: {} are the same name ignoring case; showing {:?}, hiding the others",
                keys.iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                keys.first().map(String::as_str).unwrap_or("")
            );
        }
    }

    /// Logs a create or rename that met an existing name of another case.
    pub(crate) fn note_resolved(&self, what: &str, dir_key: &str, asked: &str, existing: &str) {
        self.case_log.count.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "case collision: {what} of {:?} met the existing {:?}",
            format!("{dir_key}{asked}"),
            format!("{dir_key}{existing}")
        );
    }

    /// Every entry of `dir` whose name folds like `name` (listed, and known here), by name.
    async fn variants(&self, dir: Ino, name: &str) -> FsResult<Vec<(String, bool)>> {
        let folded = self.folded(name);
        let listed = match self.ns.listing_group(dir, &folded) {
            Some(g) => g,
            None => match self.whole_listing(dir).await? {
                Some(all) => all
                    .into_iter()
                    .filter(|l| self.folded(l.name()) == folded)
                    .collect(),
                // Too large to list whole: only the exact spelling can be found.
                None => match self.resolve_exact(dir, name, false).await {
                    Ok(a) if a.stat.kind == super::attr::Kind::Dir => {
                        vec![Listed::Dir(name.to_string())]
                    }
                    Ok(_) => vec![Listed::Local(name.to_string(), 0)],
                    Err(e) if e.errno() == libc::ENOENT => Vec::new(),
                    Err(e) => return Err(e),
                },
            },
        };
        let mut group: Vec<(String, bool)> = listed
            .iter()
            .map(|l| (l.name().to_string(), l.is_dir()))
            .collect();
        // Entries not in S3 yet: files created here (the listing covers everything else;
        // other inodes in the table may be stale).
        // They win over a listed entry of the same name, as in `readdir`.
        for (name, ino) in self.ns.local_children(dir) {
            if self.folded(&name) == folded {
                let is_dir = self.ns.get(ino).is_some_and(|i| i.is_dir());
                group.retain(|(n, _)| *n != name);
                group.push((name, is_dir));
            }
        }
        Ok(group)
    }

    /// The stored name `name` resolves to in `dir` ignoring case, if any (the group winner).
    pub(crate) async fn ci_existing(&self, dir: Ino, name: &str) -> FsResult<Option<String>> {
        let group = self.variants(dir, name).await?;
        if group.len() > 1 {
            let dir_key = self.ns.key_of(dir, None).unwrap_or_default();
            let names: Vec<String> = group.iter().map(|(n, _)| n.clone()).collect();
            self.note_group(&dir_key, &names);
        }
        Ok(winner(&group, |e| e.1, |e| e.0.as_str()).map(|w| w.0.clone()))
    }

    /// Lookup in case-insensitive mode (see the module documentation).
    pub(crate) async fn ci_resolve(&self, parent: Ino, name: &str, count: bool) -> FsResult<Attr> {
        let Some(stored) = self.ci_existing(parent, name).await? else {
            return Err(FsError::not_found());
        };
        if stored != name && self.config.case_collision == CaseCollision::Error {
            return Err(FsError::not_found());
        }
        let attr = self
            .resolve_exact(parent, &stored, count && stored == name)
            .await?;
        if stored == name || !count {
            return Ok(attr);
        }
        log::debug!("{name:?} resolves to {stored:?} ignoring case");
        let alias = self.ns.alias(parent, name, attr.ino);
        let mut a = attr;
        a.ino = alias;
        a.alias = true;
        Ok(a)
    }

    /// Refuses to create `name` in `dir` when another spelling exists (error mode), or logs
    /// that the create resolves to it (resolve mode). Returns the existing spelling.
    pub(crate) async fn ci_check_create(
        &self,
        dir: Ino,
        name: &str,
        what: &str,
    ) -> FsResult<Option<String>> {
        if !self.config.case_insensitive {
            return Ok(None);
        }
        let Some(existing) = self.ci_existing(dir, name).await? else {
            return Ok(None);
        };
        if existing == name {
            return Ok(Some(existing));
        }
        let dir_key = self.ns.key_of(dir, None).unwrap_or_default();
        self.note_resolved(what, &dir_key, name, &existing);
        if self.config.case_collision == CaseCollision::Error {
            return Err(NsError::CaseCollision {
                name: name.to_string(),
                existing: existing.to_string(),
            }
            .into());
        }
        Ok(Some(existing))
    }

    /// A file opened for writing through another spelling: a copy from a case-sensitive
    /// system is about to merge two files into one.
    pub(crate) fn ci_note_open(&self, ino: Ino) {
        if let Some((dir_key, asked, existing)) = self.ns.alias_of(ino) {
            self.note_resolved("open for writing", &dir_key, &asked, &existing);
        }
    }

    /// The whole listing of `dir`, or `None` (logged once) when it is too large for the
    /// memory budget: there, names match exactly only and every spelling is listed.
    async fn whole_listing(&self, dir: Ino) -> FsResult<Option<Vec<Listed>>> {
        let listing = self.dir_listing(dir).await?;
        if listing.is_none() {
            let key = self.ns.key_of(dir, None).unwrap_or_default();
            let mut seen = self
                .case_log
                .too_big
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if seen.len() < 10_000 && seen.insert(key.clone()) {
                log::warn!(
                    "{key:?} has more than {} entries, more than --memory-limit lets one listing hold: names there match exactly, ignoring case does not apply",
                    self.ns.max_listing_entries()
                );
            }
        }
        Ok(listing)
    }

    /// The entries `readdir` shows: one winner per group of names equal ignoring case;
    /// `None` for a directory too large to list whole (then listed as in the default mode).
    pub(crate) async fn ci_entries(&self, dir: Ino) -> FsResult<Option<Vec<Listed>>> {
        let Some(listing) = self.whole_listing(dir).await? else {
            return Ok(None);
        };
        let local = self.ns.local_children(dir);
        let local_names: BTreeSet<&str> = local.iter().map(|(n, _)| n.as_str()).collect();
        let mut all: Vec<Listed> = listing
            .into_iter()
            .filter(|l| !local_names.contains(l.name()))
            .collect();
        all.extend(local.iter().map(|(n, i)| Listed::Local(n.clone(), *i)));
        let mut groups: std::collections::BTreeMap<String, Vec<Listed>> = Default::default();
        for l in all {
            groups.entry(self.folded(l.name())).or_default().push(l);
        }
        let dir_key = self.ns.key_of(dir, None).unwrap_or_default();
        let mut out = Vec::with_capacity(groups.len());
        for g in groups.values() {
            if g.len() > 1 {
                let names: Vec<String> = g.iter().map(|l| l.name().to_string()).collect();
                self.note_group(&dir_key, &names);
            }
            let is_dir = |l: &Listed| match l {
                Listed::Local(_, ino) => self.ns.get(*ino).is_some_and(|i| i.is_dir()),
                other => other.is_dir(),
            };
            if let Some(w) = winner(g, is_dir, |l| l.name()) {
                out.push(w.clone());
            }
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Some(out))
    }
}
