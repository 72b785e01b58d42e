//! Multipart uploads survive only as long as their journal entry: a record on local disk of
//! every upload this mount started and has not completed or aborted yet.
//!
//! An open multipart upload holds its parts in S3 (and bills for them) until it is completed or
//! aborted. If pailfs is killed while one is open, nobody else knows its id, so it would stay
//! forever. [`Journaled`] wraps a store and writes one small file per open upload into the
//! mount's (locked) cache directory; completing or aborting removes it. The next mount with the
//! same cache directory aborts every upload still listed ([`abort_leftovers`]): those belong
//! to a pailfs that died and can never be completed, because the data of the parts that were not
//! sent died with it. Uploads started by other clients are never touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Expect, ObjectStore, PutResult, StoreError, StoreResult, UserMeta};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A store whose multipart uploads are journaled in `dir`.
pub struct Journaled<S> {
    inner: S,
    dir: PathBuf,
    open: Mutex<HashMap<String, PathBuf>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    key: String,
    upload_id: String,
}

impl<S: ObjectStore> Journaled<S> {
    pub fn new(inner: S, dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Journaled {
            inner,
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Writes the entry of a new upload. The file is written on tokio's blocking pool, so a
    /// slow disk holds up this upload only, not the workers serving other requests.
    async fn record(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let path = self.dir.join(format!(
            "upload-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let entry = Entry {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
        };
        let body = serde_json::to_vec(&entry).map_err(|e| StoreError::Other(e.to_string()))?;
        let at = path.clone();
        tokio::task::spawn_blocking(move || std::fs::write(&at, body))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| {
                StoreError::Other(format!(
                    "cannot journal a multipart upload in {}: {e}",
                    self.dir.display()
                ))
            })?;
        self.open_uploads().insert(upload_id.to_string(), path);
        Ok(())
    }

    /// Removes the entry of an upload completed or aborted (on the blocking pool).
    async fn forget(&self, upload_id: &str) {
        let path = self.open_uploads().remove(upload_id);
        if let Some(path) = path {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
    }

    fn open_uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the journal of an earlier process held, and what became of each upload.
#[derive(Debug)]
pub struct Leftover {
    pub key: String,
    pub upload_id: String,
    pub result: StoreResult<()>,
}

/// Aborts the uploads an earlier process journaled in `dir` and never finished. An upload the
/// server no longer knows counts as aborted. Entries whose abort failed stay for the next time.
pub async fn abort_leftovers<S: ObjectStore>(store: &S, dir: &Path) -> Vec<Leftover> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for ent in rd.flatten() {
        let path = ent.path();
        let name = ent.file_name();
        if !name.to_string_lossy().starts_with("upload-") {
            continue;
        }
        let Some(entry) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
        else {
            log::warn!(
                "ignoring unreadable upload journal entry {}",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let result = match store.abort_multipart(&entry.key, &entry.upload_id).await {
            Ok(()) | Err(StoreError::NoSuchUpload) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        out.push(Leftover {
            key: entry.key,
            upload_id: entry.upload_id,
            result,
        });
    }
    out
}

impl<S: ObjectStore> ObjectStore for Journaled<S> {
    crate::forward_store!(inner; head, list, get_range, get_range_split, put_if, upload_part);
    crate::forward_store!(inner; upload_part_copy, list_multipart_uploads, copy, delete);

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        let id = self.inner.create_multipart(key, meta).await?;
        if let Err(e) = self.record(key, &id).await {
            // Without a journal entry a crash would leak the upload: do not use it.
            let _ = self.inner.abort_multipart(key, &id).await;
            return Err(e);
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
        let r = self
            .inner
            .complete_multipart_if(key, upload_id, parts, expect)
            .await;
        if r.is_ok() {
            self.forget(upload_id).await;
        }
        r
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let r = self.inner.abort_multipart(key, upload_id).await;
        if matches!(r, Ok(()) | Err(StoreError::NoSuchUpload)) {
            self.forget(upload_id).await;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn open_uploads_are_journaled_until_completed_or_aborted() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let j = Journaled::new(MemoryStore::new(), dir.path().to_path_buf()).unwrap();
            let meta = UserMeta::new();
            let a = j.create_multipart("a", &meta).await.unwrap();
            let b = j.create_multipart("b", &meta).await.unwrap();
            let c = j.create_multipart("c", &meta).await.unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
            let etag = j
                .upload_part("a", &a, 1, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap();
            j.complete_multipart("a", &a, &[(1, etag)]).await.unwrap();
            j.abort_multipart("b", &b).await.unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

            // A new process (same directory) aborts what is left: `c`.
            let store = j.inner();
            assert_eq!(store.list_multipart_uploads("").await.unwrap().len(), 1);
            let left = abort_leftovers(store, dir.path()).await;
            assert_eq!(left.len(), 1);
            assert_eq!(
                (left[0].key.as_str(), left[0].upload_id.as_str()),
                ("c", c.as_str())
            );
            assert!(left[0].result.is_ok());
            assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
            assert!(abort_leftovers(store, dir.path()).await.is_empty());
        });
    }
}
