//! The shared state of one open file: where each byte comes from, and what is not uploaded yet.
//!
//! All handles on an inode share one [`OpenFile`], so a write through one descriptor is seen by
//! a read through another at once, as POSIX requires; other S3 clients see the last complete
//! object until the file is flushed. Each byte of the file comes from exactly one place:
//!
//! * the spool (`present`, or anywhere at or past `base.len`, where unwritten bytes are zeros);
//! * the S3 object the file was opened from (`base`, pinned by ETag), below `base.len`.
//!
//! So opening a 10 GiB file and changing one byte downloads nothing, and the upload copies the
//! unchanged parts server-side. Writes bump a generation per multipart part, so a part uploaded
//! early (while the application is still writing) and written again later is uploaded again.
//!
//! Locks: `state` is a `std::sync::Mutex`, held for bookkeeping and local `pread`s only, never
//! across S3 I/O or a write to disk. `data` is a `tokio::sync::Mutex` held by a write across
//! its spool write, journal record and bookkeeping, and by a truncation likewise, so the spool,
//! its journal and `state` change in one order while the disk I/O runs off the async workers
//! (see `spool::off_worker`). `upload` is a `tokio::sync::RwLock`: early part uploads hold it
//! shared, a flush holds it exclusively, so a flush waits for parts in flight and two flushes
//! never interleave. Order: `upload` before `data` before `state`; never the inode table while
//! holding `state`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::attr::Stat;
use super::parts::PartLayout;
use super::ranges::RangeSet;
use super::recovery::Record;
use super::spool::Spool;
use crate::store::UserMeta;

/// The S3 object whose bytes back the parts of the file not in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub key: String,
    pub etag: String,
    pub len: u64,
}

/// A part uploaded to the current multipart upload.
#[derive(Clone, Debug)]
pub struct UploadedPart {
    pub version: u64,
    pub len: u64,
    pub etag: String,
}

/// A multipart upload started while the file was being written.
#[derive(Clone, Debug)]
pub struct Multipart {
    pub upload_id: String,
    pub key: String,
    /// The metadata the upload was created with.
    pub meta: UserMeta,
    pub parts: BTreeMap<u64, UploadedPart>,
}

/// Where a range of the file is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Spool(Range<u64>),
    Base(Range<u64>),
}

pub struct FileState {
    /// The key the file is uploaded to.
    pub key: String,
    pub spool: Option<Arc<Spool>>,
    pub size: u64,
    pub base: Option<Base>,
    pub present: RangeSet,
    /// Content differs from what S3 holds.
    pub dirty: bool,
    /// Attributes (mode, owner, times, extended attributes) differ from what S3 holds.
    pub meta_dirty: bool,
    /// Bumped by every change of the attributes; an upload clears `meta_dirty` only if
    /// nothing changed them while it ran.
    pub meta_version: u64,
    pub stat: Stat,
    /// Metadata to carry over on upload (other tools' headers).
    pub foreign_meta: UserMeta,
    /// Bumped by every change; a flush clears `dirty` only if nothing changed meanwhile.
    pub version: u64,
    pub part_version: HashMap<u64, u64>,
    pub mp: Option<Multipart>,
    pub inflight: HashSet<u64>,
    /// The name was removed: nothing is uploaded any more.
    pub unlinked: bool,
    /// Bytes of the base object were returned to a reader (it may not move to a new version).
    pub served: bool,
    /// An upload failed for good and the data was set aside: every further use of this
    /// open file answers this error, so nothing written through it is silently lost.
    pub failed: Option<super::error::FsError>,
}

impl FileState {
    /// True when bytes of `r` (below `base.len`) must still come from S3.
    pub fn needs_base(&self, r: Range<u64>) -> bool {
        match &self.base {
            Some(b) if r.start < b.len => !self.present.covers(r.start..r.end.min(b.len)),
            _ => false,
        }
    }

