//! [`ObjectStore`] over aws-sdk-s3: the only file that sees the SDK's request and error types.
//!
//! Subtleties handled here:
//!
//! * LIST asks for `encoding-type=url` and decodes keys itself, because XML 1.0 cannot carry
//!   control characters that S3 keys may contain. Servers differ on whether a space comes back
//!   as `+` or `%20` (AWS uses `+` and always encodes a literal `+` as `%2B`), so both decode to
//!   a space.
//! * HEAD responses have no body, so a 404 there is "no such key" (the bucket was checked at
//!   mount time) and a 403 carries no reason.
//! * `x-amz-copy-source` must be percent-encoded by the caller; the SDK does not do it.
//! * A ranged GET's body length is checked against the range asked for, so a truncated body or
//!   an error document never reaches a reader as file data.

use std::future::Future;
use std::ops::Range;
use std::time::SystemTime;

use crate::buffers::POOL;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, EncodingType, MetadataDirective,
    ObjectStorageClass,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::client::{S3Settings, build_client};
use super::requests::RequestOptions;
use super::spacing::WriteSpacing;
use super::{
    Expect, ListPage, ListRequest, ObjectMeta, ObjectStore, PendingUpload, PutResult, StoreError,
    StoreResult, UserMeta,
};
use super::{checksums, content_type};

