//! SSE-C: objects encrypted with a key the user keeps, which S3 never stores.
//!
//! With `--sse-c-key-file`, every request that writes or reads an object's data carries the
//! key (PUT, multipart upload, its parts and its completion, GET, HEAD), and copies carry it
//! twice: for the source and for the new object. S3 keeps only a salted HMAC of the key, so an object written
//! with one key cannot be read with another or without one: such a read is refused by S3, and
//! pailfs says which object and why (`StoreError::EncryptionKey`). The key file holds the
//! 32-byte AES-256 key, raw (as `aws s3 cp --sse-c-key fileb://KEY` takes it) or base64, and
//! must be private to its owner, like every file holding a secret here. s3fs's key files
//! (`-o use_sse=custom:FILE`) hold one key per line: the first is the one used.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};

use crate::error::CliError;

/// An SSE-C key in the form the headers carry it. `Debug` never prints the key.
#[derive(Clone, PartialEq)]
pub struct CustomerKey {
    /// `x-amz-server-side-encryption-customer-key`: the key, base64.
    pub key_b64: String,
    /// `x-amz-server-side-encryption-customer-key-MD5`: the key's MD5, base64, which S3 uses
    /// to check the key arrived intact.
    pub md5_b64: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(md5 {})", self.md5_b64)
    }
}

/// The only algorithm SSE-C has.
pub const ALGORITHM: &str = "AES256";

impl CustomerKey {
    /// The key from 32 raw bytes.
    pub fn from_bytes(key: &[u8]) -> Result<CustomerKey, String> {
        if key.len() != 32 {
            return Err(format!(
                "an SSE-C key is 32 bytes (AES-256), raw or base64; this one is {} bytes",
                key.len()
            ));
        }
        Ok(CustomerKey {
            key_b64: STANDARD.encode(key),
            md5_b64: STANDARD.encode(Md5::digest(key)),
        })
    }

    /// Reads the key file: private to its owner, 32 raw bytes, or lines of which the first is
    /// the key, raw (32 characters) or base64.
    pub fn from_file(path: &Path) -> Result<CustomerKey, CliError> {
        crate::connections::file::check_private(path)?;
        let data = std::fs::read(path)
            .map_err(|e| CliError::failed(format!("cannot read {}", path.display()), e))?;
        let first = std::str::from_utf8(&data)
            .ok()
            .and_then(|t| t.lines().next())
            .map(str::trim);
        let raw = match first {
            _ if data.len() == 32 => data,
            Some(line) if line.len() == 32 => line.as_bytes().to_vec(),
            Some(line) => STANDARD.decode(line).unwrap_or(data),
            None => data,
        };
        Self::from_bytes(&raw).map_err(|e| {
            CliError::Invalid(format!(
                "--sse-c-key-file {}: {e}; make one with: head -c 32 /dev/urandom > KEY && chmod 600 KEY",
                path.display()
            ))
        })
    }
}

/// Adds the SSE-C key to a request that writes or reads an object's data.
#[macro_export]
macro_rules! customer_key {
    ($req:expr, $o:expr) => {{
        let k = $o.sse_c.as_ref();
        $req.set_sse_customer_algorithm(
            k.map(|_| $crate::store::customer_key::ALGORITHM.to_string()),
        )
        .set_sse_customer_key(k.map(|k| k.key_b64.clone()))
        .set_sse_customer_key_md5(k.map(|k| k.md5_b64.clone()))
    }};
}

/// Adds the SSE-C key of a copy's source (CopyObject, UploadPartCopy).
#[macro_export]
macro_rules! copy_source_key {
    ($req:expr, $o:expr) => {{
        let k = $o.sse_c.as_ref();
        $req.set_copy_source_sse_customer_algorithm(
            k.map(|_| $crate::store::customer_key::ALGORITHM.to_string()),
        )
        .set_copy_source_sse_customer_key(k.map(|k| k.key_b64.clone()))
        .set_copy_source_sse_customer_key_md5(k.map(|k| k.md5_b64.clone()))
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_32_bytes_raw_or_base64_and_never_printed() {
        let k = CustomerKey::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(k.key_b64, STANDARD.encode([7u8; 32]));
        assert_eq!(STANDARD.decode(&k.md5_b64).unwrap().len(), 16);
        assert!(!format!("{k:?}").contains(&k.key_b64));
        assert!(CustomerKey::from_bytes(&[1u8; 16]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let b64 = dir.path().join("b64");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        // s3fs's form: one key per line, the first used.
        std::fs::write(
            &b64,
            format!("{}\nsecond-key\n", STANDARD.encode([7u8; 32])),
        )
        .unwrap();
        for p in [&raw, &b64] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(CustomerKey::from_file(p).unwrap(), k, "{}", p.display());
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            CustomerKey::from_file(&raw).is_err(),
            "a key others can read"
        );
    }
}