    /// Splits `off..off+len` (clipped to the size) into spool and base pieces.
    pub fn plan(&self, off: u64, len: u64) -> Vec<Piece> {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return Vec::new();
        }
        let base_len = self.base.as_ref().map_or(0, |b| b.len).min(end);
        let mut pieces = Vec::new();
        if off < base_len {
            let mut pos = off;
            for gap in self.present.gaps(off..base_len) {
                if gap.start > pos {
                    pieces.push(Piece::Spool(pos..gap.start));
                }
                pieces.push(Piece::Base(gap.clone()));
                pos = gap.end;
            }
            if pos < base_len {
                pieces.push(Piece::Spool(pos..base_len));
            }
        }
        let spool_from = off.max(base_len);
        if spool_from < end {
            match pieces.last_mut() {
                Some(Piece::Spool(r)) if r.end == spool_from => r.end = end,
                _ => pieces.push(Piece::Spool(spool_from..end)),
            }
        }
        pieces
    }

    fn touch_parts(&mut self, layout: &PartLayout, r: Range<u64>) {
        self.version += 1;
        if r.start < r.end {
            for p in layout.index_of(r.start)..=layout.index_of(r.end - 1) {
                self.part_version.insert(p, self.version);
            }
        }
    }

    /// Records a write of `len` bytes at `off` already written to the spool.
    /// Returns the parts that became complete and can be uploaded early.
    pub fn wrote(&mut self, layout: &PartLayout, off: u64, len: u64, now: SystemTime) -> Vec<u64> {
        let end = off + len;
        self.present.insert(off..end);
        self.size = self.size.max(end);
        self.touch_parts(layout, off..end);
        self.dirty = true;
        self.stat.mtime = now;
        self.stat.ctime = now;
        let mut ready = Vec::new();
        if len == 0 {
            return ready;
        }
        for p in layout.index_of(off)..=layout.index_of(end - 1) {
            let r = layout.range(p);
            if end < r.end || self.inflight.contains(&p) || self.needs_base(r.clone()) {
                continue;
            }
            let current = self.part_version.get(&p).copied().unwrap_or(0);
            let uploaded = self
                .mp
                .as_ref()
                .and_then(|m| m.parts.get(&p))
                .map_or(0, |u| u.version);
            if uploaded < current {
                self.inflight.insert(p);
                ready.push(p);
            }
        }
        ready
    }

    /// Sets the size to `len` (truncate or extend with zeros); the caller changed the spool
    /// file's length (see `Spool::resize`).
    pub fn set_size(&mut self, layout: &PartLayout, len: u64, now: SystemTime) {
        if let Some(b) = &mut self.base
            && b.len > len
        {
            b.len = len;
        }
        self.present.truncate(len);
        let lo = self.size.min(len);
        let hi = self.size.max(len);
        // Every part from the new (or old) end onward changes.
        self.touch_parts(layout, lo..hi.max(lo + 1));
        self.size = len;
        self.dirty = true;
        self.stat.mtime = now;
        self.stat.ctime = now;
    }

    /// Journals the file's (and its base's) key after a rename.
    pub fn note_key(&self) {
        if let Some(sp) = &self.spool {
            sp.note(&Record::Key {
                key: self.key.clone(),
                base_key: self.base.as_ref().map(|b| b.key.clone()),
            });
        }
    }

    /// The name was removed: journals that nothing is to be recovered.
    pub fn mark_unlinked(&mut self) {
        self.unlinked = true;
        if let Some(sp) = &self.spool {
            sp.note(&Record::Unlinked);
        }
    }

    /// The metadata an upload of this file stores, naming `host` as the writer of the
    /// content (none when empty; another writer's name is not carried over).
    pub fn upload_meta_as(&self, host: &str) -> UserMeta {
        let mut m = self.stat.to_meta(Some(&self.foreign_meta));
        m.remove(super::conflict::META_HOST);
        if !host.is_empty() {
            m.insert(super::conflict::META_HOST.into(), host.to_string());
        }
        m
    }
}

/// See the module documentation.
pub struct OpenFile {
    state: Mutex<FileState>,
    pub upload: tokio::sync::RwLock<()>,
    /// Serializes changes to the spool's bytes and length (see the module documentation).
    pub data: tokio::sync::Mutex<()>,
    /// Serializes creation of the multipart upload among early part uploads.
    pub mp_create: tokio::sync::Mutex<()>,
}

impl OpenFile {
    /// A file backed by an existing object.
    pub fn for_object(key: String, stat: Stat, etag: String, meta: Option<&UserMeta>) -> Self {
        Self::new(FileState {
            key: key.clone(),
            spool: None,
            size: stat.size,
            base: Some(Base {
                key,
                etag,
                len: stat.size,
            }),
            present: RangeSet::new(),
            dirty: false,
            meta_dirty: false,
            meta_version: 0,
            stat,
            foreign_meta: meta.cloned().unwrap_or_default(),
            version: 0,
            part_version: HashMap::new(),
            mp: None,
            inflight: HashSet::new(),
            unlinked: false,
            served: false,
            failed: None,
        })
    }

    /// A file created here, not in S3 yet: it is uploaded (even empty) at its first flush.
    pub fn created(key: String, stat: Stat) -> Self {
        Self::new(FileState {
            key,
            spool: None,
            size: 0,
            base: None,
            present: RangeSet::new(),
            dirty: true,
            meta_dirty: false,
            meta_version: 0,
            stat,
            foreign_meta: UserMeta::new(),
            version: 1,
            part_version: HashMap::new(),
            mp: None,
            inflight: HashSet::new(),
            unlinked: false,
            served: false,
            failed: None,
        })
    }