/// Characters left alone in `x-amz-copy-source`: unreserved ones and the path separator.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// An S3 bucket reached through aws-sdk-s3.
#[derive(Clone, Debug)]
pub struct AwsStore {
    client: Client,
    bucket: String,
    /// Writes to one key are spaced (see `spacing`).
    spacing: std::sync::Arc<WriteSpacing>,
    /// Encryption, storage class, payer, expected owner, checksum (see `requests`).
    opts: RequestOptions,
    /// Nothing can change the bytes on the way to the endpoint (see `checksums`).
    unsigned_ok: bool,
    /// A DELETE was refused (said once).
    delete_refused: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AwsStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        AwsStore {
            client,
            bucket: bucket.into(),
            spacing: Default::default(),
            opts: RequestOptions::default(),
            unsigned_ok: false,
            delete_refused: Default::default(),
        }
    }

    /// A store of `bucket` with a client built from `s3` and its request options.
    pub async fn connect(s3: &S3Settings, bucket: &str) -> Self {
        let mut store = AwsStore::new(build_client(s3).await, bucket);
        store.opts = s3.requests.clone();
        store.unsigned_ok = checksums::unsigned_payload_safe(s3.endpoint_url.as_deref());
        store
    }

    /// The checksum uploads carry, if any.
    pub fn checksum(&self) -> Option<&ChecksumAlgorithm> {
        self.opts.checksum.as_ref()
    }

    /// Uploads go without checksums from now on (the server does not take them).
    pub fn checksums_off(&mut self) {
        self.opts.checksum = None;
    }

    /// A part of CompleteMultipartUpload from its receipt: the ETag, and the checksum when
    /// the upload carries them.
    fn completed_part(&self, number: i32, receipt: &str) -> CompletedPart {
        let (etag, sum) = checksums::parse_receipt(receipt);
        let sum = |a: ChecksumAlgorithm| {
            sum.filter(|_| self.opts.checksum.as_ref() == Some(&a))
                .map(str::to_string)
        };
        CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .set_checksum_crc32_c(sum(ChecksumAlgorithm::Crc32C))
            .set_checksum_crc64_nvme(sum(ChecksumAlgorithm::Crc64Nvme))
            .set_checksum_sha256(sum(ChecksumAlgorithm::Sha256))
            .build()
    }

    /// Whether data goes with an unsigned payload: a checksum protects it, and nothing on the
    /// way can change it.
    fn unsigned(&self) -> bool {
        self.opts.checksum.is_some() && self.unsigned_ok
    }

    /// Runs the write `w` to `key` spaced from the previous write to it.
    async fn spaced<T>(
        &self,
        key: &str,
        w: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.spacing.before(key).await;
        let r = w.await;
        self.spacing.after(key);
        r
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket's region from GetBucketLocation (an empty constraint means us-east-1 and
    /// the legacy `EU` means eu-west-1).
    pub async fn bucket_region(&self) -> StoreResult<String> {
        let out = self
            .client
            .get_bucket_location()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(map_err)?;
        Ok(match out.location_constraint().map(|c| c.as_str()) {
            None | Some("") => "us-east-1".to_string(),
            Some("EU") => "eu-west-1".to_string(),
            Some(r) => r.to_string(),
        })
    }

    /// GetObjectAcl (only to probe the permission).
    pub async fn get_object_acl(&self, key: &str) -> StoreResult<()> {
        crate::paid!(self.client.get_object_acl().bucket(&self.bucket), self.opts)
            .key(key)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// PutObjectAcl with the canned `private` ACL (only to probe the permission).
    pub async fn put_object_acl_private(&self, key: &str) -> StoreResult<()> {
        crate::paid!(self.client.put_object_acl().bucket(&self.bucket), self.opts)
            .key(key)
            .acl(aws_sdk_s3::types::ObjectCannedAcl::Private)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// A PUT that S3 authorizes like any other PutObject but that stores nothing: it is
    /// conditional on a version that does not exist (`If-Match`, which AWS and moto check)
    /// and carries the MD5 of other bytes (`Content-MD5`, which AWS and Garage check). A write
    /// probe made of it needs no DeleteObject or AbortMultipartUpload (the minimal policy has
    /// no abort), leaves no version or delete marker on a versioned bucket and fires no
    /// event. It carries what every PUT carries (encryption, class, payer), so a bucket policy
    /// that demands encryption judges it as it judges the mount's writes.
    pub async fn put_refused_after_authorization(&self, key: &str) -> StoreResult<ProbePut> {
        // The MD5 of no bytes, sent with some: a well-formed digest that cannot match.
        const EMPTY_MD5: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";
        let body = Bytes::from_static(b"pailfs write probe: never stored");
        let req = crate::stored!(self.client.put_object().bucket(&self.bucket), self.opts)
            .key(key)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .content_md5(EMPTY_MD5)
            .if_match("\"pailfs-probe-no-such-version\"");
        let e = match req.send().await {
            Ok(_) => return Ok(ProbePut::Stored),
            Err(e) => e,
        };
        let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
        let status = e.raw_response().map(|r| r.status().as_u16());
        match (code, status) {
            ("NoSuchKey" | "PreconditionFailed", _) | ("", Some(404 | 412)) => {
                Ok(ProbePut::ConditionChecked)
            }
            ("BadDigest" | "InvalidDigest", _) => Ok(ProbePut::DigestChecked),
            _ => Err(map_err(e)),
        }
    }

    /// A ranged GET into buffers of `piece` bytes. A body that breaks off is resumed from
    /// the byte it stopped at, pinned to the ETag of the first answer, so the pieces always
    /// come from one version of the object.
    async fn fetch(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        piece: u64,
    ) -> StoreResult<Vec<Bytes>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let want = range.end - range.start;
        let mut pieces = Pieces::new(want, piece.clamp(1, want));
        let mut pinned = if_match.map(str::to_string);
        let mut breaks = 0;
        loop {
            let from = range.start + pieces.received;
            let Some(reason) = self
                .fetch_from(key, from..range.end, &mut pinned, &mut pieces)
                .await?
            else {
                return Ok(pieces.finish());
            };
            breaks += 1;
            if breaks > MAX_BODY_RESUMES {
                return Err(StoreError::Unreachable(format!(
                    "reading {key}: the connection broke {breaks} times ({reason})"
                )));
            }
            log::warn!(
                "reading {key:?}: {reason} at byte {from_now}; resuming from there",
                from_now = range.start + pieces.received
            );
        }
    }

    /// One ranged GET of `range`, its body added to `pieces`. It is pinned to `pinned`, which
    /// the first answer sets when no ETag was given. Returns why the body broke off, or `None`
    /// when it came whole.
    async fn fetch_from(
        &self,
        key: &str,
        range: Range<u64>,
        pinned: &mut Option<String>,
        pieces: &mut Pieces,
    ) -> StoreResult<Option<String>> {
        let out = crate::customer_key!(
            crate::paid!(self.client.get_object().bucket(&self.bucket), self.opts),
            self.opts
        )
        .key(key)
        .range(format!("bytes={}-{}", range.start, range.end - 1))
        .set_if_match(pinned.clone())
        .send()
        .await
        .map_err(map_err)?;
        if pinned.is_none() {
            *pinned = out.e_tag().map(str::to_string);
        }
        check_content_range(key, out.content_range(), range.start)?;
        let expected = out.content_length().unwrap_or(-1);
        let before = pieces.received;
        let broke = read_body(key, out.body, pieces).await?;
        let got = (pieces.received - before) as i64;
        Ok(match broke {
            Some(e) => Some(e),
            None if expected >= 0 && got != expected => {
                Some(format!("body ended after {got} of {expected} bytes"))
            }
            None => None,
        })
    }

    fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.bucket, utf8_percent_encode(key, COPY_SOURCE))
    }
}

