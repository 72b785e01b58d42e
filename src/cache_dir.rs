//! The layout of a mount's directory in the cache, written down once.
//!
//! Each mount has its own directory under the cache root (`--cache-dir`), named from a stable
//! hash of what is mounted where, so a remount of the same bucket, prefix and mountpoint finds
//! what the last one left: the spool of files being written, the journal of open multipart
//! uploads, files rebuilt after a crash, files whose upload failed, and the on-disk block
//! cache. `run` locks it, the core writes into it, `doctor` reads it: they all ask this type
//! for the paths instead of spelling them.

use std::path::{Path, PathBuf};

/// One mount's directory in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountDir {
    root: PathBuf,
}

/// What a mount's directory is named for.
pub struct Identity<'a> {
    pub endpoint: &'a str,
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub mountpoint: &'a Path,
}

impl MountDir {
    /// The directory at `root` (tests, `doctor`).
    pub fn at(root: impl Into<PathBuf>) -> MountDir {
        MountDir { root: root.into() }
    }

    /// The directory of the mount `id` under `cache_root`: `BUCKET-HASH`.
    pub fn of(cache_root: &Path, id: &Identity) -> MountDir {
        let hash = crate::private::stable_hash(&[
            id.endpoint.as_bytes(),
            id.bucket.as_bytes(),
            id.prefix.as_bytes(),
            id.mountpoint.as_os_str().as_encoded_bytes(),
        ]);
        MountDir::at(cache_root.join(format!("{}-{hash}", id.bucket)))
    }

    /// The name versions before 0.2 gave the directory (the standard hasher), taken over by
    /// `run` so their crash-recovery data is not skipped.
    pub fn legacy(cache_root: &Path, id: &Identity) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let endpoint = (!id.endpoint.is_empty()).then_some(id.endpoint);
        endpoint.map(str::to_string).hash(&mut h);
        id.bucket.hash(&mut h);
        id.prefix.hash(&mut h);
        id.mountpoint.to_path_buf().hash(&mut h);
        cache_root.join(format!("{}-{:016x}", id.bucket, h.finish()))
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The lock file: one process per directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Spool files of open files, with their change logs.
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Data of files whose upload failed for good.
    pub fn failed(&self) -> PathBuf {
        self.spool().join("failed")
    }

    /// The journal of multipart uploads not completed or aborted yet.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Files rebuilt from the spool of a process that died.
    pub fn recovered(&self) -> PathBuf {
        self.root.join("recovered")
    }

    /// The on-disk block cache (`--disk-cache-size`).
    pub fn blocks(&self) -> PathBuf {
        self.root.join("blocks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_differ_by_what_is_mounted() {
        let id = |mp: &'static str| Identity {
            endpoint: "http://127.0.0.1:3900",
            bucket: "bkt",
            prefix: "p/",
            mountpoint: Path::new(mp),
        };
        let root = Path::new("/c");
        assert_eq!(MountDir::of(root, &id("/m")), MountDir::of(root, &id("/m")));
        assert_ne!(MountDir::of(root, &id("/m")), MountDir::of(root, &id("/n")));
        let d = MountDir::of(root, &id("/m"));
        assert!(d.path().to_str().unwrap().starts_with("/c/bkt-"), "{d:?}");
        assert_eq!(d.failed(), d.path().join("spool/failed"));
    }
}
