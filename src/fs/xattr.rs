//! Extended attributes, stored in object metadata as s3fs stores them.
//!
//! All of a file's attributes live in one header, `x-amz-meta-xattr`: a JSON object mapping
//! each name to its base64 value, percent-encoded (`{"user.a":"YmFy"}` is sent as
//! `%7B%22user.a%22%3A%22YmFy%22%7D`), so buckets written by s3fs with `-o use_xattr` read the
//! same here. The `user.`, `trusted.` and `security.` namespaces are stored (the kernel lets
//! only privileged callers near `trusted.` and `security.capability`, and a file capability
//! does nothing on this `nosuid` mount); `system.` names are what the kernel itself interprets
//! (ACLs), which a bucket cannot enforce: they answer `ENOTSUP`, which the kernel and
//! `ls`/`cp` treat as "no such attributes", and are not listed if another tool stored them.
//! So does `security.selinux`, a label of the host's own policy that means nothing on another
//! host: `ls -l` asks for it on every entry, and answering from the object's metadata cost a
//! HEAD per entry where the listing alone would do (`--fast-listing`); `ENOTSUP` is
//! remembered by `ls` for the whole mount.
//! S3 limits user metadata to 2 KiB per object, so larger sets fail with `E2BIG`.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::Fs;
use super::error::{AttrError, FsError, FsResult, NsError};
use super::inode::Ino;
use crate::store::{ObjectStore, UserMeta};

pub const META_XATTR: &str = "xattr";

/// What s3fs's `urlEncodePath` leaves alone.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

const XATTR_CREATE: i32 = libc::XATTR_CREATE;
const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

/// The attributes stored in `meta`; an unreadable header counts as none (and is logged).
pub fn decode(meta: &UserMeta) -> BTreeMap<String, Vec<u8>> {
    let Some(raw) = meta.get(META_XATTR) else {
        return BTreeMap::new();
    };
    let json = percent_decode_str(raw).decode_utf8_lossy();
    let parsed: Result<BTreeMap<String, String>, _> = serde_json::from_str(&json);
    match parsed {
        Ok(m) => m
            .into_iter()
            .filter_map(|(k, v)| STANDARD.decode(v).ok().map(|b| (k, b)))
            .collect(),
        Err(e) => {
            log::warn!("ignoring an unreadable x-amz-meta-xattr header: {e}");
            BTreeMap::new()
        }
    }
}

/// Stores `attrs` in `meta` (removing the header when there are none).
pub fn encode(meta: &mut UserMeta, attrs: &BTreeMap<String, Vec<u8>>) {
    if attrs.is_empty() {
        meta.remove(META_XATTR);
        return;
    }
    let m: BTreeMap<&str, String> = attrs
        .iter()
        .map(|(k, v)| (k.as_str(), STANDARD.encode(v)))
        .collect();
    let json = serde_json::to_string(&m).unwrap_or_else(|_| "{}".into());
    meta.insert(
        META_XATTR.into(),
        utf8_percent_encode(&json, KEEP).to_string(),
    );
}

/// The namespaces stored.
const STORED_NAMESPACES: [&str; 3] = ["user.", "trusted.", "security."];

/// Names of a stored namespace that are not stored (see the module's comment).
const NOT_STORED: [&str; 1] = ["security.selinux"];

fn is_stored(name: &str) -> bool {
    STORED_NAMESPACES.iter().any(|ns| name.starts_with(ns)) && !NOT_STORED.contains(&name)
}

fn stored_name(name: &OsStr) -> FsResult<String> {
    let n = name.to_str().ok_or(NsError::NotUtf8("attribute names"))?;
    if !is_stored(n) {
        return Err(AttrError::UnstoredNamespace(n.to_string()).into());
    }
    Ok(n.to_string())
}

impl<S: ObjectStore> Fs<S> {
    async fn current_xattrs(&self, ino: Ino) -> FsResult<BTreeMap<String, Vec<u8>>> {
        let ino = self.ns.canon(ino);
        self.ensure_meta(ino).await?;
        let i = self.ns.get(ino).ok_or_else(FsError::not_found)?;
        let meta = match &i.open {
            Some(of) => of.lock().foreign_meta.clone(),
            None => i.user_meta.clone().unwrap_or_default(),
        };
        Ok(decode(&meta))
    }

    pub async fn getxattr(&self, ino: Ino, name: &OsStr) -> FsResult<Vec<u8>> {
        let name = stored_name(name)?;
        self.current_xattrs(ino)
            .await?
            .remove(&name)
            .ok_or_else(|| AttrError::NoSuchAttribute.into())
    }

    /// Names, each followed by a NUL, as `listxattr(2)` returns them.
    pub async fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        for k in self
            .current_xattrs(ino)
            .await?
            .keys()
            .filter(|k| is_stored(k))
        {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub async fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let name = stored_name(name)?;
        let value = value.to_vec();
        let _fence = self.ns.shared().await;
        self.modify_meta(ino, |_, meta| {
            let mut attrs = decode(meta);
            let exists = attrs.contains_key(&name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(AttrError::Exists.into());
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(AttrError::NoSuchAttribute.into());
            }
            attrs.insert(name.clone(), value.clone());
            encode(meta, &attrs);
            Ok(())
        })
        .await
    }

    pub async fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        let name = stored_name(name)?;
        let _fence = self.ns.shared().await;
        self.modify_meta(ino, |_, meta| {
            let mut attrs = decode(meta);
            if attrs.remove(&name).is_none() {
                return Err(AttrError::NoSuchAttribute.into());
            }
            encode(meta, &attrs);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3fs_encoding_round_trips() {
        let mut meta = UserMeta::new();
        let mut attrs = BTreeMap::new();
        attrs.insert("user.foo".to_string(), b"bar".to_vec());
        encode(&mut meta, &attrs);
        assert_eq!(meta["xattr"], "%7B%22user.foo%22%3A%22YmFy%22%7D");
        assert_eq!(decode(&meta), attrs);
        encode(&mut meta, &BTreeMap::new());
        assert!(!meta.contains_key("xattr"));
    }

    #[test]
    fn reads_what_s3fs_wrote() {
        let mut meta = UserMeta::new();
        meta.insert("xattr".into(), "%7B%22key%22%3A%22dmFsdWU%3D%22%7D".into());
        assert_eq!(decode(&meta)["key"], b"value");
        meta.insert("xattr".into(), "not json".into());
        assert!(decode(&meta).is_empty());
    }

    #[test]
    fn system_names_are_not_stored() {
        assert_eq!(
            stored_name(OsStr::new("system.posix_acl_access"))
                .unwrap_err()
                .errno(),
            libc::ENOTSUP
        );
        for n in ["user.x", "trusted.overlay.opaque", "security.capability"] {
            assert!(stored_name(OsStr::new(n)).is_ok(), "{n}");
        }
        assert_eq!(
            stored_name(OsStr::new("security.selinux"))
                .unwrap_err()
                .errno(),
            libc::ENOTSUP
        );
    }
}