/// Sends a request that carries object data (PutObject, UploadPart): with the checksum
/// computed when uploads carry one (the client computes none unless an operation requires it),
/// and with an unsigned payload where that is safe (see `checksums`).
macro_rules! send_data {
    ($req:expr, $store:expr) => {{
        let mut op = $req.customize();
        if $store.opts.checksum.is_some() {
            op = op.config_override(
                aws_sdk_s3::config::Builder::new()
                    .request_checksum_calculation(RequestChecksumCalculation::WhenSupported),
            );
        }
        if $store.unsigned() {
            op = op.disable_payload_signing();
        }
        op.send().await
    }};
}

/// Decodes a key from a `encoding-type=url` listing.
fn decode_key(s: &str) -> StoreResult<String> {
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| StoreError::Other(format!("listing returned a key that is not UTF-8: {s:?}")))
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn to_meta(m: Option<&std::collections::HashMap<String, String>>) -> UserMeta {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// How often one ranged read resumes after its body broke off, before giving up.
const MAX_BODY_RESUMES: u32 = 5;

/// The bytes of one ranged read, gathered into buffers of `piece` bytes (the last one may be
/// shorter). Buffers come from the pool (see `crate::buffers`): fresh 1 MiB mappings cost a
/// page fault per 4 KiB.
struct Pieces {
    /// The bytes asked for.
    want: u64,
    piece: u64,
    /// Full pieces.
    done: Vec<Bytes>,
    /// The piece being filled; no capacity until its first byte.
    cur: Vec<u8>,
    /// Bytes received so far, over all requests.
    received: u64,
}

impl Pieces {
    fn new(want: u64, piece: u64) -> Self {
        Pieces {
            want,
            piece,
            done: Vec::new(),
            cur: Vec::new(),
            received: 0,
        }
    }

    /// Adds one chunk of a body; more than the bytes asked for is an error.
    fn push(&mut self, key: &str, mut chunk: Bytes) -> StoreResult<()> {
        let want = self.want;
        if self.received + chunk.len() as u64 > want {
            return Err(StoreError::Other(format!(
                "server sent more than the {want} bytes asked for of {key}"
            )));
        }
        self.received += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.cur.capacity() == 0 {
                let left = want - (self.done.len() as u64 * self.piece);
                self.cur = POOL.take(self.piece.min(left) as usize);
            }
            let room = (self.piece as usize - self.cur.len()).min(chunk.len());
            self.cur.extend_from_slice(&chunk.split_to(room));
            if self.cur.len() as u64 == self.piece {
                self.done.push(POOL.freeze(std::mem::take(&mut self.cur)));
            }
        }
        Ok(())
    }

    /// All the pieces, the partly filled one last.
    fn finish(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.done.push(POOL.freeze(self.cur));
        }
        self.done
    }
}

