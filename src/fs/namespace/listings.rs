//! Whole directory listings kept by the [`super::Namespace`]: every name of a directory at
//! once, with an index of case-folded names.
//!
//! They exist for what needs to see a whole directory: `readdir` within the metadata TTL, lookups
//! of many names in one directory (`dirscan`), and the case-insensitive mode, which must find
//! `MyFile.txt` when asked for `myfile.txt` (S3 cannot look a key up ignoring case) and pick one
//! winner among names that differ only in case. A listing is patched by changes made through
//! the mount. A name missing from it is trusted only briefly (the negative TTL), unless the
//! mount made the directory itself and has seen every change to it since (`authoritative`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::fs::inode::Ino;
use crate::fs::names::fold;
use crate::store::ObjectMeta;

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

/// A whole directory listing, by name, with an index of folded names.
pub struct DirListing {
    pub(super) fetched: Instant,
    /// Estimated bytes held (see [`entry_bytes`]).
    pub(super) bytes: u64,
    /// The directory was created through the mount (its listing started empty and every
    /// change since came through here): a name missing from it is absent.
    pub(super) authoritative: bool,
    normalize: bool,
    pub names: BTreeMap<String, Listed>,
    folds: HashMap<String, Vec<String>>,
}

impl DirListing {
    pub(super) fn new(
        entries: Vec<Listed>,
        normalize: bool,
        fetched: Instant,
        authoritative: bool,
    ) -> Self {
        let mut l = DirListing {
            fetched,
            bytes: 0,
            authoritative,
            normalize,
            names: BTreeMap::new(),
            folds: HashMap::new(),
        };
        for e in entries {
            l.insert(e);
        }
        l
    }

    pub fn insert(&mut self, e: Listed) {
        let name = e.name().to_string();
        self.bytes += entry_bytes(&e);
        match self.names.insert(name.clone(), e) {
            Some(old) => self.bytes = self.bytes.saturating_sub(entry_bytes(&old)),
            None => self
                .folds
                .entry(fold(&name, self.normalize))
                .or_default()
                .push(name),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.names.remove(name) {
            self.bytes = self.bytes.saturating_sub(entry_bytes(&old));
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

/// Estimated memory of one listed entry: its name twice (by name, and by folded name), its
/// key and ETag, and the maps' own overhead.
pub fn entry_bytes(e: &Listed) -> u64 {
    let meta = match e {
        Listed::File(_, m) => {
            let stored: usize = m
                .user_meta
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len() + 64)
                .sum();
            m.key.len() + m.etag.len() + 96 + stored
        }
        _ => 0,
    };
    (2 * e.name().len() + meta + 160) as u64
}

/// How many whole listings are kept.
pub const LISTING_CACHE_DIRS: usize = 64;
/// Directories with more entries than this are not kept as whole listings by `readdir`.
pub const LISTING_CACHE_MAX_ENTRIES: usize = 100_000;

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
            Instant::now(),
            false,
        );
        assert_eq!(l.group("docs").len(), 2);
        assert_eq!(l.collisions().len(), 1);
        l.remove("Docs");
        assert_eq!(l.group("docs").len(), 1);
        assert!(l.collisions().is_empty());
    }
}
