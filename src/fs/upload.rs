//! Uploads: from an open file's spool (and its base object) to one complete S3 object.
//!
//! A key only ever changes atomically: small files are one PUT, larger ones a multipart upload
//! that is completed only after every part succeeded, and aborted otherwise, so a failed flush
//! leaves the previous object exactly as it was. Part by part:
//!
//! * a part uploaded early at the generation it still has is reused;
//! * a part entirely unchanged from the base object is copied server-side (UploadPartCopy,
//!   pinned to the base ETag), so editing a few bytes of a large file uploads a few parts;
//! * any other part is assembled from the spool and the base object and uploaded.
//!
//! Metadata-only changes (chmod, chown, utimes) are a self-copy with new metadata (multipart
//! copy above 5 GiB); the data is not uploaded again.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::Fs;
use super::attr::{self, Stat};
use super::conflict::{OnConflict, conflict_key};
use super::error::{FsError, FsResult, HandleError, UploadError};
use super::openfile::{Base, Multipart, OpenFile, UploadedPart};
use super::parts::PartLayout;
use super::ranges::RangeSet;
use super::recovery::Record;
use super::spool::{Spool, SpoolBudget};
use crate::buffers::POOL;
use crate::store::{Expect, ObjectStore, UserMeta};

/// The uploader's state: how files are cut into parts, how many parts may be in memory at
/// once, the spool's disk budget, and counters for stats and a clean stop.
pub struct Uploader {
    layout: PartLayout,
    /// Bounds parts in memory at once (early and flush uploads alike).
    part_slots: Arc<tokio::sync::Semaphore>,
    spool_budget: SpoolBudget,
    /// Spool files made ahead of need.
    spools: std::sync::Arc<super::spool::SpoolPool>,
    /// Files whose upload failed for good (see `give_up`).
    failed: AtomicU64,
    /// Uploads running now (flushes and fsyncs), for a clean shutdown.
    running: AtomicU64,
}

impl Uploader {
    /// A new, empty spool file (see `SpoolPool`).
    pub fn new_spool(&self) -> FsResult<super::spool::Spool> {
        self.spools.take()
    }

    pub fn new(config: &super::FsConfig, shares: &crate::cache::MemoryShares) -> Self {
        let slots = config
            .upload_concurrency
            .min((shares.uploads / config.part_size.max(1)) as usize)
            .max(1);
        Uploader {
            layout: PartLayout::new(config.part_size),
            part_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            spool_budget: SpoolBudget::new(config.max_spool_bytes, config.spool_wait),
            spools: super::spool::SpoolPool::new(config.dir.spool()),
            failed: AtomicU64::new(0),
            running: AtomicU64::new(0),
        }
    }

