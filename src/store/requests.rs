//! How a mount's objects are written and its requests paid for: server-side encryption, the
//! storage class, requester pays and the expected bucket owner.
//!
//! Buckets on AWS often require them: a bucket policy that denies unencrypted PUTs, a
//! requester-pays dataset, an account that must not write into a bucket someone else took over.
//! They are set once (flags of `mount`, `check` and the other commands) and [`AwsStore`]
//! applies them to every request they concern, so no write path can forget one: PUTs, multipart
//! uploads and copies (renames and `chmod` are copies; without the storage class a copy would
//! fall back to STANDARD) carry the encryption and the storage class; every request carries the
//! payer and the expected owner (GetBucketLocation takes only the owner).
//!
//! [`AwsStore`]: super::aws::AwsStore

use aws_sdk_s3::types::{RequestPayer, ServerSideEncryption, StorageClass};

/// See the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestOptions {
    pub sse: Option<ServerSideEncryption>,
    /// The KMS key for `aws:kms` and `aws:kms:dsse` (default: the account's S3 key).
    pub sse_kms_key_id: Option<String>,
    /// S3 Bucket Keys for SSE-KMS (fewer KMS calls).
    pub bucket_key: bool,
    pub storage_class: Option<StorageClass>,
    pub requester_pays: bool,
    pub expected_bucket_owner: Option<String>,
    /// SSE-C: the key every object's data is encrypted with (see `customer_key`).
    pub sse_c: Option<super::customer_key::CustomerKey>,
    /// The checksum of every PUT and part (see `checksums`); `None`: the payload hash alone.
    pub checksum: Option<aws_sdk_s3::types::ChecksumAlgorithm>,
}

impl RequestOptions {
    /// Checks the combination and parses the names the user gave.
    pub fn new(
        sse: Option<&str>,
        sse_kms_key_id: Option<&str>,
        bucket_key: bool,
        storage_class: Option<&str>,
    ) -> Result<RequestOptions, String> {
        let sse = match sse {
            None => None,
            Some(s @ ("AES256" | "aws:kms" | "aws:kms:dsse")) => {
                Some(ServerSideEncryption::from(s))
            }
            Some(s) => {
                return Err(format!(
                    "--sse {s:?} is not AES256, aws:kms or aws:kms:dsse"
                ));
            }
        };
        let kms = matches!(
            sse,
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        );
        if sse_kms_key_id.is_some() && !kms {
            return Err("--sse-kms-key-id needs --sse aws:kms or --sse aws:kms:dsse".into());
        }
        if bucket_key && !kms {
            return Err("--bucket-key needs --sse aws:kms".into());
        }
        let storage_class = match storage_class {
            None => None,
            Some(c) if StorageClass::values().contains(&c) => Some(StorageClass::from(c)),
            Some(c) => {
                return Err(format!(
                    "--storage-class {c:?} is not one of {}",
                    StorageClass::values().join(", ")
                ));
            }
        };
        Ok(RequestOptions {
            sse,
            sse_kms_key_id: sse_kms_key_id.map(str::to_string),
            bucket_key,
            storage_class,
            requester_pays: false,
            expected_bucket_owner: None,
            sse_c: None,
            checksum: None,
        })
    }

    /// The `x-amz-request-payer` value, when the requester pays.
    pub fn payer(&self) -> Option<RequestPayer> {
        self.requester_pays.then_some(RequestPayer::Requester)
    }

    /// `Some(true)` with SSE-KMS Bucket Keys, else unset.
    pub fn bucket_key_enabled(&self) -> Option<bool> {
        self.bucket_key.then_some(true)
    }
}

/// Adds the payer and the expected owner to any request builder.
#[macro_export]
macro_rules! paid {
    ($req:expr, $o:expr) => {
        $req.set_request_payer($o.payer())
            .set_expected_bucket_owner($o.expected_bucket_owner.clone())
    };
}

/// Adds encryption (SSE-C included), storage class, payer and expected owner to a request
/// that stores an object (PUT, CreateMultipartUpload, CopyObject). The checksum is added where
/// the data goes (PUT, CreateMultipartUpload, UploadPart), not to copies.
#[macro_export]
macro_rules! stored {
    ($req:expr, $o:expr) => {
        $crate::customer_key!($crate::paid!($req, $o), $o)
            .set_server_side_encryption($o.sse.clone())
            .set_ssekms_key_id($o.sse_kms_key_id.clone())
            .set_bucket_key_enabled($o.bucket_key_enabled())
            .set_storage_class($o.storage_class.clone())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_checked_and_names_parsed() {
        let o = RequestOptions::new(Some("aws:kms"), Some("alias/k"), true, Some("STANDARD_IA"))
            .unwrap();
        assert_eq!(o.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(o.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(o.bucket_key_enabled(), Some(true));
        assert!(RequestOptions::new(Some("rot13"), None, false, None).is_err());
        assert!(RequestOptions::new(Some("AES256"), Some("k"), false, None).is_err());
        assert!(RequestOptions::new(None, None, true, None).is_err());
        let e = RequestOptions::new(None, None, false, Some("CHEAP")).unwrap_err();
        assert!(e.contains("GLACIER"), "{e}");
    }
}
