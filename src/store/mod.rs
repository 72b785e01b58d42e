//! The object store seen by the filesystem: S3 terms only (keys, prefixes, ETags, byte ranges).
//!
//! The filesystem core never sees aws-sdk-s3 types; it talks to this trait, which has two
//! implementations: [`aws::AwsStore`] for real S3-compatible servers and [`memory::MemoryStore`]
//! for unit and model tests. Both must behave alike on the points the core relies on, and
//! `tests/contract.rs` checks that they do:
//!
//! * LIST returns keys in byte-wise lexicographic order; with a delimiter, keys that contain the
//!   delimiter after the prefix are rolled up into common prefixes, and objects and prefixes share
//!   one ordering across pages (a page boundary can fall between `a` and `a/`).
//! * A ranged GET with an ETag answers [`StoreError::PreconditionFailed`] when the object was
//!   replaced, so a reader never mixes two versions.
//! * A key becomes visible only complete: PUT and CompleteMultipartUpload are atomic.
//! * Zero-byte objects are ordinary objects.

pub mod aws;
pub mod checksums;
pub mod client;
pub mod content_type;
pub mod customer_key;
pub mod journal;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod metered;
pub mod remembered;
pub mod requests;
pub mod spacing;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;

/// User metadata of an object (`x-amz-meta-*` headers without the prefix, lower-case names).
pub type UserMeta = BTreeMap<String, String>;

/// What S3 tells about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// The ETag as S3 returns it, quotes included; opaque to us.
    pub etag: String,
    pub last_modified: SystemTime,
    /// `None` when the object came from a LIST, which does not return user metadata.
    pub user_meta: Option<UserMeta>,
}

/// One page of a LIST.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes, each ending with the delimiter.
    pub prefixes: Vec<String>,
    /// Present when more results follow.
    pub next_token: Option<String>,
    /// Keys the server listed that are not UTF-8, percent-encoded; not in `objects` (no file
    /// name or key this program can use names them).
    pub unreadable: Vec<String>,
    /// Keys of `objects` in a storage class that must be restored before a read (GLACIER,
    /// DEEP_ARCHIVE), as the listing says.
    pub archived: Vec<String>,
}

/// Parameters of a LIST request.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub token: Option<String>,
    /// Listing starts strictly after this key (ListObjectsV2 `start-after`).
    pub start_after: Option<String>,
    /// At most this many entries (objects + prefixes); S3 caps it at 1,000.
    pub max_keys: u32,
}

/// The pages of one listing, fetched one after another: the continuation token is carried
/// from each page to the next request. A server that hands out a token it gave before would
/// make the listing go round forever: that ends it with an error.
///
/// ```ignore
/// let mut pages = Pages::new(ListRequest::flat("photos/"));
/// while let Some(page) = pages.next(&store).await? { /* page.objects */ }
/// ```
pub struct Pages {
    req: ListRequest,
    done: bool,
    tokens: Tokens,
}

impl Pages {
    pub fn new(req: ListRequest) -> Self {
        Pages {
            req,
            done: false,
            tokens: Tokens::default(),
        }
    }

    /// The next page, or `None` after the last one.
    pub async fn next<S: ObjectStore>(&mut self, store: &S) -> StoreResult<Option<ListPage>> {
        if self.done {
            return Ok(None);
        }
        let page = store.list(&self.req).await?;
        match &page.next_token {
            Some(t) => {
                self.tokens.check(t, &self.req.prefix)?;
                self.req.token = Some(t.clone());
            }
            None => self.done = true,
        }
        Ok(Some(page))
    }
}

/// The continuation tokens of one listing so far: a repeated one is an error.
#[derive(Default, Debug)]
pub struct Tokens {
    seen: std::collections::HashSet<String>,
}

impl Tokens {
    pub fn check(&mut self, token: &str, prefix: &str) -> StoreResult<()> {
        if self.seen.insert(token.to_string()) {
            Ok(())
        } else {
            Err(StoreError::Other(format!(
                "the server answered the listing of {prefix:?} with a continuation token it gave before; the listing would never end"
            )))
        }
    }
}

impl ListRequest {
    /// Every key under `prefix`, without a delimiter, 1,000 per page.
    pub fn flat(prefix: &str) -> Self {
        ListRequest {
            prefix: prefix.to_string(),
            delimiter: None,
            token: None,
            start_after: None,
            max_keys: 1000,
        }
    }

