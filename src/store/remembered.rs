//! A store that remembers the user metadata of objects in the persistent attribute cache
//! (`cache::attrs`) and hands it back with LIST pages.
//!
//! A LIST tells every key's ETag and date but none of its metadata, which is why exact
//! attributes used to cost a HEAD per file. [`Remembered`] wraps the store the filesystem
//! uses: every HEAD's answer, every upload (the metadata sent, the ETag S3 returned), every
//! copy with new metadata (chmod, rename) is written to the cache, and every listed object the cache knows at its
//! ETag and date comes back with its metadata filled in, as if a HEAD had been made. The
//! filesystem needs to know nothing of it: an object listed with metadata needs no HEAD there
//! already. Deleting a key forgets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::{
    Expect, ListPage, ListRequest, ObjectMeta, ObjectStore, PutResult, StoreResult, UserMeta,
};
use crate::cache::attrs::AttrCache;

/// A store whose metadata answers are remembered in an attribute cache.
pub struct Remembered<S> {
    inner: S,
    /// `None` with the cache turned off (`--attr-cache-size 0`): requests pass through.
    cache: Option<Arc<AttrCache>>,
    /// The metadata each open multipart upload was started with, and when (S3 dates the
    /// object by its start), by upload id.
    uploads: Mutex<HashMap<String, (UserMeta, SystemTime)>>,
}

impl<S: ObjectStore> Remembered<S> {
    pub fn new(inner: S, cache: Option<Arc<AttrCache>>) -> Self {
        Remembered {
            inner,
            cache,
            uploads: Mutex::new(HashMap::new()),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn cache(&self) -> Option<&Arc<AttrCache>> {
        self.cache.as_ref()
    }

    /// Tells the cache, when there is one.
    fn tell(&self, f: impl FnOnce(&AttrCache)) {
        if let Some(c) = &self.cache {
            f(c);
        }
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, (UserMeta, SystemTime)>> {
        self.uploads.lock().expect("uploads")
    }
}

impl<S: ObjectStore> ObjectStore for Remembered<S> {
    crate::forward_store!(inner; get_range, get_range_split, upload_part, upload_part_copy);
    crate::forward_store!(inner; list_multipart_uploads);

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let m = self.inner.head(key).await?;
        if let Some(meta) = &m.user_meta {
            self.tell(|c| c.remember_head(&m.key, &m.etag, m.last_modified, meta));
        }
        Ok(m)
    }

    /// The page, with what the cache knows filled in (SQLite reads, on the blocking pool).
    async fn list(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let mut page = self.inner.list(req).await?;
        let Some(c) = self.cache.clone() else {
            return Ok(page);
        };
        tokio::task::spawn_blocking(move || {
            c.fill(&mut page.objects);
            page
        })
        .await
        .map_err(|e| super::StoreError::Other(format!("attribute cache: {e}")))
    }

    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        let started = SystemTime::now();
        let r = self.inner.put_if(key, body, meta, expect).await?;
        self.tell(|c| c.remember_stored(key, &r.etag, started, meta));
        Ok(r)
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        let started = SystemTime::now();
        let id = self.inner.create_multipart(key, meta).await?;
        if self.cache.is_some() {
            self.uploads().insert(id.clone(), (meta.clone(), started));
        }
        Ok(id)
    }

    async fn complete_multipart_if(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        // Taken first: a failed completion is not tried again under this id.
        let started = self.uploads().remove(upload_id);
        let r = self
            .inner
            .complete_multipart_if(key, upload_id, parts, expect)
            .await?;
        if let Some((meta, at)) = started {
            self.tell(|c| c.remember_stored(key, &r.etag, at, &meta));
        }
        Ok(r)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.uploads().remove(upload_id);
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        meta: Option<&UserMeta>,
        src_etag: Option<&str>,
    ) -> StoreResult<PutResult> {
        let started = SystemTime::now();
        let r = self.inner.copy(src_key, dst_key, meta, src_etag).await?;
        // A copy that keeps the source's metadata is forgotten: which metadata the source had
        // at that ETag is not certain here (see `cache::attrs`), and a HEAD will tell.
        match meta {
            Some(m) => self.tell(|c| c.remember_stored(dst_key, &r.etag, started, m)),
            None => self.tell(|c| c.forget(dst_key)),
        }
        Ok(r)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await?;
        self.tell(|c| c.forget(key));
        Ok(())
    }
}
