//! Private local files: the cache directory, spool files, kept and recovered data, the disk
//! block cache, upload journals, the lock file, the log file and the statistics socket hold
//! what users write and read through the mount, so no other local user may read them.
//!
//! Directories are created 0700 and files 0600 (and a mount runs with umask 077, so anything
//! else it creates is private too), never widened by `chmod` after. A directory that already
//! exists is checked before use: it must be a real directory (not a symlink) owned by this
//! user; one that others can read or write is made private again, with a notice. Names on
//! disk derived from a hash use SHA-256, which does not change between Rust releases (the
//! standard library's hasher may, which would orphan a cache and skip crash recovery).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Creates `dir` (and missing parents) private, or checks an existing one: a directory, not a
/// symlink, owned by this user. Returns a notice when it had to take others' access away.
pub fn private_dir(dir: &Path) -> Result<Option<String>, String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    check_dir(dir)
}

/// Checks that `dir` is a private directory of this user (see [`private_dir`]).
pub fn check_dir(dir: &Path) -> Result<Option<String>, String> {
    let m =
        std::fs::symlink_metadata(dir).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    if m.file_type().is_symlink() || !m.is_dir() {
        return Err(format!(
            "{} is not a directory (a symlink or a file is in its place); remove it or choose another with --cache-dir",
            dir.display()
        ));
    }
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to this user (uid {me}); choose another with --cache-dir",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    Ok(Some(format!(
        "{} was readable or writable by other users (mode {:o}); it is now private (0700)",
        dir.display(),
        m.mode() & 0o777
    )))
}

/// Opens `path` for appending, creating it 0600; a symlink in its place is refused.
pub fn append_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens (creating 0600) `path` for reading and writing without truncating it; a symlink in
/// its place is refused.
pub fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates `path` 0600 (replacing a file of that name; a symlink in its place is refused).
pub fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A directory of this user's own for pailfs when no home or XDG directory is known:
/// `/tmp/pailfs-UID/NAME`, never a shared, predictable path another user could prepare.
pub fn fallback_dir(name: &str) -> PathBuf {
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir()
        .join(format!("pailfs-{uid}"))
        .join(name)
}

/// A short name from `parts`, stable across builds and releases.
pub fn stable_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes everything this process creates private from here on.
pub fn private_umask() {
    unsafe { libc::umask(0o077) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_directories_and_files_are_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        assert_eq!(private_dir(&d).unwrap(), None);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let f = d.join("f");
        create_file(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn an_open_directory_is_made_private_with_a_notice() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let notice = private_dir(t.path()).unwrap().unwrap();
        assert!(notice.contains("0700"), "{notice}");
        assert_eq!(std::fs::metadata(t.path()).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn symlinks_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("l");
        std::os::unix::fs::symlink(t.path(), &link).unwrap();
        assert!(private_dir(&link).unwrap_err().contains("not a directory"));
        let flink = t.path().join("fl");
        std::os::unix::fs::symlink("/etc/passwd", &flink).unwrap();
        assert!(append_file(&flink).is_err());
    }

    #[test]
    fn fallbacks_are_per_user() {
        let uid = unsafe { libc::geteuid() };
        let d = fallback_dir("cache");
        assert!(
            d.ends_with(format!("pailfs-{uid}/cache")),
            "{}",
            d.display()
        );
    }

    #[test]
    fn stable_hashes_do_not_change() {
        assert_eq!(
            stable_hash(&[b"bucket", b"prefix/"]),
            stable_hash(&[b"bucket", b"prefix/"])
        );
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        // A fixed value: a change of algorithm would orphan every cache directory.
        assert_eq!(stable_hash(&[b"pailfs"]), "2136f733ef8a30d4");
    }
}