    fn new(state: FileState) -> Self {
        OpenFile {
            state: Mutex::new(state),
            upload: tokio::sync::RwLock::new(()),
            data: tokio::sync::Mutex::new(()),
            mp_create: tokio::sync::Mutex::new(()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key changed because a parent directory was renamed.
    pub fn rekey(&self, key: &str) {
        let mut s = self.lock();
        s.key = key.to_string();
        s.note_key();
    }

    /// The object was copied from `old` to `new` (a rename) and now has `etag` there.
    pub fn moved(&self, old: &str, new: &str, etag: &str) {
        let mut s = self.lock();
        if s.key == old {
            s.key = new.to_string();
        }
        if let Some(b) = s.base.as_mut().filter(|b| b.key == old) {
            b.key = new.to_string();
            b.etag = etag.to_string();
        }
        s.note_key();
    }

    /// Attributes stored by a self-copy while this file was open (its content unchanged, now
    /// at `new_etag`): taken unless it has attribute changes of its own pending.
    pub fn adopt_meta(&self, stat: &Stat, meta: &UserMeta, old_etag: Option<&str>, new_etag: &str) {
        let mut s = self.lock();
        if !s.meta_dirty {
            s.stat.perm = stat.perm;
            s.stat.uid = stat.uid;
            s.stat.gid = stat.gid;
            if !s.dirty {
                (s.stat.atime, s.stat.mtime, s.stat.ctime) = (stat.atime, stat.mtime, stat.ctime);
            }
            s.foreign_meta = meta.clone();
        }
        if let Some(b) = s.base.as_mut()
            && Some(b.etag.as_str()) == old_etag
        {
            b.etag = new_etag.to_string();
        }
    }

    /// Moves an unchanged, unread open file from version `old` to `m` (another client's);
    /// false if it was read or changed meanwhile.
    pub fn repin(
        &self,
        old: &Base,
        m: &crate::store::ObjectMeta,
        d: &super::attr::Defaults,
    ) -> bool {
        let mut s = self.lock();
        if s.served || s.dirty || !s.present.is_empty() || s.base.as_ref() != Some(old) {
            return false;
        }
        s.base = Some(Base {
            key: old.key.clone(),
            etag: m.etag.clone(),
            len: m.size,
        });
        s.size = m.size;
        s.stat.size = m.size;
        s.stat.mtime = m.last_modified;
        if let Some(meta) = &m.user_meta {
            s.stat.apply_meta(meta, d);
            s.foreign_meta = meta.clone();
        }
        true
    }

    /// Current attributes (size and times reflect unflushed writes).
    pub fn stat(&self) -> Stat {
        let s = self.lock();
        let mut st = s.stat;
        st.size = s.size;
        st
    }

    pub fn is_dirty(&self) -> bool {
        let s = self.lock();
        (s.dirty || s.meta_dirty) && !s.unlinked && s.failed.is_none()
    }

    /// A file created here that nothing was written to yet (see `write`: not stored at a
    /// flush).
    pub fn never_written(&self) -> bool {
        let s = self.lock();
        s.base.is_none() && s.spool.is_none() && s.size == 0
    }

    /// The error this open file is poisoned with, if any.
    pub fn failure(&self) -> Option<super::error::FsError> {
        self.lock().failed.clone()
    }

    pub fn etag(&self) -> Option<String> {
        self.lock().base.as_ref().map(|b| b.etag.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::attr::{Defaults, Kind};

    const MIB: u64 = 1024 * 1024;

    fn st() -> Stat {
        let d = Defaults::for_user(0, 0);
        Stat::new(Kind::File, &d, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn plan_mixes_spool_and_base() {
        let of = OpenFile::for_object("k".into(), Stat { size: 100, ..st() }, "e".into(), None);
        let mut s = of.lock();
        let layout = PartLayout::new(8 * MIB);
        s.present.insert(10..20);
        s.set_size(&layout, 120, SystemTime::now());
        assert_eq!(
            s.plan(0, 200),
            vec![
                Piece::Base(0..10),
                Piece::Spool(10..20),
                Piece::Base(20..100),
                Piece::Spool(100..120)
            ]
        );
        s.set_size(&layout, 50, SystemTime::now());
        s.set_size(&layout, 60, SystemTime::now());
        // Truncating then extending gives zeros (spool), never the old bytes.
        assert_eq!(
            s.plan(40, 100),
            vec![Piece::Base(40..50), Piece::Spool(50..60)]
        );
    }

    #[test]
    fn complete_parts_become_ready_once() {
        let layout = PartLayout::new(8 * MIB);
        let of = OpenFile::created("k".into(), st());
        let mut s = of.lock();
        assert!(s.wrote(&layout, 0, 4 * MIB, SystemTime::now()).is_empty());
        assert_eq!(
            s.wrote(&layout, 4 * MIB, 5 * MIB, SystemTime::now()),
            vec![0]
        );
        // Part 0 is in flight: rewriting it does not queue it twice.
        assert!(s.wrote(&layout, 0, 8 * MIB, SystemTime::now()).is_empty());
    }

    #[test]
    fn parts_needing_base_bytes_wait_for_flush() {
        let layout = PartLayout::new(8 * MIB);
        let of = OpenFile::for_object(
            "k".into(),
            Stat {
                size: 20 * MIB,
                ..st()
            },
            "e".into(),
            None,
        );
        let mut s = of.lock();
        // Writing the tail of part 0 leaves its head in S3: not ready early.
        assert!(
            s.wrote(&layout, 4 * MIB, 4 * MIB, SystemTime::now())
                .is_empty()
        );
        assert!(s.needs_base(0..8 * MIB));
    }
}
