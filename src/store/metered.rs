//! Counts what the filesystem asks of S3: requests by type, bytes each way, errors by kind.
//!
//! [`Metered`] wraps a store the way [`super::journal::Journaled`] does, so every request of
//! the core is counted in one place. Retries happen inside aws-sdk-s3 and never reach this
//! layer; [`AttemptCounter`] is an SDK interceptor that counts attempts, and attempts minus
//! requests are the retries. The counters feed `pailfs stats` and the Prometheus endpoint.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{
    Expect, ListPage, ListRequest, ObjectMeta, ObjectStore, Op, PendingUpload, PutResult,
    StoreError, StoreResult, UserMeta,
};

/// Request types, as named in the metrics (in the order of [`Op::ALL`]).
pub const OPS: [&str; 12] = {
    let mut names = [""; 12];
    let mut i = 0;
    while i < names.len() {
        names[i] = Op::ALL[i].name();
        i += 1;
    }
    names
};

/// Error kinds, as named in the metrics.
pub const ERROR_KINDS: [&str; 17] = [
    "not_found",
    "precondition_failed",
    "access_denied",
    "no_such_bucket",
    "invalid_access_key",
    "signature_mismatch",
    "expired_token",
    "wrong_region",
    "unreachable",
    "timeout",
    "no_such_upload",
    "too_large",
    "throttled",
    "other",
    "archived",
    "encryption_key",
    "credentials",
];

fn kind(e: &StoreError) -> usize {
    match e {
        StoreError::NotFound => 0,
        StoreError::PreconditionFailed => 1,
        StoreError::AccessDenied(_) => 2,
        StoreError::NoSuchBucket => 3,
        StoreError::InvalidAccessKey => 4,
        StoreError::SignatureMismatch => 5,
        StoreError::ExpiredToken => 6,
        StoreError::WrongRegion(_) => 7,
        StoreError::Unreachable(_) => 8,
        StoreError::Timeout(_) => 9,
        StoreError::NoSuchUpload => 10,
        StoreError::TooLarge => 11,
        StoreError::Throttled(_) => 12,
        StoreError::NotImplemented(_) | StoreError::Other(_) => 13,
        StoreError::Archived => 14,
        StoreError::EncryptionKey(_) => 15,
        StoreError::Credentials(_) => 16,
    }
}

/// The counters.
#[derive(Default, Debug)]
pub struct StoreStats {
    pub requests: [AtomicU64; OPS.len()],
    pub errors: [AtomicU64; ERROR_KINDS.len()],
    /// Object bytes received (GET bodies).
    pub bytes_in: AtomicU64,
    /// Object bytes sent (PUT and part bodies).
    pub bytes_out: AtomicU64,
    /// HTTP attempts, counted by the SDK interceptor.
    pub attempts: Arc<AtomicU64>,
}

impl StoreStats {
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Attempts beyond the first of each request.
    pub fn retries(&self) -> u64 {
        self.attempts
            .load(Ordering::Relaxed)
            .saturating_sub(self.requests_total())
    }
}

/// A store whose requests are counted in `stats`.
pub struct Metered<S> {
    inner: S,
    pub stats: Arc<StoreStats>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, stats: Arc<StoreStats>) -> Self {
        Metered { inner, stats }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn count<T>(&self, op: Op, r: StoreResult<T>) -> StoreResult<T> {
        self.stats.requests[op.index()].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            self.stats.errors[kind(e)].fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: ObjectStore> ObjectStore for Metered<S> {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.count(Op::Head, self.inner.head(key).await)
    }

    async fn list(&self, req: &ListRequest) -> StoreResult<ListPage> {
        self.count(Op::List, self.inner.list(req).await)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        let r = self.inner.get_range(key, range, if_match).await;
        if let Ok(d) = &r {
            self.stats
                .bytes_in
                .fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        self.count(Op::Get, r)
    }

    async fn get_range_split(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        piece: u64,
    ) -> StoreResult<Vec<Bytes>> {
        let r = self
            .inner
            .get_range_split(key, range, if_match, piece)
            .await;
        if let Ok(v) = &r {
            let n: usize = v.iter().map(Bytes::len).sum();
            self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.count(Op::Get, r)
    }

    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        let n = body.len() as u64;
        let r = self.inner.put_if(key, body, meta, expect).await;
        if r.is_ok() {
            self.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
        self.count(Op::Put, r)
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        self.count(
            Op::CreateMultipart,
            self.inner.create_multipart(key, meta).await,
        )
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> StoreResult<String> {
        let n = body.len() as u64;
        let r = self.inner.upload_part(key, upload_id, part, body).await;
        if r.is_ok() {
            self.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
        self.count(Op::UploadPart, r)
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        src_key: &str,
        range: Range<u64>,
        src_etag: &str,
    ) -> StoreResult<String> {
        let r = self
            .inner
            .upload_part_copy(key, upload_id, part, src_key, range, src_etag)
            .await;
        self.count(Op::UploadPartCopy, r)
    }

    async fn complete_multipart_if(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        self.count(
            Op::CompleteMultipart,
            self.inner
                .complete_multipart_if(key, upload_id, parts, expect)
                .await,
        )
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.count(
            Op::AbortMultipart,
            self.inner.abort_multipart(key, upload_id).await,
        )
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        self.count(
            Op::ListUploads,
            self.inner.list_multipart_uploads(prefix).await,
        )
    }

    async fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        meta: Option<&UserMeta>,
        src_etag: Option<&str>,
    ) -> StoreResult<PutResult> {
        self.count(
            Op::Copy,
            self.inner.copy(src_key, dst_key, meta, src_etag).await,
        )
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.count(Op::Delete, self.inner.delete(key).await)
    }
}

/// An aws-sdk interceptor counting HTTP attempts (the first of each request and every retry).
#[derive(Debug)]
pub struct AttemptCounter(pub Arc<AtomicU64>);

impl aws_sdk_s3::config::Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "pailfs-attempt-counter"
    }

    fn read_before_attempt(
        &self,
        _ctx: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn counts_requests_bytes_and_errors() {
        let m = Metered::new(MemoryStore::new(), Arc::default());
        m.put("a", Bytes::from_static(b"hello"), &UserMeta::new())
            .await
            .unwrap();
        m.get_range("a", 0..5, None).await.unwrap();
        assert!(m.head("missing").await.is_err());
        let s = &m.stats;
        assert_eq!(s.requests[Op::Put.index()].load(Ordering::Relaxed), 1);
        assert_eq!(s.requests[Op::Get.index()].load(Ordering::Relaxed), 1);
        assert_eq!(s.requests_total(), 3);
        assert_eq!(s.bytes_out.load(Ordering::Relaxed), 5);
        assert_eq!(s.bytes_in.load(Ordering::Relaxed), 5);
        assert_eq!(s.errors[0].load(Ordering::Relaxed), 1);
    }
}