    pub fn layout(&self) -> &PartLayout {
        &self.layout
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn count_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn running(&self) -> u64 {
        self.running.load(Ordering::SeqCst)
    }

    pub fn spool_used(&self) -> u64 {
        self.spool_budget.used()
    }

    /// Waits for spool space for `spool` to reach `end` bytes (ENOSPC after the wait).
    pub async fn grow_spool(&self, spool: &Spool, end: u64) -> FsResult<()> {
        self.spool_budget.grow(spool, end).await
    }

    /// `grow_spool` without waiting: false when the budget has no room now.
    pub fn try_grow_spool(&self, spool: &Spool, end: u64) -> bool {
        self.spool_budget.try_grow(spool, end)
    }

    pub fn release_spool(&self, spool: &Spool) {
        self.spool_budget.release(spool);
    }
}

/// What an upload stored.
#[derive(Clone, Debug)]
pub struct Stored {
    pub etag: String,
    pub meta: UserMeta,
    pub stat: Stat,
}

/// An upload's frozen view of the file.
struct Snapshot {
    key: String,
    size: u64,
    base: Option<Base>,
    present: RangeSet,
    version: u64,
    part_version: std::collections::HashMap<u64, u64>,
    mp: Option<Multipart>,
    stat: Stat,
    meta: UserMeta,
    meta_version: u64,
    spool: Option<Arc<Spool>>,
    dirty: bool,
    /// What the key must hold for this upload to replace it (see `conflict`).
    expect: Expect,
}

impl Snapshot {
    /// Freezes the file's state for an upload (taking the parts sent early); `None` when there
    /// is nothing to store. The metadata names `host` as the writer.
    fn take(of: &OpenFile, host: &str) -> FsResult<Option<Snapshot>> {
        let mut s = of.lock();
        // An upload that ran while this one waited for the lock failed for good: this
        // caller's data was in it, so it gets the error too (a flush of a dup'ed or
        // inherited descriptor must not report success for what was not stored).
        if let Some(e) = &s.failed {
            return Err(e.clone());
        }
        if s.unlinked || (!s.dirty && !s.meta_dirty) {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            key: s.key.clone(),
            size: s.size,
            base: s.base.clone(),
            present: s.present.clone(),
            version: s.version,
            part_version: s.part_version.clone(),
            mp: s.mp.take(),
            stat: s.stat,
            meta: s.upload_meta_as(host),
            meta_version: s.meta_version,
            spool: s.spool.clone(),
            dirty: s.dirty,
            expect: Expect::Any,
        }))
    }

    /// Tells the open file the snapshot is stored as `etag`: its new base, and which changes
    /// are clean now (those made while the upload ran are not).
    fn note_stored(&self, of: &OpenFile, etag: &str) {
        let mut s = of.lock();
        let old_len = self.base.as_ref().map_or(0, |b| b.len);
        if self.size > old_len {
            s.present.insert(old_len..self.size);
        }
        s.base = Some(Base {
            key: self.key.clone(),
            etag: etag.to_string(),
            len: self.size,
        });
        if let Some(sp) = &s.spool {
            sp.note(&Record::Stored {
                key: self.key.clone(),
                etag: etag.to_string(),
                len: self.size,
                clean: s.version == self.version,
            });
        }
        if s.version == self.version {
            s.dirty = false;
            s.part_version.clear();
        }
        // Attributes changed while the upload ran (chmod, setxattr) are stored by the next.
        if s.meta_version == self.meta_version {
            s.meta_dirty = false;
            s.foreign_meta = self.meta.clone();
        }
    }
}

enum PartJob {
    Reuse(String),
    Copy(Range<u64>),
    Upload(Range<u64>),
}