/// Reads `body` into `pieces` until it ends (`None`) or breaks off (the error, as text).
async fn read_body(
    key: &str,
    mut body: ByteStream,
    pieces: &mut Pieces,
) -> StoreResult<Option<String>> {
    loop {
        match body.next().await {
            Some(Ok(chunk)) => pieces.push(key, chunk)?,
            Some(Err(e)) => return Ok(Some(e.to_string())),
            None => return Ok(None),
        }
    }
}

/// A ranged GET must answer from the byte asked for; anything else is not our data.
fn check_content_range(key: &str, header: Option<&str>, from: u64) -> StoreResult<()> {
    let Some(h) = header else { return Ok(()) };
    let start = h
        .strip_prefix("bytes ")
        .and_then(|r| r.split('-').next())
        .and_then(|a| a.parse::<u64>().ok());
    match start {
        Some(s) if s == from => Ok(()),
        _ => Err(StoreError::Other(format!(
            "server answered a read of {key} from byte {from} with range {h:?}"
        ))),
    }
}

/// An error and its causes in one line (`dispatch failure: io error: ...: Connection refused`),
/// without the debug dump `DisplayErrorContext` appends: a line a person reads.
fn causes(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !line.ends_with(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        next = e.source();
    }
    line
}

/// Turns any SDK error into a [`StoreError`]. Never includes request headers, so a signature
/// or secret cannot leak into a message.
pub(crate) fn map_err<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => StoreError::Timeout(causes(&err)),
        SdkError::DispatchFailure(d) => {
            let line = causes(&err);
            if line.contains("loading credentials") || line.contains("no credentials") {
                StoreError::Credentials(line)
            } else if d.is_timeout() {
                StoreError::Timeout(causes(&err))
            } else {
                StoreError::Unreachable(causes(&err))
            }
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let region = se
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(str::to_string);
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("").to_string();
            classify(status, code, message, region)
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            let region = r
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(str::to_string);
            classify(status, "", DisplayErrorContext(&err).to_string(), region)
        }
        _ => StoreError::Other(DisplayErrorContext(&err).to_string()),
    }
}

/// Whether an `InvalidRequest` is about SSE-C keys (AWS: "The object was stored using a form of
/// Server Side Encryption...", "The encryption parameters are not applicable to this object";
/// Garage: "Object is encrypted", "Trying to decrypt a plaintext object", "Invalid encryption
/// key").
fn is_about_encryption(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["encrypt", "decrypt", "server side encryption"]
        .iter()
        .any(|w| m.contains(w))
}

