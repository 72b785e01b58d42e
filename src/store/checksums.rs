//! Upload checksums (`--upload-checksums`): a CRC32C (or CRC64NVME, or SHA-256) of every PUT
//! and part, which S3 checks before it stores the bytes and keeps with the object.
//!
//! Without one, the integrity of an upload rests on the SigV4 payload hash: a SHA-256 pass over
//! every byte, the largest CPU cost of writing. With one, where nothing can alter the bytes on
//! the way (HTTPS, or a loopback address), the payload is sent unsigned
//! (`x-amz-content-sha256: UNSIGNED-PAYLOAD`) and the checksum, in a signed header, is what S3
//! checks: CRC32C costs a small fraction of SHA-256 per byte (the bench shows the CPU). Over
//! plain HTTP to another host the payload stays signed as well, since a CRC does not stop a
//! deliberate change. The SDK computes the checksums; this file only chooses them and carries a
//! part's checksum from UploadPart to CompleteMultipartUpload, which needs it for every part.
//!
//! Servers differ: the mount finds out once, at start, whether the server checks and keeps the
//! chosen checksum (a part uploaded to a multipart upload created and aborted for it, as the
//! write probe does), and falls back to the payload hash with a notice when it does not.

use aws_sdk_s3::types::ChecksumAlgorithm;

/// `--upload-checksums`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum UploadChecksums {
    #[default]
    Crc32c,
    Crc64nvme,
    Sha256,
    /// No checksum: the SigV4 payload hash alone.
    Off,
}

impl UploadChecksums {
    pub fn algorithm(self) -> Option<ChecksumAlgorithm> {
        match self {
            UploadChecksums::Crc32c => Some(ChecksumAlgorithm::Crc32C),
            UploadChecksums::Crc64nvme => Some(ChecksumAlgorithm::Crc64Nvme),
            UploadChecksums::Sha256 => Some(ChecksumAlgorithm::Sha256),
            UploadChecksums::Off => None,
        }
    }
}

/// Whether an upload to `endpoint` (`None`: AWS, always HTTPS) may go with an unsigned payload
/// beside its checksum: nobody can change the bytes on the way.
pub fn unsigned_payload_safe(endpoint: Option<&str>) -> bool {
    let Some(e) = endpoint else { return true };
    if e.starts_with("https://") {
        return true;
    }
    let host = super::client::endpoint_host(e);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A part's receipt: what CompleteMultipartUpload needs for it, its ETag and, when the upload
/// carries checksums, its checksum. Opaque to the callers of the store (a newline cannot occur
/// in an ETag or a base64 checksum).
pub fn receipt(etag: &str, checksum: Option<&str>) -> String {
    match checksum {
        Some(c) => format!("{etag}\n{c}"),
        None => etag.to_string(),
    }
}

/// The ETag and checksum of a receipt.
pub fn parse_receipt(r: &str) -> (&str, Option<&str>) {
    match r.split_once('\n') {
        Some((etag, c)) => (etag, Some(c)),
        None => (r, None),
    }
}

/// The checksum of `algorithm` among the ones a response carries.
pub fn pick<'a>(
    algorithm: &ChecksumAlgorithm,
    crc32c: Option<&'a str>,
    crc64nvme: Option<&'a str>,
    sha256: Option<&'a str>,
) -> Option<&'a str> {
    match algorithm {
        ChecksumAlgorithm::Crc32C => crc32c,
        ChecksumAlgorithm::Crc64Nvme => crc64nvme,
        ChecksumAlgorithm::Sha256 => sha256,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_only_where_the_bytes_cannot_be_changed_on_the_way() {
        assert!(unsigned_payload_safe(None));
        assert!(unsigned_payload_safe(Some("https://s3.example.org")));
        assert!(unsigned_payload_safe(Some("http://127.0.0.1:3900")));
        assert!(unsigned_payload_safe(Some("http://localhost:9000/")));
        assert!(unsigned_payload_safe(Some("http://[::1]:9000")));
        assert!(!unsigned_payload_safe(Some("http://10.0.0.5:9000")));
        assert!(!unsigned_payload_safe(Some("http://minio.lan")));
    }

    #[test]
    fn receipts_carry_the_checksum_beside_the_etag() {
        assert_eq!(parse_receipt("\"e\""), ("\"e\"", None));
        let r = receipt("\"e\"", Some("AAAAAA=="));
        assert_eq!(parse_receipt(&r), ("\"e\"", Some("AAAAAA==")));
    }
}