    pub fn dir(prefix: &str) -> Self {
        ListRequest {
            prefix: prefix.to_string(),
            delimiter: Some("/".to_string()),
            token: None,
            start_after: None,
            max_keys: 1000,
        }
    }
}

/// The requests a store makes: counted by [`metered::Metered`] (the metrics name them with
/// [`Op::name`]) and by the memory store, which can also fail or hold each kind in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Head,
    List,
    Get,
    Put,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    CompleteMultipart,
    AbortMultipart,
    ListUploads,
    Copy,
    Delete,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Head,
        Op::List,
        Op::Get,
        Op::Put,
        Op::CreateMultipart,
        Op::UploadPart,
        Op::UploadPartCopy,
        Op::CompleteMultipart,
        Op::AbortMultipart,
        Op::ListUploads,
        Op::Copy,
        Op::Delete,
    ];

    /// The request's name in the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Head => "head",
            Op::List => "list",
            Op::Get => "get",
            Op::Put => "put",
            Op::CreateMultipart => "create_multipart",
            Op::UploadPart => "upload_part",
            Op::UploadPartCopy => "upload_part_copy",
            Op::CompleteMultipart => "complete_multipart",
            Op::AbortMultipart => "abort_multipart",
            Op::ListUploads => "list_multipart_uploads",
            Op::Copy => "copy",
            Op::Delete => "delete",
        }
    }

    /// Position in [`Op::ALL`], for arrays of counters.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What a write requires of the key's current version: a conditional write (`If-Match`,
/// `If-None-Match: *`), so an upload never silently replaces a version its writer did not see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Unconditional.
    Any,
    /// The key must not exist (a new file).
    Absent,
    /// The key must hold this ETag (the version the writer opened).
    Etag(String),
}

impl Expect {
    /// The `If-Match` header value.
    pub fn if_match(&self) -> Option<String> {
        match self {
            Expect::Etag(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// The `If-None-Match` header value.
    pub fn if_none_match(&self) -> Option<String> {
        matches!(self, Expect::Absent).then(|| "*".to_string())
    }

    /// True when the key's current version (`None`: absent) satisfies the condition.
    pub fn holds(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (Expect::Any, _) | (Expect::Absent, None) => true,
            (Expect::Etag(e), Some(c)) => e == c,
            _ => false,
        }
    }
}

/// The result of a completed write (PUT, copy or multipart completion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    pub etag: String,
}

/// A multipart upload left open, as ListMultipartUploads reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// Errors of the store, in S3 terms. Every variant maps to one errno in `fs::error`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    #[error("the object changed (precondition failed)")]
    PreconditionFailed,
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("the bucket does not exist")]
    NoSuchBucket,
    #[error("the access key id is not known to the server")]
    InvalidAccessKey,
    #[error("the secret key does not match the access key id")]
    SignatureMismatch,
    #[error("the session token has expired")]
    ExpiredToken,
    /// No credentials could be loaded (none configured, a credential process that failed, an
    /// `aws login` session with nothing cached); the request was never sent.
    #[error("cannot load AWS credentials: {0}")]
    Credentials(String),
    #[error("the bucket is in region {0:?}, not the configured one")]
    WrongRegion(Option<String>),
    #[error("cannot reach the endpoint: {0}")]
    Unreachable(String),
    #[error("request timed out: {0}")]
    Timeout(String),
    #[error("the multipart upload no longer exists")]
    NoSuchUpload,
    #[error("entity too large")]
    TooLarge,
    #[error("the server does not implement this request: {0}")]
    NotImplemented(String),
    /// 503 and its kin: slow down (throttling), or a server that cannot answer now (a storage
    /// cluster without quorum answers 503 too).
    #[error("the server is throttling requests or unavailable: {0}")]
    Throttled(String),
    #[error(
        "the object is archived (a Glacier storage class) and cannot be read until it is restored: aws s3api restore-object, then read it again"
    )]
    Archived,
    #[error(
        "the object is encrypted with a customer key (SSE-C) this mount does not have, or with none while this mount reads with one ({0}): mount with --sse-c-key-file holding the key it was written with"
    )]
    EncryptionKey(String),
    #[error("{0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The S3 operations pailfs needs. Futures are `Send` so the core can spawn them.