/// The error table for S3 answers, by error code first and HTTP status second.
fn classify(status: u16, code: &str, message: String, region: Option<String>) -> StoreError {
    match code {
        "NoSuchKey" | "NotFound" => return StoreError::NotFound,
        "NoSuchBucket" => return StoreError::NoSuchBucket,
        // 409 ConditionalRequestConflict: another conditional write of the key was under way.
        "PreconditionFailed" | "ConditionalRequestConflict" => {
            return StoreError::PreconditionFailed;
        }
        "InvalidAccessKeyId" => return StoreError::InvalidAccessKey,
        "SignatureDoesNotMatch" => return StoreError::SignatureMismatch,
        "ExpiredToken" | "TokenRefreshRequired" => return StoreError::ExpiredToken,
        "AccessDenied" | "AllAccessDisabled" | "Forbidden" => {
            return StoreError::AccessDenied(message);
        }
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => {
            return StoreError::WrongRegion(region);
        }
        "NoSuchUpload" => return StoreError::NoSuchUpload,
        "InvalidObjectState" => return StoreError::Archived,
        "InvalidRequest" if is_about_encryption(&message) => {
            return StoreError::EncryptionKey(message);
        }
        "NotImplemented" | "MethodNotAllowed" => return StoreError::NotImplemented(message),
        "EntityTooLarge" => return StoreError::TooLarge,
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "ServiceUnavailable"
        | "TooManyRequests" => return StoreError::Throttled(message),
        _ => {}
    }
    match status {
        404 => StoreError::NotFound,
        // Only a HEAD has no error body; S3 (and Garage) answer a HEAD 400 Bad Request when
        // the SSE-C key is wrong, missing, or given for an object stored without one.
        400 if code.is_empty() => StoreError::EncryptionKey("HEAD: 400 Bad Request".into()),
        412 => StoreError::PreconditionFailed,
        403 => StoreError::AccessDenied(if message.is_empty() {
            "403 Forbidden".into()
        } else {
            message
        }),
        301 | 307 => StoreError::WrongRegion(region),
        429 | 503 => StoreError::Throttled(message),
        _ => StoreError::Other(if code.is_empty() {
            format!("HTTP {status}: {message}")
        } else {
            format!("{code}: {message}")
        }),
    }
}

/// How the server answered [`AwsStore::put_refused_after_authorization`], once it had
/// authorized the PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbePut {
    /// Refused for its condition: the server checks conditional writes (AWS, moto, MinIO).
    ConditionChecked,
    /// Refused for its digest: the server ignores the condition (Garage 2.5).
    DigestChecked,
    /// Stored: the server checks neither (the caller deletes it).
    Stored,
}