/// True when two metadata sets differ in anything but the times.
fn differs_beyond_times(a: &UserMeta, b: &UserMeta) -> bool {
    let strip = |m: &UserMeta| -> UserMeta {
        m.iter()
            .filter(|(k, _)| {
                ![attr::META_MTIME, attr::META_CTIME, attr::META_ATIME].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    strip(a) != strip(b)
}

impl<S: ObjectStore> Fs<S> {
    /// The part layout of uploads.
    pub(crate) fn layout(&self) -> &PartLayout {
        self.uploader.layout()
    }

    /// Uploads the file if it has changes. `None` when there was nothing to do.
    pub(crate) async fn upload(&self, of: &Arc<OpenFile>) -> FsResult<Option<Stored>> {
        let _exclusive = of.upload.write().await;
        self.upload_held(of).await
    }

    /// [`Self::upload`] for a caller that holds the file's upload lock.
    pub(crate) async fn upload_held(&self, of: &Arc<OpenFile>) -> FsResult<Option<Stored>> {
        let _running = Running::start(&self.uploader.running);
        let Some(mut snap) = Snapshot::take(of, &self.config.conflicts.host)? else {
            return Ok(None);
        };
        snap.expect = self.expect_for(&snap.key, snap.base.as_ref());
        let etag = match self.send(&snap).await {
            Ok(etag) => etag,
            Err(e) => {
                let e = self.conflict_of(&snap.key, &snap.expect, e).await;
                if e.is_conflict() && self.config.conflicts.mode == OnConflict::KeepBoth {
                    return Err(self.keep_both(snap, e).await);
                }
                return Err(e);
            }
        };
        log::debug!("stored {:?} ({} bytes, ETag {etag})", snap.key, snap.size);
        snap.note_stored(of, &etag);
        let mut stat = snap.stat;
        stat.size = snap.size;
        Ok(Some(Stored {
            etag,
            meta: snap.meta,
            stat,
        }))
    }

    /// Stores the snapshot the cheapest way its changes allow; returns the new ETag.
    async fn send(&self, snap: &Snapshot) -> FsResult<String> {
        if !snap.dirty {
            match &snap.base {
                Some(b) if b.key == snap.key => self.copy_with_meta(&snap.key, b, &snap.meta).await,
                _ => self.upload_whole(snap).await,
            }
        } else if snap.size <= self.layout().base() {
            if let Some(mp) = &snap.mp {
                // The file shrank below one part after parts were sent early.
                let _ = self.store.abort_multipart(&mp.key, &mp.upload_id).await;
            }
            self.upload_whole(snap).await
        } else {
            self.upload_multipart(snap).await
        }
    }

    /// Stores the losing version of a conflict beside the winner, as `NAME.conflict-HOST-TIME`:
    /// the error that says so, or `conflict` itself when that failed too.
    async fn keep_both(&self, mut snap: Snapshot, conflict: FsError) -> FsError {
        let key = std::mem::take(&mut snap.key);
        let host = &self.config.conflicts.host;
        snap.key = conflict_key(&key, host, std::time::SystemTime::now());
        snap.mp = None;
        snap.dirty = true;
        snap.expect = Expect::Absent;
        match self.send(&snap).await {
            Ok(_) => {
                log::warn!("{conflict}; this version is stored as {:?}", snap.key);
                UploadError::KeptBoth {
                    key,
                    kept_as: snap.key,
                }
                .into()
            }
            Err(e) => {
                log::warn!("could not store the losing version of {key:?} beside it: {e}");
                conflict
            }
        }
    }

    /// One PUT of the whole file, on the snapshot's condition.
    async fn upload_whole(&self, snap: &Snapshot) -> FsResult<String> {
        if snap.size > self.layout().base() {
            return self.upload_multipart(snap).await;
        }
        let _permit = self.uploader.part_slots.acquire().await.map_err(closed)?;
        let body = self.assemble(snap, 0..snap.size).await?;
        self.check_before_upload(&snap.key, &snap.expect, false)
            .await?;
        let put = self
            .store
            .put_if(&snap.key, body, &snap.meta, &snap.expect)
            .await
            .map_err(|e| FsError::from_store(e, &snap.key))?;
        Ok(put.etag)
    }

    /// Bytes `r` of the file as the snapshot sees it.
    async fn assemble(&self, snap: &Snapshot, r: Range<u64>) -> FsResult<Bytes> {
        let over_base = snap.base.as_ref().is_some_and(|b| r.start < b.len);
        if let Some(sp) = &snap.spool
            && !over_base
        {
            return sp.read_bytes(r.start, (r.end - r.start) as usize);
        }
        let mut buf = POOL.zeroed((r.end - r.start) as usize);
        if let Some(sp) = &snap.spool {
            sp.read_at(r.start, &mut buf)?;
        }
        if let Some(b) = &snap.base {
            let below = r.start..r.end.min(b.len);
            for gap in snap.present.gaps(below) {
                let data = self
                    .store
                    .get_range(&b.key, gap.clone(), Some(&b.etag))
                    .await
                    .map_err(|e| FsError::from_store(e, &b.key))?;
                if data.len() as u64 != gap.end - gap.start {
                    return Err(HandleError::Short {
                        key: b.key.clone(),
                        got: data.len() as u64,
                        want: gap.end - gap.start,
                        at: gap.start,
                    }
                    .into());
                }
                let at = (gap.start - r.start) as usize;
                buf[at..at + data.len()].copy_from_slice(&data);
            }
        }
        Ok(POOL.freeze(buf))
    }

    async fn upload_multipart(&self, snap: &Snapshot) -> FsResult<String> {
        let key = &snap.key;
        let (upload_id, created_meta, uploaded) = match &snap.mp {
            Some(mp) if mp.key == *key => (mp.upload_id.clone(), mp.meta.clone(), mp.parts.clone()),
            other => {
                if let Some(stale) = other {
                    let _ = self
                        .store
                        .abort_multipart(&stale.key, &stale.upload_id)
                        .await;
                }
                let id = self
                    .store
                    .create_multipart(key, &snap.meta)
                    .await
                    .map_err(|e| FsError::from_store(e, key))?;
                (id, snap.meta.clone(), BTreeMap::new())
            }
        };
        let result = self.upload_parts(snap, &upload_id, &uploaded).await;
        let result = match result {
            Ok(parts) => self.complete_checked(snap, &upload_id, &parts).await,
            Err(e) => Err(e),
        };
        let etag = match result {
            Ok(put) => put.etag,
            Err(e) => {
                if let Err(abort) = self.store.abort_multipart(key, &upload_id).await {
                    log::warn!("could not abort upload {upload_id} of {key:?}: {abort}");
                }
                return Err(e);
            }
        };
        if differs_beyond_times(&created_meta, &snap.meta) {
            // Attributes changed after the upload started (e.g. fchmod before close).
            let base = Base {
                key: key.clone(),
                etag,
                len: snap.size,
            };
            return self.copy_with_meta(key, &base, &snap.meta).await;
        }
        Ok(etag)
    }

    /// Completes the snapshot's multipart upload on its condition, checked first by a HEAD
    /// whatever the server does (see `conflict`).
    async fn complete_checked(
        &self,
        snap: &Snapshot,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> FsResult<crate::store::PutResult> {
        self.check_before_upload(&snap.key, &snap.expect, true)
            .await?;
        self.store
            .complete_multipart_if(&snap.key, upload_id, parts, &snap.expect)
            .await
            .map_err(|e| FsError::from_store(e, &snap.key))
    }

    /// Uploads or copies every part; returns `(number, etag)` in order.
    async fn upload_parts(
        &self,
        snap: &Snapshot,
        upload_id: &str,
        uploaded: &BTreeMap<u64, UploadedPart>,
    ) -> FsResult<Vec<(i32, String)>> {
        let count = self.layout().count(snap.size).max(1);
        let mut jobs = Vec::with_capacity(count as usize);
        for p in 0..count {
            let full = self.layout().range(p);
            let r = full.start..full.end.min(snap.size);
            let version = snap.part_version.get(&p).copied().unwrap_or(0);
            let job = match uploaded.get(&p) {
                Some(u) if u.version >= version && u.len == r.end - r.start => {
                    PartJob::Reuse(u.etag.clone())
                }
                _ => match &snap.base {
                    Some(b)
                        if r.end <= b.len
                            && r.start < r.end
                            && !snap.present.overlaps(r.clone()) =>
                    {
                        PartJob::Copy(r)
                    }
                    _ => PartJob::Upload(r),
                },
            };
            jobs.push((p, job));
        }
        let concurrency = self.config.upload_concurrency.max(1);
        let mut parts: Vec<(i32, String)> = stream::iter(jobs)
            .map(|(p, job)| async move {
                let number = (p + 1) as i32;
                let etag = match job {
                    PartJob::Reuse(etag) => etag,
                    PartJob::Copy(r) => {
                        let _permit = self.uploader.part_slots.acquire().await.map_err(closed)?;
                        let b = snap.base.as_ref().expect("copy jobs have a base");
                        self.store
                            .upload_part_copy(&snap.key, upload_id, number, &b.key, r, &b.etag)
                            .await
                            .map_err(|e| FsError::from_store(e, &b.key))?
                    }
                    PartJob::Upload(r) => {
                        let _permit = self.uploader.part_slots.acquire().await.map_err(closed)?;
                        let body = self.assemble(snap, r).await?;
                        self.store
                            .upload_part(&snap.key, upload_id, number, body)
                            .await
                            .map_err(|e| FsError::from_store(e, &snap.key))?
                    }
                };
                Ok::<_, FsError>((number, etag))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        parts.sort_by_key(|(n, _)| *n);
        Ok(parts)
    }

    /// Rewrites an object's metadata without uploading its data again.
    pub(crate) async fn copy_with_meta(
        &self,
        key: &str,
        base: &Base,
        meta: &UserMeta,
    ) -> FsResult<String> {
        if base.len <= self.config.max_single_copy {
            return self
                .store
                .copy(key, key, Some(meta), Some(&base.etag))
                .await
                .map(|p| p.etag)
                .map_err(|e| FsError::from_store(e, key));
        }
        self.multipart_copy(&base.key, key, base, meta).await
    }

    /// Copies an object of any size with UploadPartCopy (objects over 5 GiB need it).
    pub(crate) async fn multipart_copy(
        &self,
        src: &str,
        dst: &str,
        base: &Base,
        meta: &UserMeta,
    ) -> FsResult<String> {
        let id = self
            .store
            .create_multipart(dst, meta)
            .await
            .map_err(|e| FsError::from_store(e, dst))?;
        let count = self.layout().count(base.len);
        let result: FsResult<Vec<(i32, String)>> = stream::iter(0..count)
            .map(|p| {
                let id = id.clone();
                async move {
                    let full = self.layout().range(p);
                    let r = full.start..full.end.min(base.len);
                    let etag = self
                        .store
                        .upload_part_copy(dst, &id, (p + 1) as i32, src, r, &base.etag)
                        .await
                        .map_err(|e| FsError::from_store(e, src))?;
                    Ok(((p + 1) as i32, etag))
                }
            })
            .buffer_unordered(self.config.upload_concurrency.max(1))
            .try_collect()
            .await;
        let result = match result {
            Ok(mut parts) => {
                parts.sort_by_key(|(n, _)| *n);
                self.store
                    .complete_multipart(dst, &id, &parts)
                    .await
                    .map_err(|e| FsError::from_store(e, dst))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(p) => Ok(p.etag),
            Err(e) => {
                let _ = self.store.abort_multipart(dst, &id).await;
                Err(e)
            }
        }
    }

    /// Uploads part `p` of a file still being written, if it is still as it was.
    pub(crate) async fn upload_part_early(self: Arc<Self>, of: Arc<OpenFile>, p: u64) {
        let _shared = of.upload.read().await;
        let r = self.layout().range(p);
        let done = |of: &OpenFile| {
            of.lock().inflight.remove(&p);
        };
        let Ok(_permit) = self.uploader.part_slots.acquire().await else {
            return done(&of);
        };
        let (version, key, spool) = {
            let s = of.lock();
            let ok =
                !s.unlinked && s.failed.is_none() && s.size >= r.end && !s.needs_base(r.clone());
            match (&s.spool, ok) {
                (Some(sp), true) => (
                    s.part_version.get(&p).copied().unwrap_or(0),
                    s.key.clone(),
                    sp.clone(),
                ),
                _ => {
                    drop(s);
                    return done(&of);
                }
            }
        };
        let body = match spool.read_bytes(r.start, (r.end - r.start) as usize) {
            Ok(b) if of.lock().part_version.get(&p).copied().unwrap_or(0) == version => b,
            _ => return done(&of),
        };
        let upload_id = match self.ensure_multipart(&of).await {
            Ok(id) => id,
            Err(e) => {
                log::debug!("early upload of part {p} of {key:?} not started: {e}");
                return done(&of);
            }
        };
        let result = self
            .store
            .upload_part(&key, &upload_id, (p + 1) as i32, body)
            .await;
        let mut s = of.lock();
        s.inflight.remove(&p);
        match result {
            Ok(etag) => {
                if let Some(mp) = s.mp.as_mut().filter(|m| m.upload_id == upload_id) {
                    let newer = mp.parts.get(&p).is_none_or(|u| u.version <= version);
                    if newer {
                        mp.parts.insert(
                            p,
                            UploadedPart {
                                version,
                                len: r.end - r.start,
                                etag,
                            },
                        );
                    }
                }
            }
            Err(e) => {
                log::debug!("early upload of part {p} of {key:?} failed, retried at flush: {e}")
            }
        }
    }

    /// The file's current multipart upload, created on first need.
    async fn ensure_multipart(&self, of: &OpenFile) -> FsResult<String> {
        let _one = of.mp_create.lock().await;
        let (key, meta) = {
            let s = of.lock();
            if let Some(mp) = &s.mp {
                return Ok(mp.upload_id.clone());
            }
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
            (s.key.clone(), s.upload_meta_as(&self.config.conflicts.host))
        };
        let id = self
            .store
            .create_multipart(&key, &meta)
            .await
            .map_err(|e| FsError::from_store(e, &key))?;
        let installed = {
            let mut s = of.lock();
            if s.unlinked || s.key != key {
                false
            } else {
                s.mp = Some(Multipart {
                    upload_id: id.clone(),
                    key: key.clone(),
                    meta,
                    parts: BTreeMap::new(),
                });
                true
            }
        };
        if !installed {
            let _ = self.store.abort_multipart(&key, &id).await;
            return Err(UploadError::Moved.into());
        }
        Ok(id)
    }
}

/// Counts an upload as running while alive.
struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    fn start(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Running(c)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn closed(_: tokio::sync::AcquireError) -> FsError {
    UploadError::ShuttingDown.into()
}