pub trait ObjectStore: Send + Sync + 'static {
    /// HEAD: the object's size, ETag, date and user metadata.
    fn head(&self, key: &str) -> impl Future<Output = StoreResult<ObjectMeta>> + Send;

    /// One page of ListObjectsV2.
    fn list(&self, req: &ListRequest) -> impl Future<Output = StoreResult<ListPage>> + Send;

    /// GET of `range` (clamped to the object's end). With `if_match`, fails with
    /// [`StoreError::PreconditionFailed`] if the object's ETag differs.
    fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> impl Future<Output = StoreResult<Bytes>> + Send;

    /// Like [`ObjectStore::get_range`], in pieces of `piece` bytes (the last may be shorter),
    /// each its own buffer, so keeping one piece does not keep the others in memory.
    fn get_range_split(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        piece: u64,
    ) -> impl Future<Output = StoreResult<Vec<Bytes>>> + Send {
        async move {
            let data = self.get_range(key, range, if_match).await?;
            let step = piece.max(1) as usize;
            Ok((0..data.len())
                .step_by(step)
                .map(|s| data.slice(s..(s + step).min(data.len())))
                .collect())
        }
    }

    /// PUT of a whole object (including zero bytes), unconditional.
    fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &UserMeta,
    ) -> impl Future<Output = StoreResult<PutResult>> + Send {
        self.put_if(key, body, meta, &Expect::Any)
    }

    /// PUT that stores only if the key's current version is as `expect` says; otherwise
    /// [`StoreError::PreconditionFailed`] (or [`StoreError::NotFound`] for an ETag expected of
    /// a key that is gone). A server without conditional writes ignores the condition.
    fn put_if(
        &self,
        key: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> impl Future<Output = StoreResult<PutResult>> + Send;

    fn create_multipart(
        &self,
        key: &str,
        meta: &UserMeta,
    ) -> impl Future<Output = StoreResult<String>> + Send;

    /// Uploads part `part` (1-based); returns its receipt for `complete_multipart`: its ETag,
    /// with its checksum when uploads carry them (opaque to the caller).
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> impl Future<Output = StoreResult<String>> + Send;

    /// Fills part `part` server-side from `range` of `src_key`, which must still have `src_etag`;
    /// returns its receipt, as `upload_part` does.
    fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        src_key: &str,
        range: Range<u64>,
        src_etag: &str,
    ) -> impl Future<Output = StoreResult<String>> + Send;

    /// Completes the upload from `(part number, receipt)` pairs in ascending order.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> impl Future<Output = StoreResult<PutResult>> + Send {
        self.complete_multipart_if(key, upload_id, parts, &Expect::Any)
    }

    /// [`ObjectStore::complete_multipart`] with a condition, as [`ObjectStore::put_if`].
    fn complete_multipart_if(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        expect: &Expect,
    ) -> impl Future<Output = StoreResult<PutResult>> + Send;

    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Open multipart uploads under `prefix`.
    fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> impl Future<Output = StoreResult<Vec<PendingUpload>>> + Send;

    /// Server-side copy (objects up to 5 GiB). With `meta`, the copy gets that user metadata
    /// (`REPLACE`); without, it keeps the source's. With `src_etag`, fails if the source changed.
    fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        meta: Option<&UserMeta>,
        src_etag: Option<&str>,
    ) -> impl Future<Output = StoreResult<PutResult>> + Send;

    /// DELETE; deleting a missing key succeeds, as in S3.
    fn delete(&self, key: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The largest object a single CopyObject may copy (S3's limit).
pub const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// The smallest part S3 accepts, except for the last one.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// Writes the [`ObjectStore`] methods named in the list as calls of the same method on
/// `self.$inner()`, for wrappers that change only some requests (`Journaled`) and for `Arc<S>`.
///
/// ```ignore
/// impl<S: ObjectStore> ObjectStore for Journaled<S> {
///     forward_store!(inner; head, list, get_range, get_range_split, put_if, delete);
///     // ... the methods it changes
/// }
/// ```
#[macro_export]
macro_rules! forward_store {
    ($f:ident; $($m:ident),* $(,)?) => { $( $crate::forward_store!(@ $f $m); )* };
    (@ $f:ident head) => {
        fn head(&self, key: &str) -> impl std::future::Future<Output = $crate::store::StoreResult<$crate::store::ObjectMeta>> + Send {
            self.$f().head(key)
        }
    };
    (@ $f:ident list) => {
        fn list(&self, req: &$crate::store::ListRequest) -> impl std::future::Future<Output = $crate::store::StoreResult<$crate::store::ListPage>> + Send {
            self.$f().list(req)
        }
    };
    (@ $f:ident get_range) => {
        fn get_range(&self, key: &str, range: std::ops::Range<u64>, if_match: Option<&str>) -> impl std::future::Future<Output = $crate::store::StoreResult<bytes::Bytes>> + Send {
            self.$f().get_range(key, range, if_match)
        }
    };
    (@ $f:ident get_range_split) => {
        fn get_range_split(&self, key: &str, range: std::ops::Range<u64>, if_match: Option<&str>, piece: u64) -> impl std::future::Future<Output = $crate::store::StoreResult<Vec<bytes::Bytes>>> + Send {
            self.$f().get_range_split(key, range, if_match, piece)
        }
    };
    (@ $f:ident put_if) => {
        fn put_if(&self, key: &str, body: bytes::Bytes, meta: &$crate::store::UserMeta, expect: &$crate::store::Expect) -> impl std::future::Future<Output = $crate::store::StoreResult<$crate::store::PutResult>> + Send {
            self.$f().put_if(key, body, meta, expect)
        }
    };
    (@ $f:ident create_multipart) => {
        fn create_multipart(&self, key: &str, meta: &$crate::store::UserMeta) -> impl std::future::Future<Output = $crate::store::StoreResult<String>> + Send {
            self.$f().create_multipart(key, meta)
        }
    };
    (@ $f:ident upload_part) => {
        fn upload_part(&self, key: &str, upload_id: &str, part: i32, body: bytes::Bytes) -> impl std::future::Future<Output = $crate::store::StoreResult<String>> + Send {
            self.$f().upload_part(key, upload_id, part, body)
        }
    };
    (@ $f:ident upload_part_copy) => {
        fn upload_part_copy(&self, key: &str, upload_id: &str, part: i32, src_key: &str, range: std::ops::Range<u64>, src_etag: &str) -> impl std::future::Future<Output = $crate::store::StoreResult<String>> + Send {
            self.$f().upload_part_copy(key, upload_id, part, src_key, range, src_etag)
        }
    };
    (@ $f:ident complete_multipart_if) => {
        fn complete_multipart_if(&self, key: &str, upload_id: &str, parts: &[(i32, String)], expect: &$crate::store::Expect) -> impl std::future::Future<Output = $crate::store::StoreResult<$crate::store::PutResult>> + Send {
            self.$f().complete_multipart_if(key, upload_id, parts, expect)
        }
    };
    (@ $f:ident abort_multipart) => {
        fn abort_multipart(&self, key: &str, upload_id: &str) -> impl std::future::Future<Output = $crate::store::StoreResult<()>> + Send {
            self.$f().abort_multipart(key, upload_id)
        }
    };
    (@ $f:ident list_multipart_uploads) => {
        fn list_multipart_uploads(&self, prefix: &str) -> impl std::future::Future<Output = $crate::store::StoreResult<Vec<$crate::store::PendingUpload>>> + Send {
            self.$f().list_multipart_uploads(prefix)
        }
    };
    (@ $f:ident copy) => {
        fn copy(&self, src_key: &str, dst_key: &str, meta: Option<&$crate::store::UserMeta>, src_etag: Option<&str>) -> impl std::future::Future<Output = $crate::store::StoreResult<$crate::store::PutResult>> + Send {
            self.$f().copy(src_key, dst_key, meta, src_etag)
        }
    };
    (@ $f:ident delete) => {
        fn delete(&self, key: &str) -> impl std::future::Future<Output = $crate::store::StoreResult<()>> + Send {
            self.$f().delete(key)
        }
    };
}

/// A shared store is a store: a test keeps one handle to inject failures while a mount uses
/// the other.
impl<S: ObjectStore> ObjectStore for std::sync::Arc<S> {
    forward_store!(as_ref; head);
    forward_store!(as_ref; list, get_range, get_range_split, put_if, create_multipart);
    forward_store!(as_ref; upload_part, upload_part_copy, complete_multipart_if, abort_multipart);
    forward_store!(as_ref; list_multipart_uploads, copy, delete);
}