impl ObjectStore for AwsStore {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        let req = crate::customer_key!(
            crate::paid!(self.client.head_object().bucket(&self.bucket), self.opts),
            self.opts
        )
        .key(key);
        let out = match req.send().await.map_err(map_err) {
            // A directory marker another tool made (a console "folder") carries no customer
            // key and holds no data: its attributes are read without the key.
            Err(StoreError::EncryptionKey(_))
                if key.ends_with('/') && self.opts.sse_c.is_some() =>
            {
                crate::paid!(self.client.head_object().bucket(&self.bucket), self.opts)
                    .key(key)
                    .send()
                    .await
                    .map_err(map_err)?
            }
            r => r?,
        };
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or("").to_string(),
            last_modified: to_system_time(out.last_modified()),
            user_meta: Some(to_meta(out.metadata())),
        })
    }

    async fn list(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let max = if req.max_keys == 0 {
            1000
        } else {
            req.max_keys
        };
        let out = crate::paid!(
            self.client.list_objects_v2().bucket(&self.bucket),
            self.opts
        )
        .prefix(&req.prefix)
        .set_delimiter(req.delimiter.clone())
        .set_continuation_token(req.token.clone())
        .set_start_after(req.start_after.clone())
        .max_keys(max as i32)
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .map_err(map_err)?;
        let mut page = ListPage::default();
        for o in out.contents() {
            let Some(raw) = o.key() else { continue };
            let Ok(key) = decode_key(raw) else {
                page.unreadable.push(raw.to_string());
                continue;
            };
            if matches!(
                o.storage_class(),
                Some(ObjectStorageClass::Glacier | ObjectStorageClass::DeepArchive)
            ) {
                page.archived.push(key.clone());
            }
            page.objects.push(ObjectMeta {
                key,
                size: o.size().unwrap_or(0).max(0) as u64,
                etag: o.e_tag().unwrap_or("").to_string(),
                last_modified: to_system_time(o.last_modified()),
                user_meta: None,
            });
        }
        for p in out.common_prefixes() {
            if let Some(raw) = p.prefix() {
                match decode_key(raw) {
                    Ok(k) => page.prefixes.push(k),
                    Err(_) => page.unreadable.push(raw.to_string()),
                }
            }
        }
        if out.is_truncated().unwrap_or(false) {
            page.next_token = out.next_continuation_token().map(str::to_string);
        }
        Ok(page)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        let mut pieces = self.get_range_split(key, range, if_match, u64::MAX).await?;
        Ok(pieces.pop().unwrap_or_default())
    }

    async fn get_range_split(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        piece: u64,
    ) -> StoreResult<Vec<Bytes>> {
        self.fetch(key, range, if_match, piece).await
    }

    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        meta: &UserMeta,
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        let len = body.len() as i64;
        let req = crate::stored!(self.client.put_object().bucket(&self.bucket), self.opts)
            .key(key)
            .set_if_match(expect.if_match())
            .set_if_none_match(expect.if_none_match())
            .content_length(len)
            .body(ByteStream::from(body))
            .set_checksum_algorithm(self.opts.checksum.clone())
            .set_content_type(content_type::for_key(key).map(str::to_string))
            .set_metadata(Some(meta.clone().into_iter().collect()));
        let out = self
            .spaced(key, async { send_data!(req, self).map_err(map_err) })
            .await?;
        Ok(PutResult {
            etag: out.e_tag().unwrap_or("").to_string(),
        })
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        let out = crate::stored!(
            self.client.create_multipart_upload().bucket(&self.bucket),
            self.opts
        )
        .key(key)
        .set_checksum_algorithm(self.opts.checksum.clone())
        .set_content_type(content_type::for_key(key).map(str::to_string))
        .set_metadata(Some(meta.clone().into_iter().collect()))
        .send()
        .await
        .map_err(map_err)?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other("CreateMultipartUpload returned no upload id".into()))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> StoreResult<String> {
        let len = body.len() as i64;
        let req = crate::customer_key!(
            crate::paid!(self.client.upload_part().bucket(&self.bucket), self.opts),
            self.opts
        )
        .key(key)
        .upload_id(upload_id)
        .part_number(part)
        .content_length(len)
        .set_checksum_algorithm(self.opts.checksum.clone())
        .body(ByteStream::from(body));
        let out = send_data!(req, self).map_err(map_err)?;
        let etag = out
            .e_tag()
            .ok_or_else(|| StoreError::Other(format!("UploadPart {part} returned no ETag")))?;
        let checksum = self.opts.checksum.as_ref().and_then(|a| {
            checksums::pick(
                a,
                out.checksum_crc32_c(),
                out.checksum_crc64_nvme(),
                out.checksum_sha256(),
            )
        });
        Ok(checksums::receipt(etag, checksum))
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
        let out = crate::copy_source_key!(
            crate::customer_key!(
                crate::paid!(
                    self.client.upload_part_copy().bucket(&self.bucket),
                    self.opts
                ),
                self.opts
            ),
            self.opts
        )
        .key(key)
        .upload_id(upload_id)
        .part_number(part)
        .copy_source(self.copy_source(src_key))
        .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
        .copy_source_if_match(src_etag)
        .send()
        .await
        .map_err(map_err)?;
        let r = out.copy_part_result();
        let etag = r
            .and_then(|r| r.e_tag())
            .ok_or_else(|| StoreError::Other(format!("UploadPartCopy {part} returned no ETag")))?;
        let checksum = self.opts.checksum.as_ref().and_then(|a| {
            let r = r?;
            checksums::pick(
                a,
                r.checksum_crc32_c(),
                r.checksum_crc64_nvme(),
                r.checksum_sha256(),
            )
        });
        Ok(checksums::receipt(etag, checksum))
    }

    async fn complete_multipart_if(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        expect: &Expect,
    ) -> StoreResult<PutResult> {
        let parts = parts
            .iter()
            .map(|(n, r)| self.completed_part(*n, r))
            .collect();
        // The SSE-C key goes with the completion too: S3 needs it there when the parts carry
        // checksums.
        let req = crate::customer_key!(
            crate::paid!(
                self.client.complete_multipart_upload().bucket(&self.bucket),
                self.opts
            ),
            self.opts
        )
        .key(key)
        .upload_id(upload_id)
        .set_if_match(expect.if_match())
        .set_if_none_match(expect.if_none_match())
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        );
        let out = self
            .spaced(key, async { req.send().await.map_err(map_err) })
            .await?;
        Ok(PutResult {
            etag: out.e_tag().unwrap_or("").to_string(),
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        crate::paid!(
            self.client.abort_multipart_upload().bucket(&self.bucket),
            self.opts
        )
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_multipart_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = crate::paid!(
                self.client.list_multipart_uploads().bucket(&self.bucket),
                self.opts
            )
            .prefix(prefix)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .map_err(map_err)?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(PendingUpload {
                        key: k.to_string(),
                        upload_id: id.to_string(),
                        initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        meta: Option<&UserMeta>,
        src_etag: Option<&str>,
    ) -> StoreResult<PutResult> {
        let mut req = crate::copy_source_key!(
            crate::stored!(self.client.copy_object().bucket(&self.bucket), self.opts),
            self.opts
        )
        .key(dst_key)
        .copy_source(self.copy_source(src_key))
        .set_copy_source_if_match(src_etag.map(str::to_string));
        if let Some(meta) = meta {
            req = req
                .metadata_directive(MetadataDirective::Replace)
                .set_content_type(content_type::for_key(dst_key).map(str::to_string))
                .set_metadata(Some(meta.clone().into_iter().collect()));
        }
        let out = self
            .spaced(dst_key, async { req.send().await.map_err(map_err) })
            .await?;
        Ok(PutResult {
            etag: out
                .copy_object_result()
                .and_then(|r| r.e_tag())
                .unwrap_or("")
                .to_string(),
        })
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let req =
            crate::paid!(self.client.delete_object().bucket(&self.bucket), self.opts).key(key);
        let r = self
            .spaced(key, async { req.send().await.map_err(map_err) })
            .await;
        if matches!(r, Err(StoreError::AccessDenied(_)))
            && !self
                .delete_refused
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            // Deleting is not probed at mount (on a versioned bucket even a delete of nothing
            // leaves a marker); the first refusal says what it means for the whole mount.
            log::warn!(
                "notice: these credentials may not delete objects in {} (s3:DeleteObject): rm, rmdir and renames answer EACCES on this mount; `pailfs check` lists what is missing",
                self.bucket
            );
        }
        r.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_decode_both_space_spellings() {
        assert_eq!(decode_key("a+b%20c%2Bd").unwrap(), "a b c+d");
        assert_eq!(decode_key("%C3%A9%01").unwrap(), "é\u{1}");
    }

    #[test]
    fn a_body_is_cut_into_pieces_and_never_beyond_the_range() {
        let mut p = Pieces::new(10, 4);
        p.push("k", Bytes::from_static(b"abc")).unwrap();
        p.push("k", Bytes::from_static(b"defghi")).unwrap();
        assert!(p.push("k", Bytes::from_static(b"jk")).is_err());
        p.push("k", Bytes::from_static(b"j")).unwrap();
        assert_eq!(p.received, 10);
        assert_eq!(p.finish(), [&b"abcd"[..], b"efgh", b"ij"]);
    }

    #[test]
    fn error_codes_win_over_status() {
        assert_eq!(
            classify(403, "SignatureDoesNotMatch", String::new(), None),
            StoreError::SignatureMismatch
        );
        assert_eq!(
            classify(404, "NoSuchBucket", String::new(), None),
            StoreError::NoSuchBucket
        );
        assert_eq!(classify(404, "", String::new(), None), StoreError::NotFound);
        assert_eq!(
            classify(301, "", String::new(), Some("eu-west-1".into())),
            StoreError::WrongRegion(Some("eu-west-1".into()))
        );
    }
}
