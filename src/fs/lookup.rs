//! Finding names: lookup and getattr, from what the namespace knows or from S3.
//!
//! A name `n` in a directory with prefix `p` is a directory when anything exists under
//! `p + n + "/"` (a marker object or any key below: "implicit" directories have no marker),
//! and a file or symlink when the object `p + n` exists. Both can exist at once in S3; the
//! directory shadows the file, as in every S3 filesystem, so the tree stays a tree. A probe
//! asks both questions in parallel (a HEAD and a one-key LIST), so a miss costs one round trip.
//!
//! What S3 answers goes to the namespace, which keeps it for the metadata TTL (an absent name
//! for the shorter negative TTL) and never lets it overwrite a change made here since.

use std::ffi::OsStr;

use super::error::{FsError, FsResult, NsError};
use super::inode::Ino;
use super::listing::Listed;
use super::names::{self, child_key, child_prefix};
use super::namespace::{Applied, Asked, Cached, Found, HeadPlan};
use super::{Attr, Fs};
use crate::store::{ListRequest, ObjectStore, StoreError};

/// How often a lookup asks again when a rename moved its directory while S3 was asked.
const RETRIES: usize = 3;

impl<S: ObjectStore> Fs<S> {
    /// Looks `name` up in `parent` and counts one kernel lookup on the result.
    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let name = names::name_from_os(name)?;
        let parent = self.ns.canon(parent);
        let found = self.resolve(parent, name, true).await;
        self.trim_names();
        found
    }

    /// [`Self::lookup`] answered at once on the calling thread (a FUSE thread) when the
    /// namespace knows the answer: a fresh entry, or a name known absent. `None` when S3 must
    /// be asked, and in case-insensitive mode (other spellings resolve afresh each time).
    pub fn lookup_now(&self, parent: Ino, name: &OsStr) -> Option<FsResult<Attr>> {
        if self.config.case_insensitive {
            return None;
        }
        let name = names::name_from_os(name).ok()?;
        let parent = self.ns.canon(parent);
        let found = match self.ns.cached(parent, name, true).ok()? {
            Cached::Hit(a) => Ok(a),
            Cached::Absent => {
                names::fits(&child_key(&self.ns.dir_key(parent).ok()?, name)).ok()?;
                Err(FsError::not_found())
            }
            Cached::Listed(..) | Cached::Ask(_) => return None,
        };
        self.trim_names();
        Some(found)
    }

    /// `Some` when the namespace knows `name` is not in `parent` and its key would fit in S3
    /// (a name too long answers `ENAMETOOLONG` on the async path).
    pub(crate) fn known_absent(&self, parent: Ino, name: &str) -> Option<()> {
        match self.ns.cached(parent, name, false).ok()? {
            Cached::Absent => {}
            _ => return None,
        }
        names::fits(&child_key(&self.ns.dir_key(parent).ok()?, name)).ok()
    }

    /// Gives back `n` kernel lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.ns.forget(ino, n);
    }

    /// Counts one kernel lookup (for entries returned by readdirplus).
    /// Finds `name` in `parent` (ignoring case in case-insensitive mode).
    /// A name whose key would not fit in S3 is `ENAMETOOLONG`, not `ENOENT`, so a create of it
    /// fails before anything is made; found names need no check (their key exists).
    pub(crate) async fn resolve(&self, parent: Ino, name: &str, count: bool) -> FsResult<Attr> {
        let found = if self.config.case_insensitive {
            self.ci_resolve(parent, name, count).await
        } else {
            self.resolve_exact(parent, name, count).await
        };
        match found {
            Err(e) if e.errno() == libc::ENOENT => {
                names::fits(&child_key(&self.ns.dir_key(parent)?, name))?;
                Err(e)
            }
            other => other,
        }
    }

    /// Finds exactly `name` in `parent`, from what the namespace knows, else from S3.
    pub(crate) async fn resolve_exact(
        &self,
        parent: Ino,
        name: &str,
        count: bool,
    ) -> FsResult<Attr> {
        let mut listed_again = false;
        for _ in 0..=RETRIES {
            let (asked, found) = match self.ns.cached(parent, name, count)? {
                Cached::Hit(a) => return Ok(a),
                Cached::Absent => return Err(FsError::not_found()),
                Cached::Listed(entry, asked) => {
                    let found = self.ask_listed(parent, &asked, entry).await?;
                    (asked, found)
                }
                Cached::Ask(_)
                    if !listed_again && self.revalidate_by_listing(parent, name).await =>
                {
                    // A known file past its TTL, confirmed (or not) with its siblings by a
                    // listing: ask the namespace again.
                    listed_again = true;
                    continue;
                }
                Cached::Ask(asked) => {
                    self.note_probe(parent);
                    let found = self.probe(&asked.dir_key, name).await?;
                    (asked, found)
                }
            };
            match self.ns.apply(&asked, name, found, count)? {
                Applied::Attr(a) => return Ok(a),
                Applied::Absent => return Err(FsError::not_found()),
                Applied::Again => continue,
            }
        }
        Err(NsError::KeptMoving(name.to_string()).into())
    }

    /// What a fresh listing of the directory says about a listed name: directories and (with
    /// --fast-listing, or metadata fetched ahead by `prefetch_meta`) files at once; else the
    /// file's stored attributes with a HEAD.
    async fn ask_listed(&self, parent: Ino, asked: &Asked, entry: Listed) -> FsResult<Found> {
        let fast = self.config.fast_listing;
        Ok(match entry {
            Listed::Dir(_) if fast => Found::Dir { marker: None },
            Listed::File(_, meta) if fast || meta.user_meta.is_some() => Found::File(meta),
            Listed::File(_, meta) if !meta.etag.is_empty() => {
                self.prefetch_meta(parent);
                match self.store.head(&meta.key).await {
                    Ok(m) => Found::File(m),
                    Err(StoreError::NotFound) => Found::Nothing,
                    Err(e) => return Err(FsError::from_store(e, &meta.key)),
                }
            }
            other => self.probe(&asked.dir_key, other.name()).await?,
        })
    }

    /// Asks S3 what `name` is in the directory `dir_key`: HEAD and LIST in parallel.
    pub(crate) async fn probe(&self, dir_key: &str, name: &str) -> FsResult<Found> {
        let key = child_key(dir_key, name);
        let prefix = child_prefix(dir_key, name);
        let mut req = ListRequest::dir(&prefix);
        req.max_keys = 1;
        let (head, list) = tokio::join!(self.store.head(&key), self.store.list(&req));
        let list = list.map_err(|e| FsError::from_store(e, &prefix))?;
        if !list.objects.is_empty() || !list.prefixes.is_empty() {
            let marker = match list.objects.first() {
                // Listed with its metadata (from the attribute cache): no HEAD needed.
                Some(o) if o.key == prefix && o.user_meta.is_some() => Some(o.clone()),
                Some(o) if o.key == prefix => match self.store.head(&prefix).await {
                    Ok(m) => Some(m),
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(FsError::from_store(e, &prefix)),
                },
                _ => None,
            };
            if let Ok(file) = &head {
                log::debug!("directory {prefix:?} shadows the object {:?}", file.key);
            }
            return Ok(Found::Dir { marker });
        }
        match head {
            Ok(meta) => Ok(Found::File(meta)),
            Err(StoreError::NotFound) => Ok(Found::Nothing),
            Err(e) => Err(FsError::from_store(e, &key)),
        }
    }

    /// Attributes of `ino`, checked against S3 when older than the TTL, under the number the
    /// kernel asked with (in case-insensitive mode another spelling's inode stands for the
    /// file's own, whose attributes it reports).
    pub async fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        self.checked_attr(ino, true).await
    }

    /// [`Self::getattr`] for one file's own check (an open's close-to-open): straight to a
    /// HEAD when it is due, never a listing of its directory, which would cost a LIST page of
    /// the siblings for every open.
    pub(crate) async fn head_checked_attr(&self, ino: Ino) -> FsResult<Attr> {
        self.checked_attr(ino, false).await
    }

    /// The attributes of `ino`, asked of S3 when expired: with a HEAD, or (`by_listing`, for
    /// a storm of expired siblings) first by revalidating its directory's entries by listing.
    async fn checked_attr(&self, ino: Ino, by_listing: bool) -> FsResult<Attr> {
        let asked = ino;
        let ino = self.ns.canon(ino);
        let mut plan = self.ns.head_plan(ino)?;
        if by_listing
            && let HeadPlan::Head { kind, .. } = &plan
            && *kind != super::attr::Kind::Dir
            && let Some((dir, name)) = self.ns.link_of(ino)
            && self.revalidate_by_listing(dir, &name).await
        {
            plan = self.ns.head_plan(ino)?;
        }
        let mut attr = match &plan {
            HeadPlan::Head { key, .. } => {
                let answer = self.store.head(key).await;
                self.ns.apply_head(ino, &plan, answer)?
            }
            _ => self.ns.attr(ino, false)?,
        };
        attr.ino = asked;
        Ok(attr)
    }

    /// The child `name` of `parent`, resolved (from cache or S3), as the namespace has it now.
    pub(crate) async fn child_inode(
        &self,
        parent: Ino,
        name: &str,
    ) -> FsResult<super::namespace::Inode> {
        let attr = self.resolve(parent, name, false).await?;
        let ino = self.ns.canon(attr.ino);
        self.ns.get(ino).ok_or_else(FsError::not_found)
    }
}
